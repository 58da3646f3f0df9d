// The sampling fields of an OpenAI-style request body (vLLM's names and extensions) -> SamplingParams.
// Shared by `deepserve generate --batch` and the HTTP server, so both accept and refuse the same things.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

#include "engine/sampler.h"

namespace ds {

// Reads every known sampling field of `body`, type-checked; InvalidArgument(param, message) on a wrong type or
// range. Fields this parser does not know are appended to `unknown` (when given), request-level fields
// (model, prompt, messages, stream, ...) excepted.
[[nodiscard]] SamplingParams parse_sampling_params(const nlohmann::json& body, std::vector<std::string>* unknown = nullptr);

// The parameters as request fields (vLLM's names), for logs: every field, defaults included.
[[nodiscard]] nlohmann::json sampling_params_json(const SamplingParams& params);

// The one reader of integers in request bodies: a JSON integer in int64's range. InvalidArgument(param, ...)
// for any other value, an integer outside [-2^63, 2^63) included (never wrapped).
[[nodiscard]] int64_t parse_int64(const nlohmann::json& value, const std::string& param);

// A prompt given as token ids: a list of integers in [0, 2^31). InvalidArgument(param, ...) otherwise.
[[nodiscard]] std::vector<int32_t> parse_token_ids(const nlohmann::json& value, const std::string& param);

}  // namespace ds
