// POST /tokenize and POST /detokenize, in vLLM's request and response shapes.
#include <nlohmann/json.hpp>

#include "engine/request_params.h"
#include "server/api_context.h"
#include "server/request_fields.h"

namespace ds::server {

void handle_tokenize(ApiContext& api, const std::shared_ptr<Exchange>& exchange) {
  const nlohmann::json body = parse_body(exchange->request().body);
  (void)api.resolve_model(body);
  const tokenizer::Tokenizer& tok = api.require_tokenizer("/tokenize");
  const bool return_token_strs = optional_bool(body, "return_token_strs", false);
  std::vector<int32_t> ids;
  if (body.contains("messages")) {
    // As vLLM: the chat template, then no special tokens of the tokenizer's own by default.
    if (!api.chat_renderer) throw bad_request("this model has no chat template", "messages");
    ChatRenderInput render;
    render.messages = parse_messages(body);
    render.add_generation_prompt = optional_bool(body, "add_generation_prompt", true);
    render.continue_final_message = optional_bool(body, "continue_final_message", false);
    api.read_client_chat_template(body, render);
    if (const auto it = body.find("tools"); it != body.end() && !it->is_null()) {
      if (!it->is_array()) throw bad_request("'tools' must be a list", "tools");
      render.tools = nlohmann::ordered_json::parse(it->dump());
    }
    ids = tok.encode(api.chat_renderer(render), optional_bool(body, "add_special_tokens", false));
  } else {
    const auto prompt = optional_string(body, "prompt");
    if (!prompt) throw bad_request("give 'prompt' (a string) or 'messages'", "prompt");
    ids = tok.encode(*prompt, optional_bool(body, "add_special_tokens", true));
  }
  nlohmann::json out = {{"count", ids.size()},
                        {"max_model_len", api.config.max_model_len},
                        {"tokens", ids},
                        {"token_strs", nullptr}};
  if (return_token_strs) {
    nlohmann::json strs = nlohmann::json::array();
    for (int32_t id : ids) strs.push_back(tok.id_to_token(id).value_or(""));
    out["token_strs"] = std::move(strs);
  }
  exchange->reply_json(200, out);
}

void handle_detokenize(ApiContext& api, const std::shared_ptr<Exchange>& exchange) {
  const nlohmann::json body = parse_body(exchange->request().body);
  (void)api.resolve_model(body);
  const tokenizer::Tokenizer& tok = api.require_tokenizer("/detokenize");
  if (!body.contains("tokens")) throw bad_request("'tokens' is required", "tokens");
  const std::vector<int32_t> ids = parse_token_ids(body["tokens"], "tokens");
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] >= api.config.vocab_size) {
      throw bad_request(fmt::format("token {} (at index {}) is outside the vocabulary [0, {})", ids[i], i,
                                    api.config.vocab_size),
                        "tokens");
    }
  }
  exchange->reply_json(200, {{"prompt", tok.decode(ids, false)}});
}

}  // namespace ds::server
