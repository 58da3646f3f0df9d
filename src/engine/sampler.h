// Turning one row of logits into the next token of one sequence, in vLLM's order:
//   logit_bias → penalties (repetition over prompt + output, then frequency / presence over output) → the
//   masks (tokens outside allowed_token_ids; EOS and stop_token_ids under min_tokens) → temperature (0 =
//   greedy) → top-k → top-p (over the top-k renormalized) → min-p → a draw from the sequence's own generator.
// The reported logprobs are always those of the raw row (vLLM's default "raw_logprobs").
//
// The draw: top-k, top-p and min-p only decide which tokens are kept; the one uniform u in [0, 1) is then
// turned into a token by an inverse CDF over the whole row in id order, dropped tokens weighing 0 (the first
// token whose running weight exceeds u * total). The weights are exp((logit - max) / T) by
// detail::exp_nonpositive and every sum is in double in a fixed order (chunks of 1024, 8 lanes each), so the
// CUDA sampler (Backend::sample), which does the same arithmetic, draws the same token for the same u. Before
// the device sampler the draw walked the kept tokens in the order the top-k / top-p cut left them; the
// distribution is the same, the token a given u maps to is not.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "util/check.h"

namespace ds {

// What SamplingParams::validate needs to know of the model to check token ids and masks.
struct VocabularyLimits {
  int64_t vocab_size = 0;
  std::span<const int32_t> eos_token_ids = {};
};

// A row the sampler cannot draw from: NaN or no finite maximum in the raw logits (the model's output), or
// every token masked. It ends the one request it happened to, never the engine (Engine::sample_tokens).
class SamplingError : public Error {
 public:
  SamplingError(SampleStatus status, const std::string& message) : Error(message), status_(status) {}
  [[nodiscard]] SampleStatus status() const { return status_; }

 private:
  SampleStatus status_;
};

struct SamplingParams {
  double temperature = 1.0;         // 0 = greedy (as is anything below 1e-5, as in vLLM)
  double top_p = 1.0;               // (0, 1]
  int64_t top_k = -1;               // -1 or 0 = off
  double min_p = 0.0;               // [0, 1]: drop tokens with prob < min_p * max prob
  double repetition_penalty = 1.0;  // > 0; HF/vLLM semantics over prompt + output tokens
  double presence_penalty = 0.0;    // [-2, 2], OpenAI semantics over output tokens
  double frequency_penalty = 0.0;   // [-2, 2], OpenAI semantics over output tokens
  std::optional<uint64_t> seed;
  int64_t max_tokens = 16;
  int64_t min_tokens = 0;         // EOS and stop_token_ids are masked until this many tokens exist
  std::vector<std::string> stop;  // stop strings (matched by the engine on text, not here)
  std::vector<int32_t> stop_token_ids;
  bool include_stop_str_in_output = false;
  bool ignore_eos = false;
  std::optional<int64_t> logprobs;         // top-N logprobs per sampled token, N in [0, 20]
  std::optional<int64_t> prompt_logprobs;  // for echo; N in [0, 20]
  int64_t n = 1;
  bool skip_special_tokens = true;
  // Added to the raw logit of each token before the penalties (OpenAI's logit_bias), sorted by token, one
  // entry per token, each bias in [-100, 100].
  std::vector<LogitBias> logit_bias;
  // When not empty: every other token is masked (vLLM's allowed_token_ids). Sorted, distinct.
  std::vector<int32_t> allowed_token_ids;
  // Special tokens decoded into the text even with skip_special_tokens (not a request field: the server sets
  // it for the markers its reasoning and tool-call parsers read).
  std::vector<int32_t> keep_special_token_ids;

  // Throws InvalidArgument whose param is the field and whose message starts with the field's name and
  // gives the allowed range, e.g. "temperature must be a finite number >= 0, got nan" (sampling_params.cpp).
  // With the vocabulary also the checks that need it: the token ids of logit_bias and allowed_token_ids
  // inside it, and a token left to sample while min_tokens masks EOS and stop_token_ids.
  void validate() const;
  void validate(const VocabularyLimits& vocabulary) const;
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

struct SampledToken {
  int32_t token = 0;
  float logprob = 0.0f;                    // log-softmax of the raw logits (before temperature / penalties)
  std::vector<TokenLogprob> top_logprobs;  // params.logprobs of them, most likely first (ties: lower id)
};

// Everything the sampler needs to know about one sequence.
struct SamplingContext {
  std::span<const int32_t> prompt_ids = {};
  std::span<const int32_t> output_ids = {};  // generated so far
  // From the model config; masked (with stop_token_ids) while output_ids.size() < min_tokens.
  std::span<const int32_t> eos_token_ids = {};
};

// Holds no state: everything about a sequence comes in through the arguments, so one Sampler serves every
// sequence, from any number of threads at once. Each thread that samples keeps its own working buffers
// (up to about 3.5 MB at a vocabulary of 129280) so that a call does not fault in fresh pages.
class Sampler {
 public:
  // logits: one row [vocab]; rng: the sequence's own generator (seeded from params.seed when given, so a
  // seeded request samples the same tokens whatever it is batched with). SamplingError when the row has
  // NaN or no finite maximum, or every token is masked.
  [[nodiscard]] SampledToken sample(std::span<const float> logits, const SamplingParams& params,
                                    const SamplingContext& context, std::mt19937_64& rng) const;
  // The same with the draw's uniform given: sample(..., rng) is sample(..., draw_uniform(params, rng)).
  [[nodiscard]] SampledToken sample(std::span<const float> logits, const SamplingParams& params,
                                    const SamplingContext& context, double uniform) const;

  // temperature below 1e-5: the argmax, ties to the lower id, and no random number drawn.
  [[nodiscard]] static bool is_greedy(const SamplingParams& params);
  // The one random number a sample consumes: a double in [0, 1) from the top 53 bits of one output of rng
  // (the same on every standard library); 0 without touching rng for a greedy request.
  [[nodiscard]] static double draw_uniform(const SamplingParams& params, std::mt19937_64& rng);

  // log-softmax top-N of a row, for prompt logprobs (echo): the logprob of `token` plus the top N.
  [[nodiscard]] static SampledToken score(std::span<const float> logits, int32_t token, int64_t top_n);

  // The first stage of sample(), in place on a copy of the row: logit += logit_bias, then the repetition
  // penalty on every token of prompt + output (logit / penalty when > 0, logit * penalty otherwise; once per
  // distinct token), then logit -= frequency_penalty * count + presence_penalty for each token in the
  // output, then -inf on every token outside allowed_token_ids (when given) and on EOS and stop_token_ids
  // while the output is shorter than min_tokens. A finite logit stays finite: a result beyond float's range
  // saturates at +-FLT_MAX (a repetition_penalty of 1e-300 ranks the positive logits of the context first,
  // all equal), so that no parameter in range leaves the row without a finite maximum. Public so it can be
  // checked by value.
  static void apply_penalties(std::span<float> logits, const SamplingParams& params,
                              const SamplingContext& context);
};

// What Backend::sample needs to do on the device what Sampler::sample(logits row, params, context, uniform)
// does on the host. vocab: the row's length (stop ids outside it are never masked, as on the host).
[[nodiscard]] SampleRequest to_sample_request(const SamplingParams& params, const SamplingContext& context,
                                              int32_t row, double uniform, int64_t vocab);
[[nodiscard]] SampledToken to_sampled_token(const SampleResult& result);

namespace detail {
// exp(x) for x <= 0 within a few float ulps, and exactly 0 below -86 (e^-86 = 4e-38, nothing beside the 1 the
// most likely token weighs). Plain arithmetic and bit moves, so the loops over a row that call it vectorize,
// which they do not with std::exp. Exposed for its test.
[[nodiscard]] float exp_nonpositive(float x);
}  // namespace detail

}  // namespace ds
