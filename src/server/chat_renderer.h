// The chat route's renderer over a model directory's PromptEncoder (tokenizer + ChatTemplate).
#pragma once

#include "server/api_context.h"
#include "tokenizer/prompt.h"

namespace ds::server {

// Empty when the encoder has no chat template (the chat route then answers 400). A request's own
// chat_template (ChatRenderInput::chat_template, --allow-client-chat-template) is compiled and rendered in
// the same sandbox, with the model's special tokens. continue_final_message is
// done as transformers does it: render without a generation prompt, then cut the text right after the last
// message's content, so the model continues that message. The encoder must outlive the renderer.
[[nodiscard]] ChatRenderer make_chat_renderer(const PromptEncoder& encoder);

}  // namespace ds::server
