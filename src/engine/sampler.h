// Turning one row of logits into the next token: greedy, or temperature / top-k / top-p sampling from a
// seeded generator.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>

namespace ds {

struct SamplingParams {
  double temperature = 1.0;  // 0 = greedy
  double top_p = 1.0;        // (0, 1]
  int64_t top_k = -1;        // -1 = all
  std::optional<uint64_t> seed;
  int64_t max_tokens = 16;
  bool ignore_eos = false;

  // Throws InvalidArgument naming the field when a value is out of range.
  void validate() const;
};

struct SampledToken {
  int32_t token = 0;
  float logprob = 0.0f;  // log-softmax of the raw logits (temperature 1), as OpenAI's logprobs report
};

class Sampler {
 public:
  explicit Sampler(uint64_t seed) : rng_(seed) {}
  [[nodiscard]] SampledToken sample(std::span<const float> logits, const SamplingParams& params);

 private:
  std::mt19937_64 rng_;
};

}  // namespace ds
