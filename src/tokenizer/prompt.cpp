#include "tokenizer/prompt.h"

#include <fstream>

#include "util/check.h"

namespace ds {
namespace {

std::vector<int32_t> to_ids(const std::vector<tokenizer::TokenId>& ids) { return {ids.begin(), ids.end()}; }

}  // namespace

PromptEncoder PromptEncoder::from_model_dir(const std::filesystem::path& dir) {
  DS_REQUIRE(std::filesystem::exists(dir / "tokenizer.json"), UserError,
             "{} has no tokenizer.json: text prompts need the model's tokenizer (give token ids instead)",
             dir.string());
  tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_dir(dir);
  std::optional<ChatTemplate> tmpl;
  try {
    tmpl = ChatTemplate::from_model_dir(dir);
  } catch (const ChatTemplateError&) {
    // No chat template: text prompts still work; chat requests get a clear error from render_chat.
  }
  return PromptEncoder(std::move(tok), std::move(tmpl));
}

std::vector<int32_t> PromptEncoder::encode_text(std::string_view text, bool add_special_tokens) const {
  return to_ids(tokenizer_.encode(text, add_special_tokens));
}

std::string PromptEncoder::render_chat(const ChatTemplateInputs& inputs) const {
  DS_REQUIRE(chat_template_.has_value(), UserError,
             "this model has no chat template (tokenizer_config.json chat_template); send a plain prompt");
  return chat_template_->apply(inputs);
}

std::string PromptEncoder::render_chat_with(std::string_view template_source,
                                            const ChatTemplateInputs& inputs) const {
  jinja::TemplateOptions options;
  options.limits.max_cpu_seconds = kClientTemplateCpuSeconds;
  const ChatTemplate client(
      std::string(template_source),
      chat_template_ ? chat_template_->special_tokens() : nlohmann::ordered_json::object(), options);
  return client.apply(inputs);
}

std::vector<int32_t> PromptEncoder::encode_chat(const ChatTemplateInputs& inputs) const {
  return to_ids(tokenizer_.encode(render_chat(inputs), false));
}

ChatTemplateInputs PromptEncoder::read_chat_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  DS_REQUIRE(in.good(), UserError, "cannot open {}", path.string());
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw UserError(fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
  }
  ChatTemplateInputs inputs;
  if (j.is_array()) {
    inputs.messages = j;
  } else {
    DS_REQUIRE(j.is_object() && j.contains("messages") && j["messages"].is_array(), UserError,
               "{}: expected a list of messages or an object with \"messages\"", path.string());
    inputs.messages = j["messages"];
    if (j.contains("tools")) inputs.tools = j["tools"];
    if (j.contains("add_generation_prompt")) {
      DS_REQUIRE(j["add_generation_prompt"].is_boolean(), UserError, "{}: add_generation_prompt must be a boolean",
                 path.string());
      inputs.add_generation_prompt = j["add_generation_prompt"].get<bool>();
    }
    if (j.contains("chat_template_kwargs")) {
      DS_REQUIRE(j["chat_template_kwargs"].is_object(), UserError, "{}: chat_template_kwargs must be an object",
                 path.string());
      inputs.kwargs = j["chat_template_kwargs"];
    }
  }
  for (const auto& m : inputs.messages) {
    DS_REQUIRE(m.is_object() && m.contains("role") && m["role"].is_string(), UserError,
               "{}: every message needs a string \"role\"", path.string());
  }
  return inputs;
}

}  // namespace ds
