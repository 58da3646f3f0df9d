// The MoE router and the routed experts: the CUDA backend against the CPU reference.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
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

// An F32 input (the model's fp32 router input) goes through the router GEMM exactly: the GPU's top-k weights
// equal the CPU's to fp32 rounding, where a bf16-rounded input moves them by ~1e-3 relative (DS_ROUTER=bf16).
TEST_F(MoeTest, RouterOnAnF32InputIsExactInFp32) {
  Rng rng(31);
  const int64_t tokens = 48, hidden = 7168, experts = 256, top_k = 8;
  auto gate = make_weight(rng, experts, hidden, DType::kBF16, 1.0f / std::sqrt(float(hidden)), "gate");
  prepare(*gate);
  auto bias = make_weight(rng, 1, experts, DType::kF32, 0.05f, "e_score_correction_bias");
  bias->view.shape = {experts};
  prepare(*bias);
  MoeGateParams p;
  p.gate = &gate->weight;
  p.e_score_correction_bias = &bias->weight;
  p.top_k = top_k;
  p.n_group = 8;
  p.topk_group = 4;
  p.topk_method = TopkMethod::kNoauxTc;
  p.scoring_func = ScoringFunc::kSigmoid;
  p.norm_topk_prob = true;
  p.routed_scaling_factor = 2.5f;
  auto [xc, xg] = pair({tokens, hidden}, rng.normal(tokens * hidden), /*f32=*/true);
  Tensor ids_ct = cpu_.empty_i32({tokens, top_k}), w_ct = cpu_.empty_f32({tokens, top_k});
  Tensor ids_gt = gpu_.empty_i32({tokens, top_k}), w_gt = gpu_.empty_f32({tokens, top_k});
  cpu_.moe_gate(xc, p, ids_ct, w_ct);
  gpu_.moe_gate(xg, p, ids_gt, w_gt);
  const std::vector<float> ids_c = host(cpu_, ids_ct), ids_g = host(gpu_, ids_gt);
  const std::vector<float> w_c = host(cpu_, w_ct), w_g = host(gpu_, w_gt);
  EXPECT_EQ(ids_g, ids_c);
  double worst = 0;
  for (size_t i = 0; i < w_c.size(); ++i)
    if (ids_c[i] == ids_g[i]) worst = std::max(worst, std::fabs(double(w_g[i]) - w_c[i]) / std::fabs(w_c[i]));
  EXPECT_LT(worst, 2e-6);
  std::printf("SUMMARY router on an F32 input: top-k weights within %.1e relative of the CPU's\n", worst);
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

// The two tile sizes of the grouped expert GEMMs forced in turn (CudaBackendOptions::moe_tile_rows), on
// routing with uneven counts per expert: 300 rows (five 64-row tiles, the last of 44), 1 row, 65 (one row
// past a large tile), 64 (exactly one), 33 (one past a small tile), 0, and the rest split between two
// experts, with each expert's tokens scattered over the batch. Tolerance: kChainTol (1e-2) like
// RoutedExpertsMatch; both tile sizes accumulate in fp32 and round the gate/up activation to bf16 once, so
// the errors should be ~3e-3 either way.
TEST(MoeTileTest, UnevenExpertsMatchTheCpuWithBothTileSizes) {
  struct Case {
    int64_t hidden, inter;
    DType dtype;
  };
  const std::vector<Case> cases = {{256, 192, DType::kBF16},
                                   {384, 320, DType::kF8E4M3},   // partial 128-blocks of scales in N and K
                                   {2048, 1408, DType::kBF16}};  // V2-Lite's expert shape
  constexpr int64_t kTokens = 300, kTopK = 2, kExperts = 8;
  Rng rng(32);
  // k = 0: every token to expert 0 (300 rows). k = 1: token order shuffled, then 1, 65, 64 and 33 tokens to
  // experts 1..4, the remaining 137 to experts 5 and 6 at random; expert 7 gets none.
  std::vector<int32_t> order(kTokens);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng.gen());
  std::vector<float> ids(static_cast<size_t>(kTokens * kTopK)), weights(ids.size());
  const int64_t firsts[] = {0, 1, 66, 130, 163};  // order[firsts[e - 1] ..] go to expert e
  for (int64_t i = 0; i < kTokens; ++i) {
    const auto t = static_cast<size_t>(order[static_cast<size_t>(i)]);
    int32_t second = i >= 163 ? rng.uniform_int(5, 6) : 0;
    for (int32_t e = 1; e <= 4; ++e)
      if (i >= firsts[e - 1] && i < firsts[e]) second = e;
    ids[t * kTopK] = 0;
    ids[t * kTopK + 1] = static_cast<float>(second);
    weights[t * kTopK] = rng.uniform(0.1f, 1.5f);
    weights[t * kTopK + 1] = rng.uniform(0.1f, 1.5f);
  }
  for (const Case& mc : cases) {
    std::vector<std::unique_ptr<HostWeight>> holders;
    for (int64_t e = 0; e < kExperts; ++e) {
      holders.push_back(
          make_weight(rng, mc.inter, mc.hidden, mc.dtype, 1.0f / std::sqrt(float(mc.hidden)), "gate"));
      holders.push_back(
          make_weight(rng, mc.inter, mc.hidden, mc.dtype, 1.0f / std::sqrt(float(mc.hidden)), "up"));
      holders.push_back(
          make_weight(rng, mc.hidden, mc.inter, mc.dtype, 1.0f / std::sqrt(float(mc.inter)), "down"));
    }
    // MlpWeights holds copies of the weights: made again after each backend's prepare_weight.
    auto experts_of = [&] {
      std::vector<MlpWeights> mlps;
      for (size_t e = 0; e < static_cast<size_t>(kExperts); ++e)
        mlps.push_back({holders[3 * e]->weight, holders[3 * e + 1]->weight, holders[3 * e + 2]->weight});
      return mlps;
    };
    const std::vector<float> x = rng.normal(kTokens * mc.hidden),
                             shared = rng.normal(kTokens * mc.hidden, 0.5f);
    CpuBackend cpu(0);
    Tensor xc = cpu.empty({kTokens, mc.hidden}), c = cpu.empty({kTokens, mc.hidden});
    Tensor ids_c = cpu.empty_i32({kTokens, kTopK}), w_c = cpu.empty_f32({kTokens, kTopK});
    cpu.copy_from_host(x, xc);
    cpu.copy_from_host(shared, c);
    cpu.copy_from_host(ids, ids_c);
    cpu.copy_from_host(weights, w_c);
    cpu.moe_experts(xc, experts_of(), ids_c, w_c, c);
    std::vector<float> want(static_cast<size_t>(c.numel()));
    cpu.copy_to_host(c, want);
    for (const int tile_rows : {32, 64}) {
      CudaBackend gpu(CudaBackendOptions{.device = 0, .sync_each_op = true, .moe_tile_rows = tile_rows});
      for (auto& h : holders) {
        h->weight.device_data = nullptr;  // the previous backend's copy went with it
        h->weight.device_scale_inv = nullptr;
        gpu.prepare_weight(h->weight);
      }
      const std::vector<MlpWeights> mlps = experts_of();
      Tensor xg = gpu.empty({kTokens, mc.hidden}), g = gpu.empty_f32({kTokens, mc.hidden});
      Tensor ids_g = gpu.empty_i32({kTokens, kTopK}), w_g = gpu.empty_f32({kTokens, kTopK});
      gpu.copy_from_host(x, xg);
      gpu.copy_from_host(shared, g);
      gpu.copy_from_host(ids, ids_g);
      gpu.copy_from_host(weights, w_g);
      gpu.moe_experts(xg, mlps, ids_g, w_g, g);
      std::vector<float> got(want.size());
      gpu.copy_to_host(g, got);
      double diff = 0, norm = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        diff += std::isfinite(got[i]) ? (double(got[i]) - want[i]) * (double(got[i]) - want[i]) : INFINITY;
        norm += double(want[i]) * want[i];
      }
      const double err = std::sqrt(diff / norm);
      EXPECT_LT(err, kChainTol) << tile_rows << "-row tiles, " << mc.hidden << "x" << mc.inter << " "
                                << dtype_name(mc.dtype);
      std::printf("SUMMARY op MoeTileTest %d-row tiles, %lldx%lld %s: normalized error %.1e\n", tile_rows,
                  static_cast<long long>(mc.hidden), static_cast<long long>(mc.inter),
                  std::string(dtype_name(mc.dtype)).c_str(), err);
    }
  }
}

}  // namespace
}  // namespace ds::testing
