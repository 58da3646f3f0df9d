// logit_bias, allowed_token_ids, saturating penalties, and the checks SamplingParams::validate makes with
// the vocabulary known (issue 19: no parameter in range may leave the sampler without a token to draw).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "engine/sampler.h"
#include "util/check.h"

namespace ds {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kFloatMax = std::numeric_limits<float>::max();

std::vector<float> penalized(std::vector<float> logits, const SamplingParams& p, const SamplingContext& c) {
  Sampler::apply_penalties(logits, p, c);
  return logits;
}

TEST(SaturatingPenalties, ATinyRepetitionPenaltySaturatesInsteadOfOverflowing) {
  SamplingParams p;
  p.repetition_penalty = 1e-300;
  const std::vector<int32_t> prompt = {0, 1};
  const auto row = penalized({2.0f, -2.0f, 3.0f}, p, {.prompt_ids = prompt});
  EXPECT_EQ(row[0], kFloatMax);  // 2 / 1e-300 is beyond float: its largest value, not +inf
  EXPECT_EQ(row[1], 0.0f);       // -2 * 1e-300 rounds to -0
  EXPECT_TRUE(std::signbit(row[1]));
  EXPECT_EQ(row[2], 3.0f);  // not in the context
  // The row samples: the saturated token outweighs everything at any temperature (today's code threw "no
  // token has any weight" here, which ended the engine).
  const Sampler sampler;
  for (const double t : {1.0, 0.5, 2.0, 0.0}) {
    p.temperature = t;
    EXPECT_EQ(sampler.sample(std::vector<float>{2.0f, -2.0f, 3.0f}, p, {.prompt_ids = prompt}, 0.999).token,
              0)
        << t;
  }
}

TEST(SaturatingPenalties, AHugeRepetitionPenaltySaturatesBelowAndMaskedTokensStayMasked) {
  SamplingParams p;
  p.repetition_penalty = 1e300;
  const std::vector<int32_t> prompt = {0, 1, 2};
  const auto row = penalized({2.0f, -2.0f, -kInf, 1.0f}, p, {.prompt_ids = prompt});
  EXPECT_EQ(row[0], 0.0f);
  EXPECT_EQ(row[1], -kFloatMax);  // -2e300 saturates; it stays a token that can be drawn
  EXPECT_EQ(row[2], -kInf);       // a logit of -inf is never brought back
  EXPECT_EQ(row[3], 1.0f);
}

TEST(LogitBias, IsAddedBeforeTheRepetitionPenalty) {
  SamplingParams p;
  p.logit_bias = {{1, 5.0f}, {2, -100.0f}};
  EXPECT_EQ(penalized({0.0f, 0.0f, 0.0f}, p, {}), (std::vector<float>{0.0f, 5.0f, -100.0f}));
  p.repetition_penalty = 2.0;
  const std::vector<int32_t> prompt = {1};
  EXPECT_EQ(penalized({0.0f, 0.0f, 0.0f}, p, {.prompt_ids = prompt}),
            (std::vector<float>{0.0f, 2.5f, -100.0f}));
  // A greedy request follows the bias.
  p.temperature = 0.0;
  EXPECT_EQ(Sampler().sample(std::vector<float>{1.0f, 0.0f, 0.5f}, p, {}, 0.0).token, 1);
  // The raw logprob is reported, as vLLM does.
  EXPECT_NEAR(Sampler().sample(std::vector<float>{0.0f, 0.0f}, p, {}, 0.0).logprob, std::log(0.5), 1e-6);
}

TEST(AllowedTokenIds, MaskEveryOtherToken) {
  SamplingParams p;
  p.allowed_token_ids = {1, 3};
  EXPECT_EQ(penalized({4.0f, 1.0f, 3.0f, 0.5f}, p, {}), (std::vector<float>{-kInf, 1.0f, -kInf, 0.5f}));
  p.temperature = 0.0;
  EXPECT_EQ(Sampler().sample(std::vector<float>{4.0f, 1.0f, 3.0f, 0.5f}, p, {}, 0.0).token, 1);
  p.temperature = 1.0;
  for (const double u : {0.0, 0.5, 0.999}) {
    const int32_t t = Sampler().sample(std::vector<float>{4.0f, 1.0f, 3.0f, 0.5f}, p, {}, u).token;
    EXPECT_TRUE(t == 1 || t == 3) << t;
  }
}

// The InvalidArgument of validate(vocabulary): its param and message.
std::pair<std::string, std::string> refusal(const SamplingParams& p, int64_t vocab,
                                            std::vector<int32_t> eos = {1}) {
  try {
    p.validate({vocab, eos});
  } catch (const InvalidArgument& e) {
    return {e.param(), e.what()};
  }
  return {};
}

TEST(SamplingParamsWithVocabulary, TokenIdsOutsideTheVocabularyAreRefused) {
  SamplingParams p;
  p.logit_bias = {{3, 1.0f}, {10, 1.0f}};
  EXPECT_EQ(refusal(p, 10),
            std::make_pair(std::string("logit_bias"),
                           std::string("logit_bias has token id 10, outside the vocabulary [0, 10)")));
  p.logit_bias = {{9, 1.0f}};
  EXPECT_EQ(refusal(p, 10).first, "");
  p.allowed_token_ids = {2, 12};
  EXPECT_EQ(refusal(p, 10),
            std::make_pair(std::string("allowed_token_ids"),
                           std::string("allowed_token_ids has token id 12, outside the vocabulary [0, 10)")));
}

TEST(SamplingParamsWithVocabulary, MinTokensMustLeaveATokenToSample) {
  SamplingParams p;
  p.min_tokens = 1;
  p.stop_token_ids = {0, 2, 3, 4};  // with EOS 1: all of a vocabulary of 5
  EXPECT_EQ(refusal(p, 5),
            std::make_pair(std::string("stop_token_ids"),
                           std::string("stop_token_ids (with EOS, covering the whole vocabulary) "
                                       "leaves no token to sample while min_tokens (1) masks EOS "
                                       "and stop_token_ids")));
  EXPECT_EQ(refusal(p, 6).first, "");  // token 5 is left
  p.stop_token_ids = {0, 2, 3,
                      4, 4, 99};  // duplicates and ids outside the vocabulary count once / not at all
  EXPECT_EQ(refusal(p, 5).first, "stop_token_ids");
  p.min_tokens = 0;  // nothing is masked
  EXPECT_EQ(refusal(p, 5).first, "");

  SamplingParams allowed;
  allowed.min_tokens = 2;
  allowed.allowed_token_ids = {1, 3};
  allowed.stop_token_ids = {3};
  EXPECT_EQ(
      refusal(allowed, 10),
      std::make_pair(std::string("allowed_token_ids"),
                     std::string("allowed_token_ids leaves no token to sample while min_tokens (2) masks EOS "
                                 "and stop_token_ids")));
  allowed.allowed_token_ids = {1, 3, 4};
  EXPECT_EQ(refusal(allowed, 10).first, "");
}

TEST(SamplingParamsWithVocabulary, EveryRefusalNamesItsFieldAsParam) {
  SamplingParams p;
  p.top_p = 0.0;
  EXPECT_EQ(refusal(p, 10).first, "top_p");
  p = {};
  p.stop = {"a", ""};
  EXPECT_EQ(refusal(p, 10).first, "stop[1]");
  p = {};
  p.logit_bias = {{1, 100.5f}};
  EXPECT_EQ(refusal(p, 10),
            std::make_pair(std::string("logit_bias"),
                           std::string("logit_bias of token 1 must be in [-100, 100], got 100.5")));
}

}  // namespace
}  // namespace ds
