#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "util/check.h"

namespace ds {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

SampledToken sample_once(const std::vector<float>& logits, const SamplingParams& params,
                         const SamplingContext& context = {}, uint64_t seed = 0) {
  std::mt19937_64 rng(seed);
  return Sampler().sample(logits, params, context, rng);
}

double log_sum_exp(const std::vector<double>& x) {
  double sum = 0.0;
  for (const double v : x) sum += std::exp(v);
  return std::log(sum);
}

// ---- greedy, logprobs, ties ----

TEST(Sampler, GreedyPicksTheArgmaxAndReportsItsRawLogprob) {
  SamplingParams p;
  p.temperature = 0;
  const SampledToken t = sample_once({0.0f, 2.0f, 1.0f}, p);
  EXPECT_EQ(t.token, 1);
  // log(e^2 / (1 + e + e^2)) = 2 - log(1 + e + e^2) = -0.40761
  EXPECT_NEAR(t.logprob, 2.0 - std::log(1.0 + std::exp(1.0) + std::exp(2.0)), 1e-6);
  EXPECT_NEAR(t.logprob, -0.40761, 1e-5);
  EXPECT_TRUE(t.top_logprobs.empty());  // logprobs not requested
}

TEST(Sampler, GreedyTieGoesToTheLowestIdAndDrawsNothing) {
  SamplingParams p;
  p.temperature = 0;
  std::mt19937_64 rng(5);
  const std::mt19937_64 before = rng;
  EXPECT_EQ(Sampler().sample(std::vector<float>{1.0f, 3.0f, 3.0f, 0.0f}, p, {}, rng).token, 1);
  p.temperature = 1e-6;  // below vLLM's 1e-5: greedy too
  EXPECT_EQ(Sampler().sample(std::vector<float>{1.0f, 3.0f, 3.0f, 0.0f}, p, {}, rng).token, 1);
  EXPECT_EQ(rng, before);
}

TEST(Sampler, TopLogprobsAreRawMostLikelyFirstTiesByLowerId) {
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = 3;
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f, 0.0f};
  const double lse = log_sum_exp({1, 3, 2, 3, 0});  // log(e + 2e^3 + e^2 + 1) = log(51.278) = 3.9373
  const SampledToken t = sample_once(logits, p);
  EXPECT_EQ(t.token, 1);
  EXPECT_NEAR(t.logprob, 3.0 - lse, 1e-6);
  ASSERT_EQ(t.top_logprobs.size(), 3u);
  EXPECT_EQ(t.top_logprobs[0].token, 1);
  EXPECT_NEAR(t.top_logprobs[0].logprob, 3.0 - lse, 1e-6);
  EXPECT_EQ(t.top_logprobs[1].token, 3);
  EXPECT_NEAR(t.top_logprobs[1].logprob, 3.0 - lse, 1e-6);
  EXPECT_EQ(t.top_logprobs[2].token, 2);
  EXPECT_NEAR(t.top_logprobs[2].logprob, 2.0 - lse, 1e-6);
  EXPECT_NEAR(t.top_logprobs[2].logprob, -1.9373, 1e-4);

  p.logprobs = 0;
  EXPECT_TRUE(sample_once(logits, p).top_logprobs.empty());
}

TEST(Sampler, LogprobsIgnoreTemperatureAndPenalties) {
  SamplingParams p;
  p.temperature = 0.3;
  p.repetition_penalty = 1.5;
  p.logprobs = 1;
  const std::vector<int32_t> output = {0};
  // Penalized, token 0 is 3 / 1.5 = 2 < 2.5: the draw at T = 0.3 is token 1 with prob 1 / (1 + e^(-0.5/0.3))
  // = 0.84, but the logprobs are those of the raw row.
  const SampledToken t = sample_once({3.0f, 2.5f}, p, {.output_ids = output}, 11);
  const double lse = log_sum_exp({3.0, 2.5});
  EXPECT_NEAR(t.logprob, (t.token == 0 ? 3.0 : 2.5) - lse, 1e-6);
  ASSERT_EQ(t.top_logprobs.size(), 1u);
  EXPECT_EQ(t.top_logprobs[0].token, 0);
  EXPECT_NEAR(t.top_logprobs[0].logprob, 3.0 - lse, 1e-6);
}

TEST(Sampler, ScoreGivesTheTokenAndTheTopN) {
  const std::vector<float> logits = {0.0f, 1.0f, 2.0f, 1.0f};
  const double lse = log_sum_exp({0, 1, 2, 1});  // log(1 + 2e + e^2) = log(13.826) = 2.6265
  const SampledToken s = Sampler::score(logits, 0, 2);
  EXPECT_EQ(s.token, 0);
  EXPECT_NEAR(s.logprob, -lse, 1e-6);
  EXPECT_NEAR(s.logprob, -2.6265, 1e-4);
  ASSERT_EQ(s.top_logprobs.size(), 2u);
  EXPECT_EQ(s.top_logprobs[0].token, 2);
  EXPECT_NEAR(s.top_logprobs[0].logprob, 2.0 - lse, 1e-6);
  EXPECT_EQ(s.top_logprobs[1].token, 1);  // ties with 3, lower id first
  EXPECT_NEAR(s.top_logprobs[1].logprob, 1.0 - lse, 1e-6);
  EXPECT_TRUE(Sampler::score(logits, 3, 0).top_logprobs.empty());
  EXPECT_EQ(Sampler::score(logits, 3, 20).top_logprobs.size(), 4u);  // capped at the vocabulary
}

TEST(Sampler, RejectsARowWithNaNOrNothingToSample) {
  // A SamplingError, which the engine turns into the end of that one request (never an InternalError, which
  // would end the engine).
  SamplingParams p;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto status_of = [&](const std::function<void()>& f) {
    try {
      f();
    } catch (const SamplingError& e) {
      return e.status();
    }
    return SampleStatus::kOk;
  };
  EXPECT_EQ(status_of([&] { (void)sample_once({0.0f, nan, 1.0f}, p); }), SampleStatus::kBadLogits);
  EXPECT_EQ(status_of([&] { (void)sample_once({0.0f, -nan, 1.0f}, p); }), SampleStatus::kBadLogits);
  EXPECT_EQ(status_of([&] {
              (void)Sampler::score(std::vector<float>{-nan, 0.0f}, 1, 0);
            }),
            SampleStatus::kBadLogits);
  EXPECT_EQ(status_of([&] { (void)sample_once({-kInf, -kInf}, p); }), SampleStatus::kBadLogits);
  p.min_tokens = 1;  // masks the only token that could be drawn
  const std::vector<int32_t> eos = {1};
  EXPECT_EQ(status_of([&] {
              (void)sample_once({-kInf, 0.0f}, p, {.eos_token_ids = eos});
            }),
            SampleStatus::kAllMasked);
  p.temperature = 0.0;  // greedy too
  EXPECT_EQ(status_of([&] {
              (void)sample_once({-kInf, 0.0f}, p, {.eos_token_ids = eos});
            }),
            SampleStatus::kAllMasked);
}

// ---- penalties and min_tokens ----

std::vector<float> penalized(std::vector<float> logits, const SamplingParams& p, const SamplingContext& c) {
  Sampler::apply_penalties(logits, p, c);
  return logits;
}

TEST(Penalties, RepetitionDividesPositiveMultipliesNegativeOncePerToken) {
  SamplingParams p;
  p.repetition_penalty = 2.0;
  const std::vector<int32_t> prompt = {0, 1, 0};
  const std::vector<int32_t> output = {1, 4};
  const auto l = penalized({2.0f, -1.0f, 0.5f, 3.0f, 0.0f}, p, {.prompt_ids = prompt, .output_ids = output});
  EXPECT_EQ(l, (std::vector<float>{1.0f, -2.0f, 0.5f, 3.0f, 0.0f}));  // 2/2, -1*2, untouched, untouched, 0*2
}

TEST(Penalties, FrequencyAndPresenceCountOnlyTheOutput) {
  SamplingParams p;
  p.frequency_penalty = 0.5;
  p.presence_penalty = 0.25;
  const std::vector<int32_t> prompt = {0, 4};
  const std::vector<int32_t> output = {3, 3, 4, 3};
  const auto l = penalized({2.0f, 1.0f, 0.5f, 3.0f, 1.0f}, p, {.prompt_ids = prompt, .output_ids = output});
  // token 3: 3 - 0.5 * 3 - 0.25 = 1.25; token 4: 1 - 0.5 * 1 - 0.25 = 0.25; the prompt's token 0 untouched
  EXPECT_EQ(l, (std::vector<float>{2.0f, 1.0f, 0.5f, 1.25f, 0.25f}));

  p.frequency_penalty = 0.0;
  p.presence_penalty = -1.0;  // negative encourages
  const auto m = penalized({2.0f, 1.0f, 0.5f, 3.0f, 1.0f}, p, {.prompt_ids = prompt, .output_ids = output});
  EXPECT_EQ(m, (std::vector<float>{2.0f, 1.0f, 0.5f, 4.0f, 2.0f}));
}

TEST(Penalties, RepetitionComesBeforeFrequency) {
  SamplingParams p;
  p.repetition_penalty = 1.5;
  p.frequency_penalty = 0.5;
  const std::vector<int32_t> output = {0, 0};
  // (3 / 1.5) - 0.5 * 2 = 1, where the other order would give (3 - 1) / 1.5 = 1.333
  EXPECT_EQ(penalized({3.0f, 1.0f}, p, {.output_ids = output}), (std::vector<float>{1.0f, 1.0f}));
}

TEST(Penalties, PenaltyFlipsTheGreedyChoice) {
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 1.5;
  const std::vector<int32_t> output = {0};
  const SampledToken t = sample_once({3.0f, 2.5f}, p, {.output_ids = output});
  EXPECT_EQ(t.token, 1);  // 3 / 1.5 = 2 < 2.5
  EXPECT_NEAR(t.logprob, 2.5 - log_sum_exp({3.0, 2.5}), 1e-6);
  EXPECT_EQ(sample_once({3.0f, 2.5f}, p).token, 0);  // nothing generated yet
}

TEST(MinTokens, MasksEosAndStopTokenIdsUntilEnoughTokensExist) {
  SamplingParams p;
  p.temperature = 0;
  p.min_tokens = 2;
  p.stop_token_ids = {3, 1000};  // an id past the vocabulary is ignored
  const std::vector<float> logits = {0.0f, 5.0f, 1.0f, 4.0f};
  const std::vector<int32_t> eos = {1};
  const std::vector<int32_t> one = {2};
  const std::vector<int32_t> two = {2, 2};
  EXPECT_EQ(penalized(logits, p, {.eos_token_ids = eos}), (std::vector<float>{0.0f, -kInf, 1.0f, -kInf}));
  const SampledToken t = sample_once(logits, p, {.output_ids = one, .eos_token_ids = eos});
  EXPECT_EQ(t.token, 2);
  EXPECT_NEAR(t.logprob, 1.0 - log_sum_exp({0, 5, 1, 4}), 1e-6);  // raw, as if nothing were masked
  EXPECT_EQ(sample_once(logits, p, {.output_ids = two, .eos_token_ids = eos}).token, 1);
  p.min_tokens = 0;
  EXPECT_EQ(sample_once(logits, p, {.eos_token_ids = eos}).token, 1);
}

TEST(MinTokens, MaskedTokensAreNeverSampled) {
  SamplingParams p;
  p.min_tokens = 1;
  const std::vector<int32_t> eos = {0};
  std::mt19937_64 rng(3);
  for (int i = 0; i < 2000; ++i)
    EXPECT_NE(Sampler().sample(std::vector<float>{3.0f, 0.0f, 0.0f}, p, {.eos_token_ids = eos}, rng).token,
              0);
}

// ---- seeds ----

TEST(Sampler, SameGeneratorStateSameTokensWhateverElseIsSampled) {
  SamplingParams a;
  a.temperature = 1.0;
  SamplingParams b;
  b.temperature = 0.7;
  b.top_p = 0.9;
  const std::vector<float> row_a = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
  const std::vector<float> row_b = {1.0f, 0.0f, 2.0f, 0.5f};
  const Sampler s;

  std::mt19937_64 alone(7);
  std::vector<int32_t> tokens_alone;
  for (int i = 0; i < 200; ++i) tokens_alone.push_back(s.sample(row_a, a, {}, alone).token);

  std::mt19937_64 again(7);
  std::mt19937_64 other(8);
  std::vector<int32_t> tokens_batched;
  for (int i = 0; i < 200; ++i) {
    (void)s.sample(row_b, b, {}, other);
    tokens_batched.push_back(s.sample(row_a, a, {}, again).token);
    (void)s.sample(row_b, b, {}, other);
  }
  EXPECT_EQ(tokens_alone, tokens_batched);

  std::mt19937_64 different(9);
  std::vector<int32_t> tokens_different;
  for (int i = 0; i < 200; ++i) tokens_different.push_back(s.sample(row_a, a, {}, different).token);
  EXPECT_NE(tokens_alone, tokens_different);
}

// ---- the sampled distribution: chi-square goodness of fit ----

// Chi-square critical values at p = 0.001 by degrees of freedom.
double chi_square_critical_p001(size_t df) {
  static const double kTable[] = {0, 10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877};
  return kTable[df];
}

struct Fit {
  double chi2 = 0.0;
  size_t df = 0;
  int64_t outside = 0;  // draws of tokens whose expected probability is 0
};

// expected: probabilities per category, summing to 1; category_of maps a token to its category.
Fit draw_and_fit(const std::vector<float>& logits, const SamplingParams& p,
                 const std::vector<double>& expected, int64_t draws, uint64_t seed,
                 const std::function<size_t(int32_t)>& category_of = {}) {
  std::vector<int64_t> counts(expected.size(), 0);
  std::mt19937_64 rng(seed);
  const Sampler s;
  for (int64_t i = 0; i < draws; ++i) {
    const int32_t token = s.sample(logits, p, {}, rng).token;
    ++counts[category_of ? category_of(token) : static_cast<size_t>(token)];
  }
  Fit fit;
  for (size_t k = 0; k < expected.size(); ++k) {
    if (expected[k] == 0.0) {
      fit.outside += counts[k];
      continue;
    }
    const double e = expected[k] * static_cast<double>(draws);
    fit.chi2 += (static_cast<double>(counts[k]) - e) * (static_cast<double>(counts[k]) - e) / e;
    ++fit.df;
  }
  --fit.df;
  return fit;
}

// q = 0.30, 0.25, 0.20, 0.12, 0.08, 0.05 at temperature 1.
const std::vector<double> kQ = {0.30, 0.25, 0.20, 0.12, 0.08, 0.05};

std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> out;
  for (const double q : probs) out.push_back(static_cast<float>(std::log(q)));
  return out;
}

// q^power restricted to the first `keep` tokens, renormalized.
std::vector<double> expected_of(double power, size_t keep) {
  std::vector<double> e(kQ.size(), 0.0);
  double sum = 0.0;
  for (size_t i = 0; i < keep; ++i) sum += e[i] = std::pow(kQ[i], power);
  for (double& v : e) v /= sum;
  return e;
}

void expect_fits(const SamplingParams& p, const std::vector<double>& expected, uint64_t seed) {
  const Fit fit = draw_and_fit(logits_of(kQ), p, expected, 40000, seed);
  EXPECT_EQ(fit.outside, 0);
  EXPECT_LT(fit.chi2, chi_square_critical_p001(fit.df)) << "df " << fit.df;
}

TEST(SamplerDistribution, TemperatureOneIsTheSoftmax) {
  expect_fits({}, kQ, 101);
}

TEST(SamplerDistribution, TemperatureHalfSquaresTheProbabilities) {
  // softmax(log q / 0.5) = q^2 / sum q^2: 0.417, 0.290, 0.185, 0.067, 0.030, 0.012
  SamplingParams p;
  p.temperature = 0.5;
  expect_fits(p, expected_of(2.0, 6), 102);
}

TEST(SamplerDistribution, TemperatureTwoTakesTheSquareRoot) {
  // sqrt q / sum sqrt q: 0.214, 0.195, 0.175, 0.135, 0.110, 0.087
  SamplingParams p;
  p.temperature = 2.0;
  expect_fits(p, expected_of(0.5, 6), 103);
}

TEST(SamplerDistribution, TopKKeepsTheKMostLikely) {
  // 0.30, 0.25, 0.20 over 0.75: 0.4, 0.333, 0.267
  SamplingParams p;
  p.top_k = 3;
  expect_fits(p, expected_of(1.0, 3), 104);
}

TEST(SamplerDistribution, TopPKeepsTheSmallestPrefixReachingP) {
  // cumulative 0.30, 0.55, 0.75, 0.87: the mass before the 4th token (0.75) is still < 0.8, so 4 are kept
  SamplingParams p;
  p.top_p = 0.8;
  expect_fits(p, expected_of(1.0, 4), 105);
}

TEST(SamplerDistribution, TopPAppliesToTheTopKRenormalized) {
  // top-k 3 leaves 0.4, 0.333, 0.267: cumulative 0.4, 0.733, so top_p 0.7 keeps 2 (over the original
  // distribution it would keep 3).
  SamplingParams p;
  p.top_k = 3;
  p.top_p = 0.7;
  expect_fits(p, expected_of(1.0, 2), 106);
}

TEST(SamplerDistribution, MinPDropsTokensBelowAFractionOfTheMax) {
  // threshold 0.3 * 0.30 = 0.09: keeps 0.30, 0.25, 0.20, 0.12
  SamplingParams p;
  p.min_p = 0.3;
  expect_fits(p, expected_of(1.0, 4), 107);
}

TEST(SamplerDistribution, MinPAppliesAfterTemperature) {
  // at T = 0.5 the probabilities are q^2 / 0.2158 = 0.417, 0.290, 0.185, 0.067, ...: threshold
  // 0.3 * 0.417 = 0.125 keeps three
  SamplingParams p;
  p.temperature = 0.5;
  p.min_p = 0.3;
  expect_fits(p, expected_of(2.0, 3), 108);
}

TEST(SamplerDistribution, TopKTiesGoToTheLowerIds) {
  SamplingParams p;
  p.top_k = 2;
  const Fit fit = draw_and_fit({1.0f, 1.0f, 1.0f, 0.0f}, p, {0.5, 0.5, 0.0, 0.0}, 20000, 109);
  EXPECT_EQ(fit.outside, 0);
  EXPECT_LT(fit.chi2, chi_square_critical_p001(fit.df));
}

TEST(SamplerDistribution, TopPOnALargeShuffledVocabulary) {
  // 4096 tokens; the token of rank r (0 = most likely) has logit -0.001 r and sits at id (1237 r) mod 4096
  // (1237 is odd, so every id is used once). Enough candidates that the cut is found through the buckets.
  constexpr size_t kVocab = 4096;
  std::vector<float> logits(kVocab);
  std::vector<size_t> rank_of(kVocab);
  for (size_t r = 0; r < kVocab; ++r) {
    const size_t id = (1237 * r) % kVocab;
    logits[id] = static_cast<float>(-0.001 * static_cast<double>(r));
    rank_of[id] = r;
  }
  SamplingParams p;
  p.top_p = 0.9;
  // The nucleus by formula: the smallest number of ranks whose mass reaches 0.9 of the total (about 2160).
  std::vector<double> weight(kVocab);
  double total = 0.0;
  for (size_t id = 0; id < kVocab; ++id)
    total += weight[rank_of[id]] = std::exp(static_cast<double>(logits[id]));
  size_t cut = 0;
  for (double mass = 0.0; mass < 0.9 * total; ++cut) mass += weight[cut];
  EXPECT_NEAR(static_cast<double>(cut), 2160.0, 10.0);
  // Eight bins of equal rank width inside the nucleus, and one for everything outside it.
  constexpr size_t kBins = 8;
  const size_t width = (cut + kBins - 1) / kBins;
  std::vector<double> expected(kBins + 1, 0.0);
  double kept = 0.0;
  for (size_t r = 0; r < cut; ++r) kept += weight[r];
  for (size_t r = 0; r < cut; ++r) expected[r / width] += weight[r] / kept;
  const Fit fit = draw_and_fit(logits, p, expected, 20000, 110, [&](int32_t token) {
    const size_t r = rank_of[static_cast<size_t>(token)];
    return r < cut ? r / width : kBins;
  });
  EXPECT_EQ(fit.outside, 0);
  EXPECT_LT(fit.chi2, chi_square_critical_p001(fit.df)) << "df " << fit.df;
}

TEST(Sampler, TopPAlwaysKeepsTheTokenThatCrossesP) {
  // 0.5, 0.3, 0.2: top_p 0.49 keeps only the first; 0.51 also the second (whose predecessors hold 0.5 < 0.51)
  SamplingParams p;
  p.top_p = 0.49;
  const std::vector<float> logits = logits_of({0.5, 0.3, 0.2});
  std::mt19937_64 rng(1);
  const Sampler s;
  for (int i = 0; i < 500; ++i) EXPECT_EQ(s.sample(logits, p, {}, rng).token, 0);
  p.top_p = 0.51;
  int ones = 0;
  for (int i = 0; i < 500; ++i) {
    const int32_t t = s.sample(logits, p, {}, rng).token;
    EXPECT_NE(t, 2);
    ones += t == 1;
  }
  EXPECT_GT(ones, 100);  // expected 500 * 0.375 = 187
}

// 2048 tokens in four runs of 512 equal logits (0, -1, -2, -3); top_k = k cuts inside a run, where the
// lower ids must win the tie. (Up to k = 1024 the sampler takes the top k with a heap; above, by buckets.)
void expect_top_k_on_runs(int64_t k, uint64_t seed) {
  std::vector<float> logits(2048);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = -static_cast<float>(i / 512);
  SamplingParams p;
  p.top_k = k;
  const auto kept = static_cast<size_t>(k);
  // Categories: the runs before the cut, the kept part of the cut run, and (expected 0) the rest.
  const size_t cut_run = kept / 512;
  std::vector<double> expected(cut_run + 2, 0.0);
  double sum = 0.0;
  for (size_t i = 0; i < kept; ++i) sum += std::exp(-static_cast<double>(i / 512));
  for (size_t i = 0; i < kept; ++i) expected[i / 512] += std::exp(-static_cast<double>(i / 512)) / sum;
  const Fit fit = draw_and_fit(logits, p, expected, 20000, seed, [&](int32_t token) {
    const auto t = static_cast<size_t>(token);
    return t < kept ? t / 512 : cut_run + 1;
  });
  EXPECT_EQ(fit.outside, 0);
  EXPECT_LT(fit.chi2, chi_square_critical_p001(fit.df)) << "df " << fit.df;
}

TEST(SamplerDistribution, SmallTopKOnALargeVocabularyCutsInsideATie) {
  // keeps run 0 and ids 512..699 of run 1: 512 : 188 e^-1 = 0.881 : 0.119.
  expect_top_k_on_runs(700, 111);
}

TEST(SamplerDistribution, LargeTopKOnALargeVocabularyCutsInsideATie) {
  // keeps runs 0 and 1 and ids 1024..1299 of run 2: 512 : 512 e^-1 : 276 e^-2 = 0.694 : 0.255 : 0.051.
  expect_top_k_on_runs(1300, 112);
}

// ---- the draw: one uniform, an inverse CDF over the kept tokens in id order ----

// Ids 0, 3 and 5 survive top-k = 3 (logits 1, 0, 2; every other token -5); at temperature 1 they weigh
// e^-1 = 0.3679, e^-2 = 0.1353 and 1 (total 1.5032) and the walk goes in id order: token 0 owns
// u in [0, 0.2447), token 3 [0.2447, 0.3347), token 5 [0.3347, 1). Rank order would give token 5 to u = 0.
TEST(SamplerDraw, KeptTokensAreWalkedInIdOrder) {
  const std::vector<float> logits = {1.0f, -5.0f, -5.0f, 0.0f, -5.0f, 2.0f, -5.0f};
  SamplingParams p;
  p.top_k = 3;
  const Sampler s;
  EXPECT_EQ(s.sample(logits, p, {}, 0.0).token, 0);
  EXPECT_EQ(s.sample(logits, p, {}, 0.24).token, 0);
  EXPECT_EQ(s.sample(logits, p, {}, 0.25).token, 3);
  EXPECT_EQ(s.sample(logits, p, {}, 0.33).token, 3);
  EXPECT_EQ(s.sample(logits, p, {}, 0.34).token, 5);
  EXPECT_EQ(s.sample(logits, p, {}, 0.999).token, 5);
  // top-p = 0.7 keeps token 5 (0.665 of the three's mass) and token 0, which crosses 0.7: 0.3679 : 1, so
  // token 0 owns u in [0, 0.2689).
  p.top_p = 0.7;
  EXPECT_EQ(s.sample(logits, p, {}, 0.26).token, 0);
  EXPECT_EQ(s.sample(logits, p, {}, 0.28).token, 5);
  // min-p = 0.2 drops token 3 (weight 0.135 < 0.2) from the top-k three: token 0 owns [0, 0.2689) again.
  p.top_p = 1.0;
  p.min_p = 0.2;
  EXPECT_EQ(s.sample(logits, p, {}, 0.26).token, 0);
  EXPECT_EQ(s.sample(logits, p, {}, 0.28).token, 5);
}

TEST(SamplerDraw, TheGeneratorGivesOneUniformAndGreedyTakesNone) {
  const std::vector<float> logits = {0.3f, 0.1f, 0.9f, 0.5f};
  SamplingParams p;
  p.temperature = 0.8;
  std::mt19937_64 a(42), b(42);
  for (int i = 0; i < 50; ++i) {
    const double u = Sampler::draw_uniform(p, a);
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
    EXPECT_EQ(Sampler().sample(logits, p, {}, u).token, Sampler().sample(logits, p, {}, b).token);
  }
  EXPECT_EQ(a, b);
  p.temperature = 0.0;
  const std::mt19937_64 before = a;
  EXPECT_EQ(Sampler::draw_uniform(p, a), 0.0);
  EXPECT_EQ(a, before);
}

TEST(SamplerDraw, DeviceRequestCarriesTheParams) {
  SamplingParams p;
  p.temperature = 0.5;
  p.top_k = -1;
  p.top_p = 0.9;
  p.min_p = 0.05;
  p.repetition_penalty = 1.2;
  p.logprobs = 5;
  p.min_tokens = 2;
  p.stop_token_ids = {7, 1000};  // 1000 is outside the vocabulary of 10: never masked
  const std::vector<int32_t> ids = {1, 2, 3};
  const std::vector<int32_t> eos = {9};
  const SamplingContext context{std::span(ids).first(2), std::span(ids).last(1), eos};
  const SampleRequest r = to_sample_request(p, context, 4, 0.25, 10);
  EXPECT_EQ(r.row, 4);
  EXPECT_FALSE(r.greedy);
  EXPECT_EQ(r.inv_temperature, 2.0f);
  EXPECT_EQ(r.top_k, 0);
  EXPECT_EQ(r.min_p, 0.05f);
  EXPECT_EQ(r.prompt_ids.size(), 2u);
  EXPECT_EQ(r.output_ids.size(), 1u);
  EXPECT_EQ(r.masked_ids, (std::vector<int32_t>{9, 7}));
  EXPECT_EQ(r.num_top_logprobs, 5);
  EXPECT_EQ(r.uniform, 0.25);
  const SampleRequest later = to_sample_request(p, {std::span(ids).first(1), std::span(ids).last(2), eos}, 0, 0.5, 10);
  EXPECT_TRUE(later.masked_ids.empty());  // two outputs: min_tokens reached
}

TEST(ExpNonpositive, MatchesStdExpToAFewUlps) {
  EXPECT_EQ(detail::exp_nonpositive(0.0f), 1.0f);
  EXPECT_EQ(detail::exp_nonpositive(-kInf), 0.0f);
  EXPECT_EQ(detail::exp_nonpositive(-86.5f), 0.0f);
  EXPECT_NEAR(detail::exp_nonpositive(-1.0f), 0.36787944, 1e-7);
  double worst = 0.0;
  for (int i = 0; i <= 860000; ++i) {
    const float x = -0.0001f * static_cast<float>(i);
    const double exact = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(detail::exp_nonpositive(x) - exact) / exact);
  }
  EXPECT_LT(worst, 4e-7);  // 2^-23 = 1.2e-7 is one ulp
}

// ---- validation ----

struct BadValue {
  const char* field;
  std::function<void(SamplingParams&)> set;
};

TEST(SamplingParams, RejectsEachBadValueNamingTheField) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<BadValue> cases = {
      {"temperature", [&](SamplingParams& p) { p.temperature = -0.1; }},
      {"temperature", [&](SamplingParams& p) { p.temperature = nan; }},
      {"temperature", [&](SamplingParams& p) { p.temperature = inf; }},
      {"top_p", [&](SamplingParams& p) { p.top_p = 0.0; }},
      {"top_p", [&](SamplingParams& p) { p.top_p = 1.01; }},
      {"top_p", [&](SamplingParams& p) { p.top_p = nan; }},
      {"top_k", [&](SamplingParams& p) { p.top_k = -2; }},
      {"min_p", [&](SamplingParams& p) { p.min_p = -0.01; }},
      {"min_p", [&](SamplingParams& p) { p.min_p = 1.01; }},
      {"min_p", [&](SamplingParams& p) { p.min_p = nan; }},
      {"repetition_penalty", [&](SamplingParams& p) { p.repetition_penalty = 0.0; }},
      {"repetition_penalty", [&](SamplingParams& p) { p.repetition_penalty = -1.0; }},
      {"repetition_penalty", [&](SamplingParams& p) { p.repetition_penalty = inf; }},
      {"repetition_penalty", [&](SamplingParams& p) { p.repetition_penalty = nan; }},
      {"presence_penalty", [&](SamplingParams& p) { p.presence_penalty = 2.01; }},
      {"presence_penalty", [&](SamplingParams& p) { p.presence_penalty = -2.01; }},
      {"presence_penalty", [&](SamplingParams& p) { p.presence_penalty = nan; }},
      {"frequency_penalty", [&](SamplingParams& p) { p.frequency_penalty = 2.01; }},
      {"frequency_penalty", [&](SamplingParams& p) { p.frequency_penalty = -inf; }},
      {"max_tokens", [&](SamplingParams& p) { p.max_tokens = 0; }},
      {"min_tokens", [&](SamplingParams& p) { p.min_tokens = -1; }},
      {"min_tokens", [&](SamplingParams& p) { p.min_tokens = p.max_tokens + 1; }},
      {"stop", [&](SamplingParams& p) { p.stop.assign(17, "x"); }},
      {"stop[1]",
       [&](SamplingParams& p) {
         p.stop = {"a", ""};
       }},
      {"stop[0]", [&](SamplingParams& p) { p.stop = {std::string(257, 'x')}; }},
      {"stop_token_ids[1]",
       [&](SamplingParams& p) {
         p.stop_token_ids = {2, -1};
       }},
      {"logprobs", [&](SamplingParams& p) { p.logprobs = -1; }},
      {"logprobs", [&](SamplingParams& p) { p.logprobs = 21; }},
      {"prompt_logprobs", [&](SamplingParams& p) { p.prompt_logprobs = -1; }},
      {"prompt_logprobs", [&](SamplingParams& p) { p.prompt_logprobs = 21; }},
      {"n", [&](SamplingParams& p) { p.n = 0; }},
  };
  for (const BadValue& c : cases) {
    SamplingParams p;
    c.set(p);
    try {
      p.validate();
      ADD_FAILURE() << c.field << ": accepted";
    } catch (const InvalidArgument& e) {
      const std::string message = e.what();
      EXPECT_EQ(message.rfind(std::string(c.field) + " must", 0), 0u) << message;
    }
  }
  SamplingParams p;
  p.temperature = std::numeric_limits<double>::quiet_NaN();
  try {
    p.validate();
    ADD_FAILURE() << "NaN temperature accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_STREQ(e.what(), "temperature must be a finite number >= 0, got nan");
  }
}

TEST(SamplingParams, AcceptsTheEdgesOfEachRange) {
  SamplingParams p;
  EXPECT_NO_THROW(p.validate());
  p.temperature = 0.0;
  p.top_p = 1.0;
  p.top_k = 0;
  p.min_p = 1.0;
  p.repetition_penalty = 2.0;
  p.presence_penalty = -2.0;
  p.frequency_penalty = 2.0;
  p.max_tokens = 1;
  p.min_tokens = 1;
  p.stop.assign(16, std::string(256, 'x'));
  p.stop_token_ids = {0};
  p.logprobs = 20;
  p.prompt_logprobs = 0;
  EXPECT_NO_THROW(p.validate());
  p.top_k = -1;
  p.min_p = 0.0;
  p.logprobs = 0;
  p.prompt_logprobs = 20;
  EXPECT_NO_THROW(p.validate());
}

}  // namespace
}  // namespace ds
