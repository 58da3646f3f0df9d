// One sequence through a model, prefill then token-by-token decode over the paged latent cache: what
// `deepserve generate` runs until the batching engine takes over.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "model/runner.h"

namespace ds {

struct GenerateResult {
  std::vector<int32_t> token_ids;
  std::string finish_reason;  // "stop" (EOS) or "length"
};

// Checks ids against the vocabulary and the context limit (InvalidArgument naming the numbers).
void validate_prompt(const ModelConfig& config, const std::vector<int32_t>& prompt_ids, int64_t max_tokens);

// on_token is called with each new token as soon as it is sampled.
[[nodiscard]] GenerateResult generate(ModelRunner& model, const std::vector<int32_t>& prompt_ids,
                                      const SamplingParams& params,
                                      const std::function<void(const SampledToken&)>& on_token = {});

}  // namespace ds
