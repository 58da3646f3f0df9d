#include "engine/request_params.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <set>

#include "io/json_limits.h"
#include "util/check.h"

namespace ds {
namespace {

// Fields that belong to the request, not to sampling: never reported as unknown.
const std::set<std::string> kRequestFields = {"model",  "prompt", "messages", "stream", "stream_options", "echo",
                                              "user",   "id",     "suffix",   "tools",  "tool_choice",    "best_of",
                                              "chat_template", "chat_template_kwargs", "add_generation_prompt",
                                              "response_format", "return_tokens_as_token_ids", "priority",
                                              "top_logprobs", "max_completion_tokens", "continue_final_message",
                                              "add_special_tokens", "parallel_tool_calls", "logit_bias"};

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
    if (!v->is_number_integer()) {
      throw InvalidArgument(name, fmt::format("'{}' must be an integer, got {}", name, json_excerpt(*v)));
    }
    out = v->get<int64_t>();
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

}  // namespace

std::vector<int32_t> parse_token_ids(const nlohmann::json& value, const std::string& param) {
  if (!value.is_array()) throw InvalidArgument(param, fmt::format("'{}' must be a list of token ids", param));
  std::vector<int32_t> ids;
  for (const auto& v : value) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
      throw InvalidArgument(param, fmt::format("'{}' must hold non-negative integer token ids, got {}", param,
                                               json_excerpt(v)));
    }
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
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
  if (const auto* v = f.get("seed")) {
    if (!v->is_number_integer())
      throw InvalidArgument("seed", fmt::format("'seed' must be an integer, got {}", json_excerpt(*v)));
    p.seed = v->is_number_unsigned() ? v->get<uint64_t>() : static_cast<uint64_t>(v->get<int64_t>());
  }
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
  // logprobs: an integer in completions, a boolean (+ top_logprobs) in chat completions.
  if (const auto* v = f.get("logprobs")) {
    if (v->is_boolean()) {
      if (v->get<bool>()) {
        int64_t top = 0;
        (void)f.read("top_logprobs", top);
        p.logprobs = top;
      }
    } else if (v->is_number_integer()) {
      p.logprobs = v->get<int64_t>();
    } else {
      throw InvalidArgument(
          "logprobs", fmt::format("'logprobs' must be an integer or a boolean, got {}", json_excerpt(*v)));
    }
  }
  if (const auto* v = f.get("prompt_logprobs")) {
    if (!v->is_number_integer()) throw InvalidArgument("prompt_logprobs", "'prompt_logprobs' must be an integer");
    p.prompt_logprobs = v->get<int64_t>();
  }
  try {
    p.validate();
  } catch (const InvalidArgument& e) {
    // validate() messages start with the field's name: make it the param.
    const std::string message = e.what();
    throw InvalidArgument(message.substr(0, message.find(' ')), message);
  }
  if (unknown != nullptr) {
    for (const auto& [key, value] : body.items())
      if (!f.seen().contains(key) && !kRequestFields.contains(key)) unknown->push_back(key);
  }
  return p;
}

}  // namespace ds
