// --log-requests: what the access log records about a generation request besides its counts: the prompts
// (text and token ids, at most kLoggedPromptBytes in all) and the sampling parameters. Without the flag no
// prompt text or token id is ever written to the access log.
#pragma once

#include <nlohmann/json.hpp>

#include <vector>

#include "engine/sampler.h"
#include "server/generation_job.h"
#include "tokenizer/tokenizer.h"

namespace ds::server {

inline constexpr size_t kLoggedPromptBytes = 4096;

// {"prompts": [{"text", "token_ids"}...], "prompt_truncated": bool, "params": {...}}. A prompt given as
// token ids is logged with its decoded text when there is a tokenizer. Text comes first, then token ids,
// until kLoggedPromptBytes are spent.
[[nodiscard]] nlohmann::json request_log_details(const std::vector<PromptInput>& prompts,
                                                 const SamplingParams& params,
                                                 const tokenizer::Tokenizer* tokenizer);

}  // namespace ds::server
