// The MoE router and the routed experts: the CUDA backend against the CPU reference.
#include <algorithm>
#include <set>

#include "op_test_util.h"

namespace ds::testing {
namespace {

struct GateCase {
  const char* name;
  int64_t tokens, hidden, experts, top_k, n_group, topk_group;
  TopkMethod method;
  ScoringFunc scoring;
  bool norm;
  float scaling;
  bool bias;
};

using MoeTest = OpTest;

TEST_F(MoeTest, RouterChoosesTheSameExpertsWithTheSameWeights) {
  Rng rng(30);
  const std::vector<GateCase> cases = {
      {"V3 fixture", 33, 256, 8, 3, 4, 2, TopkMethod::kNoauxTc, ScoringFunc::kSigmoid, true, 2.5f, true},
      {"V2 fixture", 33, 192, 8, 2, 1, 1, TopkMethod::kGreedy, ScoringFunc::kSoftmax, false, 1.5f, false},
      {"V2 full", 17, 512, 160, 6, 8, 3, TopkMethod::kGroupLimitedGreedy, ScoringFunc::kSoftmax, false, 16.0f,
       false},
      {"V3 full", 64, 7168, 256, 8, 8, 4, TopkMethod::kNoauxTc, ScoringFunc::kSigmoid, true, 2.5f, true},
      {"one token", 1, 300, 64, 6, 1, 1, TopkMethod::kGreedy, ScoringFunc::kSoftmax, true, 1.0f, false},
  };
  for (const GateCase& gc : cases) {
    auto gate =
        make_weight(rng, gc.experts, gc.hidden, DType::kBF16, 1.0f / std::sqrt(float(gc.hidden)), "gate");
    prepare(*gate);
    std::unique_ptr<HostWeight> bias;
    if (gc.bias) {
      bias = make_weight(rng, 1, gc.experts, DType::kF32, 0.05f, "e_score_correction_bias");
      bias->view.shape = {gc.experts};
      prepare(*bias);
    }
    MoeGateParams p;
    p.gate = &gate->weight;
    p.e_score_correction_bias = bias ? &bias->weight : nullptr;
    p.top_k = gc.top_k;
    p.n_group = gc.n_group;
    p.topk_group = gc.topk_group;
    p.topk_method = gc.method;
    p.scoring_func = gc.scoring;
    p.norm_topk_prob = gc.norm;
    p.routed_scaling_factor = gc.scaling;
    auto [xc, xg] = pair({gc.tokens, gc.hidden}, rng.normal(gc.tokens * gc.hidden));
    Tensor ids_ct = cpu_.empty_i32({gc.tokens, gc.top_k}), w_ct = cpu_.empty_f32({gc.tokens, gc.top_k});
    Tensor ids_gt = gpu_.empty_i32({gc.tokens, gc.top_k}), w_gt = gpu_.empty_f32({gc.tokens, gc.top_k});
    cpu_.moe_gate(xc, p, ids_ct, w_ct);
    gpu_.moe_gate(xg, p, ids_gt, w_gt);
    const std::vector<float> ids_c = host(cpu_, ids_ct), ids_g = host(gpu_, ids_gt);
    const std::vector<float> w_c = host(cpu_, w_ct), w_g = host(gpu_, w_gt);
    ASSERT_EQ(ids_c.size(), ids_g.size());
    // Same experts in the same order; the router logits agree to fp32 summation order (~1e-7 relative), so a
    // difference would need two experts within that of each other: with random scores, it does not happen.
    int same_tokens = 0;
    for (int64_t t = 0; t < gc.tokens; ++t) {
      bool same = true;
      for (int64_t k = 0; k < gc.top_k; ++k) {
        const size_t i = static_cast<size_t>(t * gc.top_k + k);
        same &= ids_c[i] == ids_g[i];
        if (ids_c[i] == ids_g[i]) {
          EXPECT_NEAR(w_g[i], w_c[i], 1e-5 * std::max(1.0f, std::fabs(w_c[i])));
        }
      }
      same_tokens += same;
    }
    EXPECT_EQ(same_tokens, gc.tokens) << gc.name;
  }
}

// The grouped expert GEMMs (bf16 and block-FP8 weights whose sizes are multiples of 8 / 16) and the per-expert
// path with the routing copied to the host (the other shapes and dtypes), against the CPU. `skewed`: every
// token picks experts 0..top_k-1, so those experts span several 32-row tiles.
TEST_F(MoeTest, RoutedExpertsMatch) {
  Rng rng(31);
  for (const auto& [tokens, hidden, inter, experts, top_k, dtype, skewed] :
       std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, DType, bool>>{
           {33, 256, 64, 8, 3, DType::kBF16, false},
           {33, 256, 64, 8, 3, DType::kF8E4M3, false},
           {9, 192, 48, 8, 2, DType::kBF16, false},          // V2 fixture: n and k not multiples of 64
           {1, 256, 64, 8, 3, DType::kF8E4M3, false},
           {6, 7168, 256, 16, 8, DType::kF8E4M3, false},     // V3's hidden size
           {5, 200, 75, 12, 4, DType::kBF16, false},         // intermediate 75: the per-expert path
           {5, 128, 64, 6, 2, DType::kF32, false},           // F32 weights: the per-expert path
           {70, 256, 128, 4, 2, DType::kBF16, true},         // 70 rows per expert: 3 tiles each
           {100, 384, 192, 8, 3, DType::kF8E4M3, true},      // partial 128-blocks of scales, 4 tiles each
           {64, 2048, 1408, 64, 6, DType::kBF16, false}}) {  // V2-Lite's expert shape
    std::vector<std::unique_ptr<HostWeight>> holders;
    std::vector<MlpWeights> mlps;
    for (int64_t e = 0; e < experts; ++e) {
      holders.push_back(make_weight(rng, inter, hidden, dtype, 1.0f / std::sqrt(float(hidden)), "gate"));
      holders.push_back(make_weight(rng, inter, hidden, dtype, 1.0f / std::sqrt(float(hidden)), "up"));
      holders.push_back(make_weight(rng, hidden, inter, dtype, 1.0f / std::sqrt(float(inter)), "down"));
      for (size_t i = holders.size() - 3; i < holders.size(); ++i) prepare(*holders[i]);
      mlps.push_back(
          {holders[holders.size() - 3]->weight, holders[holders.size() - 2]->weight, holders.back()->weight});
    }
    // Distinct experts per token, drawn from the first experts - 2 so that some experts get no tokens.
    std::vector<int32_t> ids;
    std::vector<float> weights;
    for (int64_t t = 0; t < tokens; ++t) {
      std::vector<int32_t> all(static_cast<size_t>(experts - 2));
      std::iota(all.begin(), all.end(), 0);
      if (!skewed) std::shuffle(all.begin(), all.end(), rng.gen());
      for (int64_t k = 0; k < top_k; ++k) {
        ids.push_back(all[static_cast<size_t>(k)]);
        weights.push_back(rng.uniform(0.1f, 1.5f));
      }
    }
    auto [xc, xg] = pair({tokens, hidden}, rng.normal(tokens * hidden));
    // out already holds the shared experts' output; the routed ones are added to it.
    auto [c, g] = pair({tokens, hidden}, rng.normal(tokens * hidden, 0.5f));
    Tensor ids_c = cpu_.empty_i32({tokens, top_k}), ids_g = gpu_.empty_i32({tokens, top_k});
    Tensor w_c = cpu_.empty_f32({tokens, top_k}), w_g = gpu_.empty_f32({tokens, top_k});
    const std::vector<float> id_values(ids.begin(), ids.end());
    cpu_.copy_from_host(id_values, ids_c);
    gpu_.copy_from_host(id_values, ids_g);
    cpu_.copy_from_host(weights, w_c);
    gpu_.copy_from_host(weights, w_g);
    cpu_.moe_experts(xc, mlps, ids_c, w_c, c);
    gpu_.moe_experts(xg, mlps, ids_g, w_g, g);
    EXPECT_LT(error(c, g), kChainTol) << tokens << " tokens, " << experts << " experts of " << hidden << "x"
                                      << inter << " " << dtype_name(dtype);
  }
}

}  // namespace
}  // namespace ds::testing
