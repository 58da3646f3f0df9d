// A model directory's tokenizer and chat template together: text or a conversation in, prompt ids out —
// what `deepserve generate/tokenize` and the server's routes share.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace ds {

class PromptEncoder {
 public:
  // tokenizer.json (+ tokenizer_config.json) from dir; the chat template when the directory has one.
  // Throws UserError when dir has no tokenizer.json.
  static PromptEncoder from_model_dir(const std::filesystem::path& dir);

  [[nodiscard]] const tokenizer::Tokenizer& tokenizer() const { return tokenizer_; }
  [[nodiscard]] bool has_chat_template() const { return chat_template_.has_value(); }

  [[nodiscard]] std::vector<int32_t> encode_text(std::string_view text, bool add_special_tokens = true) const;
  // Renders as apply_chat_template(tokenize=False) does; UserError when there is no template.
  [[nodiscard]] std::string render_chat(const ChatTemplateInputs& inputs) const;
  // Renders with `template_source` (a client's chat_template) in place of the model's template, with the
  // model's special tokens; the sandbox and its limits are the same, and a render may use at most
  // kClientTemplateCpuSeconds of CPU time. Throws jinja::TemplateError naming the line and column.
  static constexpr double kClientTemplateCpuSeconds = 1.0;
  [[nodiscard]] std::string render_chat_with(std::string_view template_source,
                                             const ChatTemplateInputs& inputs) const;
  // apply_chat_template(tokenize=True): the rendered text encoded without adding special tokens (a template
  // that wants BOS prints it).
  [[nodiscard]] std::vector<int32_t> encode_chat(const ChatTemplateInputs& inputs) const;

  // A conversation file: a JSON list of messages, or an object {"messages": [...], "tools": [...],
  // "add_generation_prompt": bool, "chat_template_kwargs": {...}}. Throws UserError naming the problem.
  [[nodiscard]] static ChatTemplateInputs read_chat_file(const std::filesystem::path& path);

 private:
  PromptEncoder(tokenizer::Tokenizer tokenizer, std::optional<ChatTemplate> chat_template)
      : tokenizer_(std::move(tokenizer)), chat_template_(std::move(chat_template)) {}

  tokenizer::Tokenizer tokenizer_;
  std::optional<ChatTemplate> chat_template_;
};

}  // namespace ds
