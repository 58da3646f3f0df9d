#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "util/check.h"

namespace ds {

void SamplingParams::validate() const {
  DS_REQUIRE(std::isfinite(temperature) && temperature >= 0.0, InvalidArgument,
             "temperature must be a finite number >= 0, got {}", temperature);
  DS_REQUIRE(std::isfinite(top_p) && top_p > 0.0 && top_p <= 1.0, InvalidArgument, "top_p must be in (0, 1], got {}",
             top_p);
  DS_REQUIRE(top_k == -1 || top_k >= 1, InvalidArgument, "top_k must be -1 (off) or >= 1, got {}", top_k);
  DS_REQUIRE(max_tokens >= 1, InvalidArgument, "max_tokens must be >= 1, got {}", max_tokens);
}

SampledToken Sampler::sample(std::span<const float> logits, const SamplingParams& params) {
  DS_CHECK(!logits.empty(), "sampling from empty logits");
  const size_t n = logits.size();
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double log_denom = 0.0;
  for (float l : logits) log_denom += std::exp(static_cast<double>(l - max_logit));
  log_denom = std::log(log_denom) + max_logit;
  auto logprob_of = [&](int32_t id) { return static_cast<float>(logits[static_cast<size_t>(id)] - log_denom); };

  if (params.temperature == 0.0) {
    // Greedy; the lowest id wins a tie, as torch.argmax does.
    const auto it = std::max_element(logits.begin(), logits.end());
    const auto id = static_cast<int32_t>(it - logits.begin());
    return {id, logprob_of(id)};
  }
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)]; });
  size_t keep = n;
  if (params.top_k > 0) keep = std::min(keep, static_cast<size_t>(params.top_k));
  std::vector<double> probs(keep);
  double sum = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    probs[i] = std::exp((static_cast<double>(logits[static_cast<size_t>(order[i])]) - max_logit) / params.temperature);
    sum += probs[i];
  }
  if (params.top_p < 1.0) {
    // Smallest prefix of the sorted distribution whose mass reaches top_p (always at least one token).
    double mass = 0.0;
    size_t cut = 0;
    while (cut < keep) {
      mass += probs[cut] / sum;
      ++cut;
      if (mass >= params.top_p) break;
    }
    keep = cut;
    probs.resize(keep);
    sum = std::accumulate(probs.begin(), probs.end(), 0.0);
  }
  const double u = std::uniform_real_distribution<double>(0.0, sum)(rng_);
  double acc = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    acc += probs[i];
    if (u < acc) return {order[i], logprob_of(order[i])};
  }
  return {order[keep - 1], logprob_of(order[keep - 1])};
}

}  // namespace ds
