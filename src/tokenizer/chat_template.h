// A model's chat template, loaded as transformers loads it and rendered as
// tokenizer.apply_chat_template(messages, tools=..., add_generation_prompt=..., tokenize=False, **kwargs)
// renders it.
//
// Sources, in transformers' order of precedence:
//   <dir>/chat_template.jinja (+ <dir>/additional_chat_templates/<name>.jinja)   transformers >= 4.50
//   tokenizer_config.json "chat_template": a string, or a list [{"name": ..., "template": ...}]
//   <dir>/chat_template.json {"chat_template": ...}                             older processors
// Special tokens (bos_token, eos_token, unk_token, pad_token, ...) are read as strings or as AddedToken
// objects {"content": ...} and passed to the template, as special_tokens_map is by transformers.
//
// The template sees: messages, tools (None when absent), documents (None when absent),
// add_generation_prompt, the special tokens, then the extra kwargs (which override special tokens).
// add_bos_token is exposed for the tokenizer: apply_chat_template tokenizes its text with
// add_special_tokens=False, so a template that prints bos_token must not get a second BOS.
#pragma once

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/jinja/template.h"
#include "util/check.h"

namespace ds {

// A tokenizer_config.json / chat template that cannot be used: no template, a malformed one, an unknown
// template name. Rendering errors are jinja::TemplateError (also UserErrors).
class ChatTemplateError : public UserError {
 public:
  using UserError::UserError;
};

struct ChatTemplateInputs {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  bool add_generation_prompt = false;
  nlohmann::ordered_json tools;                                      // null: the template sees tools=None
  nlohmann::ordered_json documents;                                  // null: the template sees documents=None
  nlohmann::ordered_json kwargs = nlohmann::ordered_json::object();  // e.g. {"thinking": true}
};

class ChatTemplate {
 public:
  // `config` is the parsed tokenizer_config.json. Throws ChatTemplateError, jinja::TemplateSyntaxError.
  static ChatTemplate from_tokenizer_config(const nlohmann::ordered_json& config,
                                            jinja::TemplateOptions options = {});
  // Reads a tokenizer_config.json file.
  static ChatTemplate from_tokenizer_config_file(const std::filesystem::path& path,
                                                 jinja::TemplateOptions options = {});
  // Reads a model directory (see the sources above).
  static ChatTemplate from_model_dir(const std::filesystem::path& dir, jinja::TemplateOptions options = {});
  // One template given directly; `special_tokens` is an object like {"bos_token": "<s>"} (AddedToken
  // objects allowed).
  ChatTemplate(std::string source, const nlohmann::ordered_json& special_tokens,
               jinja::TemplateOptions options = {});

  // Renders the conversation. template_name picks a named template; empty picks as transformers does:
  // "tool_use" when tools are given and it exists, else "default", else the only template.
  // Throws jinja::TemplateError (rendering) and ChatTemplateError (unknown name, bad kwargs).
  [[nodiscard]] std::string apply(const ChatTemplateInputs& inputs,
                                  std::string_view template_name = {}) const;

  [[nodiscard]] std::vector<std::string> template_names() const;
  [[nodiscard]] bool has_template(std::string_view name) const;
  // The source of the template apply() would use for these inputs.
  [[nodiscard]] const std::string& source(std::string_view template_name = {}, bool with_tools = false) const;
  [[nodiscard]] const std::optional<std::string>& bos_token() const { return bos_token_; }
  [[nodiscard]] const std::optional<std::string>& eos_token() const { return eos_token_; }
  [[nodiscard]] bool add_bos_token() const { return add_bos_token_; }
  // What transformers' special_tokens_map holds: the variables every template gets.
  [[nodiscard]] const nlohmann::ordered_json& special_tokens() const { return special_tokens_; }

 private:
  struct NamedTemplate {
    std::string name;
    std::string source;
    std::shared_ptr<const jinja::Template> compiled;
  };

  ChatTemplate() = default;
  void add_template(std::string name, std::string source, const jinja::TemplateOptions& options);
  void set_special_tokens(const nlohmann::ordered_json& config);
  [[nodiscard]] const NamedTemplate& select(std::string_view template_name, bool with_tools) const;

  std::vector<NamedTemplate> templates_;
  bool single_ = false;  // one unnamed template (the string form)
  nlohmann::ordered_json special_tokens_ = nlohmann::ordered_json::object();
  std::optional<std::string> bos_token_;
  std::optional<std::string> eos_token_;
  bool add_bos_token_ = false;
};

}  // namespace ds
