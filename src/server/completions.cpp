// POST /v1/completions: OpenAI's legacy completions with vLLM's extensions (token-id prompts, echo scoring
// with max_tokens 0, return_token_ids, return_tokens_as_token_ids).
#include <nlohmann/json.hpp>

#include "engine/request_params.h"
#include "server/api_context.h"
#include "server/request_fields.h"

namespace ds::server {
namespace {

int64_t utf8_length(std::string_view s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// The legacy logprobs object: parallel lists of tokens, their logprobs, the top alternatives and text
// offsets.
class LegacyLogprobs {
 public:
  LegacyLogprobs()
      : tokens_(nlohmann::json::array()),
        token_logprobs_(nlohmann::json::array()),
        top_logprobs_(nlohmann::json::array()),
        text_offset_(nlohmann::json::array()) {}

  template <class TokenString>
  void add(int32_t id, const SampledToken* sampled, int64_t& offset, const TokenString& token_string,
           double (*clamp)(double)) {
    const std::string text = token_string(id);
    tokens_.push_back(text);
    text_offset_.push_back(offset);
    offset += utf8_length(text);
    if (sampled == nullptr) {
      token_logprobs_.push_back(nullptr);
      top_logprobs_.push_back(nullptr);
      return;
    }
    token_logprobs_.push_back(clamp(sampled->logprob));
    nlohmann::json top = nlohmann::json::object();
    for (const auto& t : sampled->top_logprobs) top[token_string(t.token)] = clamp(t.logprob);
    top[text] = clamp(sampled->logprob);  // the chosen token is always listed, as vLLM does
    top_logprobs_.push_back(std::move(top));
  }

  [[nodiscard]] nlohmann::json json() const {
    return {{"tokens", tokens_},
            {"token_logprobs", token_logprobs_},
            {"top_logprobs", top_logprobs_},
            {"text_offset", text_offset_}};
  }

 private:
  nlohmann::json tokens_, token_logprobs_, top_logprobs_, text_offset_;
};

class CompletionJob final : public GenerationJob {
 public:
  using GenerationJob::GenerationJob;

 private:
  const char* chunk_object() const override { return "text_completion"; }

  [[nodiscard]] std::string prompt_text(const Prompt& p) const {
    if (p.input.text) return *p.input.text;
    return tokenizer_ != nullptr ? tokenizer_->decode(p.input.ids, false) : std::string();
  }

  [[nodiscard]] bool wants_logprobs() const { return params_.logprobs.has_value(); }

  // Adds the prompt's tokens (echo) to `out`, with their logprobs when the engine scored them.
  void add_prompt_logprobs(const Prompt& p, LegacyLogprobs& out, int64_t& offset) const {
    auto name = [this](int32_t id) { return token_string(id); };
    for (size_t i = 0; i < p.input.ids.size(); ++i) {
      const SampledToken* scored = nullptr;
      if (i < p.prompt_logprobs.size() && p.prompt_logprobs[i]) scored = &*p.prompt_logprobs[i];
      out.add(p.input.ids[i], scored, offset, name, &json_logprob);
    }
  }

  void stream_delta(Choice& c, std::string_view text, std::span<const int32_t> token_ids,
                    std::span<const SampledToken> logprobs, const std::string& finish) override {
    const Prompt& p = prompts_[c.prompt];
    nlohmann::json choice = {{"index", c.index},
                             {"text", ""},
                             {"logprobs", nullptr},
                             {"finish_reason", finish.empty() ? nlohmann::json() : nlohmann::json(finish)},
                             {"stop_reason", nullptr}};
    std::string out_text;
    LegacyLogprobs lp;
    const bool first = !c.first_sent;
    c.first_sent = true;
    if (first && options_.echo) {
      out_text = prompt_text(p);
      if (wants_logprobs()) add_prompt_logprobs(p, lp, c.text_offset);
      if (options_.return_token_ids) choice["prompt_token_ids"] = p.input.ids;
    }
    out_text += text;
    if (wants_logprobs()) {
      auto name = [this](int32_t id) { return token_string(id); };
      for (const auto& t : logprobs) lp.add(t.token, &t, c.text_offset, name, &json_logprob);
      choice["logprobs"] = lp.json();
    }
    choice["text"] = out_text;
    if (options_.return_token_ids)
      choice["token_ids"] = std::vector<int32_t>(token_ids.begin(), token_ids.end());
    nlohmann::json chunk = chunk_head();
    chunk["choices"] = nlohmann::json::array({std::move(choice)});
    if (options_.include_usage) chunk["usage"] = nullptr;
    send_chunk(chunk);
  }

  nlohmann::json response_body() override {
    nlohmann::json choices = nlohmann::json::array();
    for (auto& c : choices_) {
      const Prompt& p = prompts_[c.prompt];
      nlohmann::json choice = {{"index", c.index},
                               {"text", nullptr},
                               {"logprobs", nullptr},
                               {"finish_reason", c.finish_reason},
                               {"stop_reason", nullptr}};
      std::string text;
      int64_t offset = 0;
      LegacyLogprobs lp;
      if (options_.echo) {
        text = prompt_text(p);
        if (wants_logprobs()) add_prompt_logprobs(p, lp, offset);
      }
      text += c.text;
      if (wants_logprobs()) {
        auto name = [this](int32_t id) { return token_string(id); };
        for (const auto& t : c.logprobs) lp.add(t.token, &t, offset, name, &json_logprob);
        choice["logprobs"] = lp.json();
      }
      choice["text"] = text;
      if (options_.return_token_ids) {
        choice["prompt_token_ids"] = p.input.ids;
        choice["token_ids"] = c.token_ids;
      }
      choices.push_back(std::move(choice));
    }
    nlohmann::json body = chunk_head();
    body["choices"] = std::move(choices);
    body["usage"] = usage();
    return body;
  }
};

}  // namespace

void handle_completions(ApiContext& api, const std::shared_ptr<Exchange>& exchange) {
  // Without a tokenizer the token ids are the answer: returned by default.
  auto [body, o] = begin_generation(api, *exchange, "cmpl-", api.tokenizer == nullptr);
  o.echo = optional_bool(body, "echo", false);
  if (body.contains("suffix") && !body["suffix"].is_null()) {
    throw bad_request("'suffix' is not supported", "suffix");
  }
  if (const auto logprobs = body.find("logprobs"); logprobs != body.end() && logprobs->is_boolean()) {
    throw bad_request("'logprobs' of a completion is an integer (the number of top logprobs per token)",
                      "logprobs");
  }
  const auto max_tokens = optional_int(body, "max_tokens");
  if (o.echo && max_tokens == 0) {
    // Scoring: the engine generates one token that is dropped from the answer.
    o.echo_only = true;
    body["max_tokens"] = 1;
  }
  SamplingParams params = parse_sampling_params(body);
  if (const auto best_of = optional_int(body, "best_of"); best_of && *best_of != params.n) {
    throw bad_request("'best_of' other than n is not supported", "best_of");
  }
  if (params.n > api.config.max_n) {
    throw bad_request(fmt::format("n must be at most {} (--max-n), got {}", api.config.max_n, params.n), "n");
  }
  if (o.echo && params.logprobs) params.prompt_logprobs = params.logprobs;

  const bool add_special_tokens = optional_bool(body, "add_special_tokens", true);
  const auto truncate = truncate_prompt_tokens(body, api.config.max_model_len);
  std::vector<PromptInput> prompts;
  for (auto& p : parse_completion_prompts(body)) {
    PromptInput input;
    if (p.text) {
      input.ids = api.require_tokenizer("a text prompt").encode(*p.text, add_special_tokens);
      input.text = std::move(p.text);
      if (input.ids.empty()) throw bad_request("the prompt is empty after tokenization", "prompt");
    } else {
      input.ids = std::move(p.ids);
    }
    const size_t full_length = input.ids.size();
    truncate_prompt(input.ids, truncate);
    if (input.ids.size() != full_length) input.text.reset();  // echo shows the tokens that were kept
    api.check_prompt(input.ids, params.max_tokens, "prompt");
    prompts.push_back(std::move(input));
  }
  auto job = std::make_shared<CompletionJob>(api.engine, api.tokenizer, exchange, std::move(o), api.jobs);
  job->start(std::move(prompts), params);
}

}  // namespace ds::server
