// What the OpenAI routes share: the engine, the tokenizer, the chat renderer, the limits, the jobs in flight.
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "server/generation_job.h"
#include "server/http_server.h"

namespace ds::server {

// What a chat template needs to turn a conversation into the prompt text.
struct ChatRenderInput {
  nlohmann::ordered_json messages;  // checked by parse_messages: roles known, content a string or null
  bool add_generation_prompt = true;
  bool continue_final_message = false;
  nlohmann::ordered_json tools;  // null when the request has none
  // --allow-client-chat-template only: the request's own template and extra template variables.
  std::optional<std::string> chat_template;
  nlohmann::ordered_json chat_template_kwargs = nlohmann::ordered_json::object();
};
// Renders with the model's chat template; throws a UserError (-> 400) when the template fails.
using ChatRenderer = std::function<std::string(const ChatRenderInput&)>;

struct ApiConfig {
  std::vector<std::string> served_model_names;  // the first is the default and the one /v1/models lists first
  std::string model_path;                       // "root" in /v1/models
  int64_t max_model_len = 0;
  int64_t vocab_size = 0;
  int64_t max_n = 16;
  int retry_after_s = 1;  // Retry-After of 503 answers
  std::string reasoning_parser;  // --reasoning-parser: "deepseek_r1", or empty for none
  bool log_requests = false;  // --log-requests: prompts and sampling params in the access log
  // --allow-client-chat-template: a request's chat_template / chat_template_kwargs are used, not ignored.
  bool allow_client_chat_template = false;
};

struct ApiContext {
  ApiContext(Engine& e, const tokenizer::Tokenizer* t, ChatRenderer r, ApiConfig c)
      : engine(e), tokenizer(t), chat_renderer(std::move(r)), config(std::move(c)) {}

  Engine& engine;
  const tokenizer::Tokenizer* tokenizer;
  ChatRenderer chat_renderer;
  ApiConfig config;
  JobRegistry jobs;
  std::atomic<bool> draining{false};

  // The served name the request asks for (the default when it names none); 404 model_not_found otherwise.
  [[nodiscard]] std::string resolve_model(const nlohmann::json& body) const;
  // 503 + Retry-After while shutting down.
  void check_accepting() const;
  // Token ids inside the vocabulary and prompt + max_tokens within --max-model-len (context_length_exceeded).
  void check_prompt(const std::vector<int32_t>& ids, int64_t max_tokens, const char* param) const;
  // chat_template (a string) and chat_template_kwargs (an object) into `render` when
  // --allow-client-chat-template is on (400 naming the field for a wrong type); ignored otherwise.
  void read_client_chat_template(const nlohmann::json& body, ChatRenderInput& render) const;
  // 400 when the model directory has no tokenizer.
  [[nodiscard]] const tokenizer::Tokenizer& require_tokenizer(const char* what) const;
};

// "cmpl-" + 24 random hex digits and the like.
[[nodiscard]] std::string random_id(const char* prefix);
[[nodiscard]] int64_t unix_time();

// What both generation routes read first: 503 unless accepting, the body (400 if it is not a JSON object),
// the model (404), a fresh id with `id_prefix`, stream and stream_options.include_usage,
// return_token_ids (default `return_token_ids_default`), return_tokens_as_token_ids, and `user` (checked
// to be a string).
struct GenerationRequest {
  nlohmann::json body;
  JobOptions options;
};
[[nodiscard]] GenerationRequest begin_generation(const ApiContext& api, const Exchange& exchange,
                                                 const char* id_prefix, bool return_token_ids_default);

void handle_completions(ApiContext& api, const std::shared_ptr<Exchange>& exchange);
void handle_chat_completions(ApiContext& api, const std::shared_ptr<Exchange>& exchange);
void handle_tokenize(ApiContext& api, const std::shared_ptr<Exchange>& exchange);
void handle_detokenize(ApiContext& api, const std::shared_ptr<Exchange>& exchange);

}  // namespace ds::server
