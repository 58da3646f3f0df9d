#include "server/chat_renderer.h"

#include "server/errors.h"

namespace ds::server {

ChatRenderer make_chat_renderer(const PromptEncoder& encoder) {
  if (!encoder.has_chat_template()) return {};
  return [&encoder](const ChatRenderInput& in) {
    ChatTemplateInputs inputs;
    inputs.messages = in.messages;
    inputs.tools = in.tools;
    inputs.add_generation_prompt = in.add_generation_prompt && !in.continue_final_message;
    inputs.kwargs = in.chat_template_kwargs;
    std::string text =
        in.chat_template ? encoder.render_chat_with(*in.chat_template, inputs) : encoder.render_chat(inputs);
    if (!in.continue_final_message) return text;
    const auto& last = in.messages.back();
    const std::string content = last["content"].is_string() ? last["content"].get<std::string>() : "";
    const size_t at = content.empty() ? std::string::npos : text.rfind(content);
    if (at == std::string::npos) {
      throw bad_request(
          "continue_final_message: the final message's content does not appear in the rendered prompt",
          "continue_final_message");
    }
    text.resize(at + content.size());
    return text;
  };
}

}  // namespace ds::server
