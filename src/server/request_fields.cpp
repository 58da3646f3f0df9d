#include "server/request_fields.h"

#include <fmt/format.h>

#include <set>

#include "engine/request_params.h"
#include "io/json_limits.h"
#include "server/errors.h"

namespace ds::server {
namespace {

const nlohmann::json* field(const nlohmann::json& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::string type_name(const nlohmann::json& v) {
  return v.type_name();
}

}  // namespace

nlohmann::json parse_body(const std::string& body) {
  if (const auto at = find_json_depth_excess(body)) {
    throw bad_request(
        fmt::format("the request body nests arrays and objects more than {} levels deep (at byte "
                    "{}); this server accepts at most {} levels",
                    kMaxJsonDepth, *at, kMaxJsonDepth));
  }
  nlohmann::json parsed;
  try {
    parsed = nlohmann::json::parse(body);
  } catch (const nlohmann::json::parse_error& e) {
    // nlohmann's parser also refuses ill-formed UTF-8 and lone surrogates in strings.
    throw bad_request(fmt::format("the request body is not valid JSON: {}", truncate_text(e.what(), 300)));
  } catch (const nlohmann::json::out_of_range& e) {
    // A number beyond double's range (1e999): JSON has no Infinity.
    throw bad_request(
        fmt::format("the request body has a number out of range: {}", truncate_text(e.what(), 300)));
  }
  if (!parsed.is_object()) {
    throw bad_request(fmt::format("the request body must be a JSON object, got {}", type_name(parsed)));
  }
  return parsed;
}

bool optional_bool(const nlohmann::json& body, const char* name, bool fallback) {
  const auto* v = field(body, name);
  if (v == nullptr) return fallback;
  if (!v->is_boolean())
    throw bad_request(fmt::format("'{}' must be true or false, got {}", name, json_excerpt(*v)), name);
  return v->get<bool>();
}

std::optional<std::string> optional_string(const nlohmann::json& body, const char* name) {
  const auto* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string())
    throw bad_request(fmt::format("'{}' must be a string, got {}", name, type_name(*v)), name);
  return v->get<std::string>();
}

std::optional<int64_t> optional_int(const nlohmann::json& body, const char* name) {
  const auto* v = field(body, name);
  if (v == nullptr) return std::nullopt;
  return parse_int64(*v, name);  // InvalidArgument naming the field: a 400
}

std::optional<int64_t> truncate_prompt_tokens(const nlohmann::json& body, int64_t max_model_len) {
  const auto n = optional_int(body, "truncate_prompt_tokens");
  if (!n) return std::nullopt;
  if (*n == -1) return max_model_len;
  if (*n < 1 || *n > max_model_len) {
    throw bad_request(
        fmt::format("'truncate_prompt_tokens' must be -1 (the model's context, {} tokens) or in "
                    "[1, {}], got {}",
                    max_model_len, max_model_len, *n),
        "truncate_prompt_tokens");
  }
  return n;
}

void truncate_prompt(std::vector<int32_t>& ids, std::optional<int64_t> keep) {
  if (!keep || static_cast<int64_t>(ids.size()) <= *keep) return;
  ids.erase(ids.begin(), ids.end() - *keep);
}

bool include_usage(const nlohmann::json& body, bool stream) {
  const auto* v = field(body, "stream_options");
  if (v == nullptr) return false;
  if (!v->is_object()) throw bad_request("'stream_options' must be an object", "stream_options");
  if (!stream)
    throw bad_request("'stream_options' can only be given with \"stream\": true", "stream_options");
  const auto* usage = field(*v, "include_usage");
  if (usage == nullptr) return false;
  if (!usage->is_boolean()) {
    throw bad_request("'stream_options.include_usage' must be true or false", "stream_options.include_usage");
  }
  return usage->get<bool>();
}

nlohmann::ordered_json parse_messages(const nlohmann::json& body) {
  static const std::set<std::string> kRoles = {"system", "developer", "user", "assistant", "tool"};
  const auto* messages = field(body, "messages");
  if (messages == nullptr) throw bad_request("'messages' is required", "messages");
  if (!messages->is_array()) {
    throw bad_request(fmt::format("'messages' must be a list of messages, got {}", type_name(*messages)),
                      "messages");
  }
  if (messages->empty()) throw bad_request("'messages' must not be empty", "messages");
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (size_t i = 0; i < messages->size(); ++i) {
    const auto& m = (*messages)[i];
    const std::string at = fmt::format("messages[{}]", i);
    if (!m.is_object())
      throw bad_request(fmt::format("'{}' must be an object, got {}", at, type_name(m)), at);
    const auto role_it = m.find("role");
    if (role_it == m.end()) throw bad_request(fmt::format("'{}.role' is required", at), at + ".role");
    if (!role_it->is_string()) {
      throw bad_request(fmt::format("'{}.role' must be a string, got {}", at, json_excerpt(*role_it)),
                        at + ".role");
    }
    const std::string role = role_it->get<std::string>();
    if (!kRoles.contains(role)) {
      throw bad_request(
          fmt::format("'{}.role' is '{}'; expected system, developer, user, assistant or tool", at, role),
          at + ".role");
    }
    nlohmann::ordered_json message = nlohmann::ordered_json::parse(m.dump());
    const auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      if (role != "assistant")
        throw bad_request(fmt::format("'{}.content' is required", at), at + ".content");
      message["content"] = nullptr;
    } else if (content->is_array()) {
      // Text parts only: joined with newlines as vLLM does for templates that take a string.
      std::string text;
      for (size_t j = 0; j < content->size(); ++j) {
        const auto& part = (*content)[j];
        const std::string part_at = fmt::format("{}.content[{}]", at, j);
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
          throw bad_request(fmt::format("'{}' must be an object with a 'type'", part_at), part_at);
        }
        if (part["type"] != "text") {
          throw bad_request(fmt::format("'{}' has type '{}'; this model takes text parts only", part_at,
                                        part["type"].get<std::string>()),
                            part_at + ".type");
        }
        if (!part.contains("text") || !part["text"].is_string()) {
          throw bad_request(fmt::format("'{}.text' must be a string", part_at), part_at + ".text");
        }
        if (j > 0) text += "\n";
        text += part["text"].get<std::string>();
      }
      message["content"] = text;
    } else if (!content->is_string()) {
      throw bad_request(fmt::format("'{}.content' must be a string or a list of content parts, got {}", at,
                                    type_name(*content)),
                        at + ".content");
    }
    out.push_back(std::move(message));
  }
  return out;
}

std::vector<CompletionPrompt> parse_completion_prompts(const nlohmann::json& body) {
  const auto* prompt = field(body, "prompt");
  if (prompt == nullptr) throw bad_request("'prompt' is required", "prompt");
  const char* shape =
      "'prompt' must be a string, a list of strings, a list of token ids or a list of lists of token ids";
  std::vector<CompletionPrompt> out;
  auto add_text = [&](const nlohmann::json& v) {
    if (v.get_ref<const std::string&>().empty()) throw bad_request("the prompt is empty", "prompt");
    out.push_back({{}, v.get<std::string>()});
  };
  auto add_ids = [&](const nlohmann::json& v) {
    if (v.empty()) throw bad_request("the prompt is empty", "prompt");
    out.push_back({parse_token_ids(v, "prompt"), std::nullopt});
  };
  if (prompt->is_string()) {
    add_text(*prompt);
  } else if (prompt->is_array()) {
    if (prompt->empty()) throw bad_request("the prompt is empty", "prompt");
    const auto& first = prompt->front();
    if (first.is_number()) {
      add_ids(*prompt);
    } else {
      for (const auto& p : *prompt) {
        if (p.is_string()) {
          add_text(p);
        } else if (p.is_array()) {
          add_ids(p);
        } else {
          throw bad_request(shape, "prompt");
        }
      }
    }
  } else {
    throw bad_request(shape, "prompt");
  }
  return out;
}

}  // namespace ds::server
