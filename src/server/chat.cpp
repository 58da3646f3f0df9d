// POST /v1/chat/completions: messages through the model's chat template, answered as OpenAI does.
#include <nlohmann/json.hpp>

#include "engine/request_params.h"
#include "io/json_limits.h"
#include "server/api_context.h"
#include "server/chat_output.h"
#include "server/request_fields.h"

namespace ds::server {
namespace {

class ChatJob final : public GenerationJob {
 public:
  using GenerationJob::GenerationJob;

  // The reasoning and tool-call parsers (chat_output.h); set before start().
  ChatOutputOptions output;

 private:
  const char* chunk_object() const override { return "chat.completion.chunk"; }

  [[nodiscard]] nlohmann::json logprob_entry(int32_t id, double logprob) const {
    return {{"token", token_string(id)}, {"logprob", json_logprob(logprob)}, {"bytes", token_bytes(id)}};
  }

  [[nodiscard]] nlohmann::json logprobs_json(std::span<const SampledToken> tokens) const {
    nlohmann::json content = nlohmann::json::array();
    for (const auto& t : tokens) {
      nlohmann::json entry = logprob_entry(t.token, t.logprob);
      nlohmann::json top = nlohmann::json::array();
      for (const auto& alt : t.top_logprobs) top.push_back(logprob_entry(alt.token, alt.logprob));
      entry["top_logprobs"] = std::move(top);
      content.push_back(std::move(entry));
    }
    return {{"content", std::move(content)}};
  }

  void stream_begin() override {
    // The role comes first, once per choice, as OpenAI sends it.
    for (auto& c : choices_) {
      nlohmann::json chunk = chunk_head();
      chunk["choices"] = nlohmann::json::array({{{"index", c.index},
                                                 {"delta", {{"role", "assistant"}, {"content", ""}}},
                                                 {"logprobs", nullptr},
                                                 {"finish_reason", nullptr}}});
      if (options_.include_usage) chunk["usage"] = nullptr;
      send_chunk(chunk);
      c.first_sent = true;
    }
    if (output.active()) stream_outputs_.assign(choices_.size(), ChatStreamOutput(output));
  }

  void stream_delta(Choice& c, std::string_view text, std::span<const int32_t> token_ids,
                    std::span<const SampledToken> logprobs, const std::string& finish) override {
    if (output.active()) {
      stream_parsed_delta(c, text, token_ids, logprobs, finish);
      return;
    }
    nlohmann::json delta = nlohmann::json::object();
    if (!text.empty() || finish.empty()) delta["content"] = std::string(text);
    nlohmann::json choice = {{"index", c.index},
                             {"delta", std::move(delta)},
                             {"logprobs", nullptr},
                             {"finish_reason", finish.empty() ? nlohmann::json() : nlohmann::json(finish)}};
    if (params_.logprobs) choice["logprobs"] = logprobs_json(logprobs);
    if (options_.return_token_ids)
      choice["token_ids"] = std::vector<int32_t>(token_ids.begin(), token_ids.end());
    nlohmann::json chunk = chunk_head();
    chunk["choices"] = nlohmann::json::array({std::move(choice)});
    if (options_.include_usage) chunk["usage"] = nullptr;
    send_chunk(chunk);
  }

  // With the parsers on: the text's reasoning, content and tool calls as deltas, the per-token fields on the
  // first chunk and the finish reason on the last.
  void stream_parsed_delta(Choice& c, std::string_view text, std::span<const int32_t> token_ids,
                           std::span<const SampledToken> logprobs, const std::string& finish) {
    ChatStreamOutput& out = stream_outputs_[static_cast<size_t>(c.index)];
    std::vector<nlohmann::json> deltas = out.deltas(text, !finish.empty());
    const bool per_token = params_.logprobs || options_.return_token_ids;
    if (deltas.empty()) {
      if (finish.empty() && !per_token) return;  // a marker is still arriving: nothing to say yet
      deltas.push_back(nlohmann::json::object());
    }
    const nlohmann::json finish_reason =
        finish.empty() ? nlohmann::json() : nlohmann::json(chat_finish_reason(finish, out.num_calls()));
    for (size_t i = 0; i < deltas.size(); ++i) {
      const bool first = i == 0, last = i + 1 == deltas.size();
      nlohmann::json choice = {{"index", c.index},
                               {"delta", std::move(deltas[i])},
                               {"logprobs", nullptr},
                               {"finish_reason", last ? finish_reason : nlohmann::json()}};
      if (params_.logprobs) {
        choice["logprobs"] = logprobs_json(first ? logprobs : std::span<const SampledToken>());
      }
      if (options_.return_token_ids) {
        choice["token_ids"] =
            first ? std::vector<int32_t>(token_ids.begin(), token_ids.end()) : std::vector<int32_t>();
      }
      nlohmann::json chunk = chunk_head();
      chunk["choices"] = nlohmann::json::array({std::move(choice)});
      if (options_.include_usage) chunk["usage"] = nullptr;
      send_chunk(chunk);
    }
  }

  nlohmann::json response_body() override {
    nlohmann::json choices = nlohmann::json::array();
    for (const auto& c : choices_) {
      nlohmann::json message = {{"role", "assistant"}, {"content", c.text}};
      std::string finish_reason = c.finish_reason;
      if (output.active()) {
        size_t num_calls = 0;
        message = chat_message(output, c.text, num_calls);
        finish_reason = chat_finish_reason(c.finish_reason, num_calls);
      }
      nlohmann::json choice = {{"index", c.index},
                               {"message", std::move(message)},
                               {"logprobs", nullptr},
                               {"finish_reason", std::move(finish_reason)}};
      if (params_.logprobs) choice["logprobs"] = logprobs_json(c.logprobs);
      if (options_.return_token_ids) choice["token_ids"] = c.token_ids;
      choices.push_back(std::move(choice));
    }
    nlohmann::json body = chunk_head();
    body["object"] = "chat.completion";
    body["choices"] = std::move(choices);
    body["usage"] = usage();
    if (options_.return_token_ids) body["prompt_token_ids"] = prompts_.front().input.ids;
    return body;
  }

  std::vector<ChatStreamOutput> stream_outputs_;  // streaming with the parsers on: one per choice
};

}  // namespace

void handle_chat_completions(ApiContext& api, const std::shared_ptr<Exchange>& exchange) {
  auto [body, o] = begin_generation(api, *exchange, "chatcmpl-", false);

  ChatRenderInput render;
  render.messages = parse_messages(body);
  render.add_generation_prompt = optional_bool(body, "add_generation_prompt", true);
  render.continue_final_message = optional_bool(body, "continue_final_message", false);
  api.read_client_chat_template(body, render);
  if (render.add_generation_prompt && render.continue_final_message) {
    throw bad_request("'continue_final_message' and 'add_generation_prompt' cannot both be true",
                      "continue_final_message");
  }
  if (const auto it = body.find("tools"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) throw bad_request("'tools' must be a list", "tools");
    render.tools = nlohmann::ordered_json::parse(it->dump());
  }
  const ChatOutputOptions output = chat_output_options(body, api.config.reasoning_parser, render.tools);
  // logprobs is a boolean here; top_logprobs (0..20) needs it.
  if (const auto it = body.find("logprobs"); it != body.end() && !it->is_null() && !it->is_boolean()) {
    throw bad_request(fmt::format("'logprobs' must be true or false, got {}", json_excerpt(*it)), "logprobs");
  }
  if (const auto top = optional_int(body, "top_logprobs")) {
    if (*top < 0 || *top > 20) {
      throw bad_request(fmt::format("'top_logprobs' must be in [0, 20], got {}", *top), "top_logprobs");
    }
    if (!optional_bool(body, "logprobs", false)) {
      throw bad_request("'top_logprobs' needs \"logprobs\": true", "top_logprobs");
    }
  }
  // Without max_tokens the answer may fill the context: parse with a placeholder, set it once the prompt is
  // known.
  const bool max_tokens_given =
      (body.contains("max_tokens") && !body["max_tokens"].is_null()) ||
      (body.contains("max_completion_tokens") && !body["max_completion_tokens"].is_null());
  if (!max_tokens_given) body["max_tokens"] = std::max<int64_t>(api.config.max_model_len, 1);
  SamplingParams params = parse_sampling_params(body);
  const auto truncate = truncate_prompt_tokens(body, api.config.max_model_len);
  if (params.n > api.config.max_n) {
    throw bad_request(fmt::format("n must be at most {} (--max-n), got {}", api.config.max_n, params.n), "n");
  }

  if (!api.chat_renderer) {
    throw bad_request("this model has no chat template; use /v1/completions with a prompt instead",
                      "messages");
  }
  const tokenizer::Tokenizer& tok = api.require_tokenizer("chat messages");
  const std::string prompt = api.chat_renderer(render);
  PromptInput input;
  // The template writes the special tokens itself (BOS included).
  input.ids = tok.encode(prompt, false);
  if (input.ids.empty()) throw bad_request("the chat template rendered an empty prompt", "messages");
  truncate_prompt(input.ids, truncate);
  if (!max_tokens_given) {
    params.max_tokens =
        std::max<int64_t>(api.config.max_model_len - static_cast<int64_t>(input.ids.size()), 1);
    params.min_tokens = std::min(params.min_tokens, params.max_tokens);
  }
  api.check_prompt(input.ids, params.max_tokens, "messages");
  params.keep_special_token_ids = chat_marker_token_ids(output, tok);
  auto job = std::make_shared<ChatJob>(api.engine, api.tokenizer, exchange, std::move(o), api.jobs);
  job->output = output;
  std::vector<PromptInput> prompts;
  prompts.push_back(std::move(input));
  job->start(std::move(prompts), params);
}

}  // namespace ds::server
