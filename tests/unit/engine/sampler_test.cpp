#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "engine/sampler.h"
#include "util/check.h"

namespace ds {
namespace {

TEST(Sampler, GreedyPicksTheArgmaxAndReportsItsLogprob) {
  Sampler s(0);
  SamplingParams p;
  p.temperature = 0;
  const std::vector<float> logits = {0.0f, 2.0f, 1.0f};
  const SampledToken t = s.sample(logits, p);
  EXPECT_EQ(t.token, 1);
  // log(e^2 / (1 + e^2 + e)) = 2 - log(1 + e + e^2)
  EXPECT_NEAR(t.logprob, 2.0 - std::log(1.0 + std::exp(1.0) + std::exp(2.0)), 1e-6);
}

TEST(Sampler, SameSeedSameTokens) {
  SamplingParams p;
  p.temperature = 1.0;
  const std::vector<float> logits = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
  Sampler a(42), b(42);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.sample(logits, p).token, b.sample(logits, p).token);
}

TEST(Sampler, TopKAndTopPRestrictTheCandidates) {
  Sampler s(1);
  SamplingParams p;
  // Probabilities 0.5, 0.3, 0.2 (logits are their logs).
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  p.top_k = 2;
  for (int i = 0; i < 200; ++i) EXPECT_NE(s.sample(logits, p).token, 2);
  p.top_k = -1;
  p.top_p = 0.5;  // the first token alone already holds 0.5
  for (int i = 0; i < 200; ++i) EXPECT_EQ(s.sample(logits, p).token, 0);
}

TEST(Sampler, FrequenciesFollowTheDistribution) {
  Sampler s(3);
  SamplingParams p;
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  std::map<int, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[s.sample(logits, p).token];
  // Chi-square with 2 degrees of freedom; 13.8 is the 0.001 critical value.
  const double expected[] = {0.5, 0.3, 0.2};
  double chi2 = 0;
  for (int k = 0; k < 3; ++k) chi2 += std::pow(counts[k] - n * expected[k], 2) / (n * expected[k]);
  EXPECT_LT(chi2, 13.8);
}

TEST(SamplingParams, RejectsOutOfRangeValues) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_THROW(p.validate(), InvalidArgument);
  p.temperature = NAN;
  EXPECT_THROW(p.validate(), InvalidArgument);
  p = {};
  p.top_p = 1.5;
  EXPECT_THROW(p.validate(), InvalidArgument);
  p = {};
  p.top_k = 0;
  EXPECT_THROW(p.validate(), InvalidArgument);
  p = {};
  p.max_tokens = 0;
  EXPECT_THROW(p.validate(), InvalidArgument);
}

}  // namespace
}  // namespace ds
