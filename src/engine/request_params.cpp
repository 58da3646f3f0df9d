#include "engine/request_params.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>

#include "io/json_limits.h"
#include "util/check.h"

namespace ds {
namespace {

// Fields that belong to the request, not to sampling: never reported as unknown.
const std::set<std::string> kRequestFields = {"model",
                                              "prompt",
                                              "messages",
                                              "stream",
                                              "stream_options",
                                              "echo",
                                              "user",
                                              "id",
                                              "suffix",
                                              "tools",
                                              "tool_choice",
                                              "best_of",
                                              "chat_template",
                                              "chat_template_kwargs",
                                              "add_generation_prompt",
                                              "response_format",
                                              "return_tokens_as_token_ids",
                                              "priority",
                                              "top_logprobs",
                                              "max_completion_tokens",
                                              "continue_final_message",
                                              "add_special_tokens",
                                              "parallel_tool_calls",
                                              "truncate_prompt_tokens"};

class Fields {
 public:
  explicit Fields(const nlohmann::json& body) : body_(body) {}
  [[nodiscard]] const nlohmann::json* get(const char* name) {
    seen_.insert(name);
    const auto it = body_.find(name);
    return it == body_.end() || it->is_null() ? nullptr : &*it;
  }
  bool read(const char* name, double& out) {
    const auto* v = get(name);
    if (v == nullptr) return false;
    if (!v->is_number())
      throw InvalidArgument(name, fmt::format("'{}' must be a number, got {}", name, json_excerpt(*v)));
    out = v->get<double>();
    if (!std::isfinite(out)) throw InvalidArgument(name, fmt::format("'{}' must be finite", name));
    return true;
  }
  bool read(const char* name, int64_t& out) {
    const auto* v = get(name);
    if (v == nullptr) return false;
    out = parse_int64(*v, name);
    return true;
  }
  bool read(const char* name, bool& out) {
    const auto* v = get(name);
    if (v == nullptr) return false;
    if (!v->is_boolean())
      throw InvalidArgument(name, fmt::format("'{}' must be true or false, got {}", name, json_excerpt(*v)));
    out = v->get<bool>();
    return true;
  }
  [[nodiscard]] const std::set<std::string>& seen() const { return seen_; }

 private:
  const nlohmann::json& body_;
  std::set<std::string> seen_;
};

// logit_bias: {"token id": bias}, keys in canonical decimal (so that no two keys name one token).
std::vector<LogitBias> parse_logit_bias(const nlohmann::json& v) {
  if (!v.is_object()) {
    throw InvalidArgument("logit_bias",
                          fmt::format("'logit_bias' must be an object mapping token ids to biases, "
                                      "got {}",
                                      json_excerpt(v)));
  }
  std::vector<LogitBias> out;
  for (const auto& [key, bias] : v.items()) {
    int32_t id = -1;
    const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
    if (ec != std::errc() || end != key.data() + key.size() || id < 0 || std::to_string(id) != key) {
      throw InvalidArgument("logit_bias", fmt::format("'logit_bias' keys must be token ids (decimal integers "
                                                      ">= 0), got \"{}\"",
                                                      truncate_text(key, 40)));
    }
    if (!bias.is_number() || !(bias.get<double>() >= -100.0 && bias.get<double>() <= 100.0)) {
      throw InvalidArgument("logit_bias",
                            fmt::format("'logit_bias' of token {} must be a number in [-100, 100], "
                                        "got {}",
                                        id, json_excerpt(bias)));
    }
    out.push_back({id, static_cast<float>(bias.get<double>())});
  }
  std::sort(out.begin(), out.end(), [](const LogitBias& a, const LogitBias& b) { return a.token < b.token; });
  return out;
}

}  // namespace

int64_t parse_int64(const nlohmann::json& value, const std::string& param) {
  // nlohmann keeps [2^63, 2^64) as unsigned and larger integers as doubles: both are out of range here, never
  // wrapped or rounded.
  const bool too_large =
      (value.is_number_unsigned() && value.get<uint64_t>() > INT64_MAX) ||
      (value.is_number_float() && std::isfinite(value.get<double>()) &&
       value.get<double>() == std::floor(value.get<double>()) && std::fabs(value.get<double>()) >= 0x1p63);
  if (too_large) {
    throw InvalidArgument(param, fmt::format("'{}' is {}, outside the 64-bit integers [-2^63, 2^63) this "
                                             "server takes",
                                             param, json_excerpt(value)));
  }
  if (!value.is_number_integer()) {
    throw InvalidArgument(param, fmt::format("'{}' must be an integer, got {}", param, json_excerpt(value)));
  }
  return value.get<int64_t>();
}

std::vector<int32_t> parse_token_ids(const nlohmann::json& value, const std::string& param) {
  if (!value.is_array()) throw InvalidArgument(param, fmt::format("'{}' must be a list of token ids", param));
  std::vector<int32_t> ids;
  for (const auto& v : value) {
    // Read here rather than by parse_int64: any value outside [0, 2^31), 2^64 - 1 included, is this message.
    const bool too_large = v.is_number_unsigned() && v.get<uint64_t>() > INT32_MAX;
    const int64_t id = v.is_number_integer() && !too_large ? v.get<int64_t>() : -1;
    if (id < 0 || id > INT32_MAX) {
      throw InvalidArgument(param, fmt::format("'{}' must hold integer token ids in [0, 2^31), got {}", param,
                                               json_excerpt(v)));
    }
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

nlohmann::json sampling_params_json(const SamplingParams& p) {
  nlohmann::json out = {{"n", p.n},
                        {"temperature", p.temperature},
                        {"top_p", p.top_p},
                        {"top_k", p.top_k},
                        {"min_p", p.min_p},
                        {"repetition_penalty", p.repetition_penalty},
                        {"presence_penalty", p.presence_penalty},
                        {"frequency_penalty", p.frequency_penalty},
                        {"seed", nullptr},
                        {"max_tokens", p.max_tokens},
                        {"min_tokens", p.min_tokens},
                        {"stop", p.stop},
                        {"stop_token_ids", p.stop_token_ids},
                        {"include_stop_str_in_output", p.include_stop_str_in_output},
                        {"ignore_eos", p.ignore_eos},
                        {"logprobs", nullptr},
                        {"prompt_logprobs", nullptr},
                        {"skip_special_tokens", p.skip_special_tokens}};
  if (p.seed) out["seed"] = *p.seed;
  if (p.logprobs) out["logprobs"] = *p.logprobs;
  if (p.prompt_logprobs) out["prompt_logprobs"] = *p.prompt_logprobs;
  out["logit_bias"] = nullptr;
  for (const LogitBias& b : p.logit_bias) out["logit_bias"][std::to_string(b.token)] = b.bias;
  out["allowed_token_ids"] = nullptr;
  if (!p.allowed_token_ids.empty()) out["allowed_token_ids"] = p.allowed_token_ids;
  return out;
}

SamplingParams parse_sampling_params(const nlohmann::json& body, std::vector<std::string>* unknown) {
  if (!body.is_object()) throw InvalidArgument("", "the request body must be a JSON object");
  SamplingParams p;
  Fields f(body);
  if (!f.read("max_tokens", p.max_tokens)) (void)f.read("max_completion_tokens", p.max_tokens);
  (void)f.read("temperature", p.temperature);
  (void)f.read("top_p", p.top_p);
  (void)f.read("top_k", p.top_k);
  (void)f.read("min_p", p.min_p);
  (void)f.read("repetition_penalty", p.repetition_penalty);
  (void)f.read("presence_penalty", p.presence_penalty);
  (void)f.read("frequency_penalty", p.frequency_penalty);
  (void)f.read("min_tokens", p.min_tokens);
  (void)f.read("n", p.n);
  (void)f.read("ignore_eos", p.ignore_eos);
  (void)f.read("include_stop_str_in_output", p.include_stop_str_in_output);
  (void)f.read("skip_special_tokens", p.skip_special_tokens);
  // vLLM's range for seed is int64's; a negative seed is its two's-complement bits.
  if (const auto* v = f.get("seed")) p.seed = static_cast<uint64_t>(parse_int64(*v, "seed"));
  if (const auto* v = f.get("stop")) {
    if (v->is_string()) {
      p.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      for (const auto& s : *v) {
        if (!s.is_string()) throw InvalidArgument("stop", "'stop' must be a string or a list of strings");
        p.stop.push_back(s.get<std::string>());
      }
    } else {
      throw InvalidArgument("stop", "'stop' must be a string or a list of strings");
    }
  }
  if (const auto* v = f.get("stop_token_ids")) p.stop_token_ids = parse_token_ids(*v, "stop_token_ids");
  if (const auto* v = f.get("logit_bias")) p.logit_bias = parse_logit_bias(*v);
  if (const auto* v = f.get("allowed_token_ids")) {
    p.allowed_token_ids = parse_token_ids(*v, "allowed_token_ids");
    if (p.allowed_token_ids.empty())
      throw InvalidArgument("allowed_token_ids",
                            "'allowed_token_ids' must not be empty (leave it out to allow all)");
    std::sort(p.allowed_token_ids.begin(), p.allowed_token_ids.end());
    p.allowed_token_ids.erase(std::unique(p.allowed_token_ids.begin(), p.allowed_token_ids.end()),
                              p.allowed_token_ids.end());
  }
  // Not implemented: refused unless they ask for nothing (an empty list, beam search off).
  if (const auto* v = f.get("bad_words")) {
    if (!v->is_array() || !v->empty())
      throw InvalidArgument("bad_words",
                            "'bad_words' is not supported by this server; use logit_bias of -100");
  }
  bool beam_search = false;
  (void)f.read("use_beam_search", beam_search);
  if (beam_search)
    throw InvalidArgument("use_beam_search", "'use_beam_search' is not supported by this server");
  // logprobs: an integer in completions, a boolean (+ top_logprobs) in chat completions.
  if (const auto* v = f.get("logprobs")) {
    if (v->is_boolean()) {
      if (v->get<bool>()) {
        int64_t top = 0;
        (void)f.read("top_logprobs", top);
        p.logprobs = top;
      }
    } else if (v->is_number()) {
      p.logprobs = parse_int64(*v, "logprobs");
    } else {
      throw InvalidArgument(
          "logprobs", fmt::format("'logprobs' must be an integer or a boolean, got {}", json_excerpt(*v)));
    }
  }
  if (const auto* v = f.get("prompt_logprobs")) p.prompt_logprobs = parse_int64(*v, "prompt_logprobs");
  p.validate();
  if (unknown != nullptr) {
    for (const auto& [key, value] : body.items())
      if (!f.seen().contains(key) && !kRequestFields.contains(key)) unknown->push_back(key);
  }
  return p;
}

}  // namespace ds
