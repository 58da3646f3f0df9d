#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cmath>

#include "fixture.h"
#include "model/config.h"
#include "model/rope.h"

namespace ds {
namespace {

nlohmann::json v3_json() {
  std::ifstream in(testing::fixture_dir("deepseek_v3_tiny_bf16") + "/config.json");
  return nlohmann::json::parse(in);
}

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ModelConfig, ReadsTheV3Fixture) {
  const ModelConfig c = load_model_config(testing::fixture_dir("deepseek_v3_tiny_bf16"));
  EXPECT_EQ(c.architecture, Architecture::kDeepseekV3);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.q_lora_rank, 192);
  EXPECT_EQ(c.kv_cache_dim(), 128 + 32);
  EXPECT_EQ(c.topk_method, TopkMethod::kNoauxTc);
  EXPECT_EQ(c.scoring_func, ScoringFunc::kSigmoid);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(1));
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->original_max_position_embeddings, 64);
  EXPECT_FALSE(c.fp8.has_value());
  // qk_head_dim 64 -> 1/8, times mscale^2 with mscale = 0.1 * 1.0 * ln(4) + 1.
  const double mscale = 0.1 * std::log(4.0) + 1.0;
  EXPECT_NEAR(c.softmax_scale(), 0.125 * mscale * mscale, 1e-12);
}

TEST(ModelConfig, ReadsTheV2FixtureWithNullQLoraRank) {
  const ModelConfig c = load_model_config(testing::fixture_dir("deepseek_v2_tiny_bf16"));
  EXPECT_EQ(c.architecture, Architecture::kDeepseekV2);
  EXPECT_EQ(c.q_lora_rank, 0);
  EXPECT_EQ(c.topk_method, TopkMethod::kGreedy);
  EXPECT_EQ(c.scoring_func, ScoringFunc::kSoftmax);
  EXPECT_FALSE(c.rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(c.softmax_scale(), 1.0 / std::sqrt(48.0));
}

TEST(ModelConfig, ReadsFp8BlockSize) {
  const ModelConfig c = load_model_config(testing::fixture_dir("deepseek_v3_tiny_fp8"));
  ASSERT_TRUE(c.fp8.has_value());
  EXPECT_EQ(c.fp8->block_rows, 128);
  EXPECT_EQ(c.fp8->block_cols, 128);
}

TEST(ModelConfig, MissingRequiredKeyIsNamed) {
  auto j = v3_json();
  j.erase("kv_lora_rank");
  EXPECT_NE(error_of([&] { (void)parse_model_config(j, "x/config.json"); })
                .find("x/config.json: missing required key 'kv_lora_rank'"),
            std::string::npos);
}

TEST(ModelConfig, UnsupportedArchitectureListsTheSupportedOnes) {
  auto j = v3_json();
  j["architectures"] = {"LlamaForCausalLM"};
  const std::string e = error_of([&] { (void)parse_model_config(j); });
  EXPECT_NE(e.find("unsupported architecture 'LlamaForCausalLM'"), std::string::npos) << e;
  EXPECT_NE(e.find("DeepseekV3ForCausalLM, DeepseekV2ForCausalLM"), std::string::npos) << e;
}

TEST(ModelConfig, TopkMethodsAndScoringFunctions) {
  auto j = v3_json();
  j["topk_method"] = "group_limited_greedy";
  j["scoring_func"] = "softmax";
  const ModelConfig c = parse_model_config(j);
  EXPECT_EQ(c.topk_method, TopkMethod::kGroupLimitedGreedy);
  EXPECT_EQ(c.scoring_func, ScoringFunc::kSoftmax);
  j["topk_method"] = "magic";
  EXPECT_NE(error_of([&] { (void)parse_model_config(j); }).find("'topk_method' is 'magic'"), std::string::npos);
  j["topk_method"] = "greedy";
  j["scoring_func"] = "relu";
  EXPECT_NE(error_of([&] { (void)parse_model_config(j); }).find("'scoring_func' is 'relu'"), std::string::npos);
}

TEST(ModelConfig, WrongTypesAndInconsistentValuesAreErrors) {
  auto j = v3_json();
  j["hidden_size"] = "256";
  EXPECT_NE(error_of([&] { (void)parse_model_config(j); }).find("'hidden_size' must be an integer"), std::string::npos);
  j = v3_json();
  j["n_group"] = 3;  // 8 experts do not split into 3 groups
  EXPECT_NE(error_of([&] { (void)parse_model_config(j); }).find("divisible by n_group"), std::string::npos);
  j = v3_json();
  j["rope_scaling"]["type"] = "longrope";
  EXPECT_NE(error_of([&] { (void)parse_model_config(j); }).find("rope type 'longrope'"), std::string::npos);
  j = v3_json();
  j["quantization_config"] = {{"quant_method", "awq"}};
  EXPECT_NE(error_of([&] { (void)parse_model_config(j); }).find("quant_method 'awq'"), std::string::npos);
}

TEST(Rope, YarnFrequenciesBlendInterpolationAndExtrapolation) {
  const ModelConfig c = load_model_config(testing::fixture_dir("deepseek_v3_tiny_bf16"));
  const RopeParams r = make_rope_params(c);
  ASSERT_EQ(r.inv_freq.size(), 16u);
  // dim 32, base 1e4, original context 64: the correction range is [0, 5] (floor/ceil of 0 and 4.03).
  // Index 0 is pure extrapolation (the original frequency 1); index 15 is interpolated: 1e4^(-30/32) / 4.
  EXPECT_FLOAT_EQ(r.inv_freq[0], 1.0f);
  EXPECT_NEAR(r.inv_freq[15], std::pow(1e4, -30.0 / 32.0) / 4.0, 1e-9);
  // Index 2 sits 2/5 up the ramp: 3/5 extrapolation + 2/5 interpolation.
  const double f2 = std::pow(1e4, -4.0 / 32.0);
  EXPECT_NEAR(r.inv_freq[2], 0.6 * f2 + 0.4 * f2 / 4.0, 1e-6);
  EXPECT_FLOAT_EQ(r.attention_factor, 1.0f);  // mscale == mscale_all_dim
}

}  // namespace
}  // namespace ds
