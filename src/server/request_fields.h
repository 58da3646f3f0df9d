// Reading request-level fields of an OpenAI request body with the type checks that name the field (the
// sampling fields are read by engine/request_params.h).
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace ds::server {

// The body as a JSON object; 400 for malformed JSON (invalid UTF-8 included) or a non-object.
[[nodiscard]] nlohmann::json parse_body(const std::string& body);

[[nodiscard]] bool optional_bool(const nlohmann::json& body, const char* name, bool fallback);
[[nodiscard]] std::optional<std::string> optional_string(const nlohmann::json& body, const char* name);
[[nodiscard]] std::optional<int64_t> optional_int(const nlohmann::json& body, const char* name);

// vLLM's truncate_prompt_tokens: keep only the last N tokens of each prompt (for chat: of the rendered
// conversation). N in [1, max_model_len], or -1 for max_model_len; nullopt when absent. 400 otherwise.
[[nodiscard]] std::optional<int64_t> truncate_prompt_tokens(const nlohmann::json& body,
                                                            int64_t max_model_len);
// The last `keep` tokens of ids (all of them when keep is nullopt or not shorter).
void truncate_prompt(std::vector<int32_t>& ids, std::optional<int64_t> keep);

// stream_options.include_usage; 400 when stream_options is given without stream or has the wrong type.
[[nodiscard]] bool include_usage(const nlohmann::json& body, bool stream);

// The chat messages checked (a non-empty list of objects with a known string role and string, null or
// text-part content), with content parts joined into one string as the templates of text-only models expect.
[[nodiscard]] nlohmann::ordered_json parse_messages(const nlohmann::json& body);

// The prompts of /v1/completions: a string, a list of strings, a list of token ids or a list of such lists.
struct CompletionPrompt {
  std::vector<int32_t> ids;
  std::optional<std::string> text;
};
// Strings are kept as text (tokenized by the caller). 400 naming "prompt" for any other shape or an empty
// one.
[[nodiscard]] std::vector<CompletionPrompt> parse_completion_prompts(const nlohmann::json& body);

}  // namespace ds::server
