// Row-wise and linear ops: the CUDA backend against the CPU reference on random inputs, over the fixtures'
// shapes, DeepSeek-V3's real ones and dimensions that are not multiples of 8 or 128.
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <tuple>

#include "backend/cuda/cuda_gemm.h"
#include "op_test_util.h"

namespace ds::testing {
namespace {

using EmbeddingTest = OpTest;
using NormTest = OpTest;
using LinearTest = OpTest;
using ElementwiseTest = OpTest;
using RopeTest = OpTest;
using CacheTest = OpTest;
using ErrorsTest = OpTest;

TEST_F(EmbeddingTest, CopiesRowsExactly) {
  Rng rng(1);
  for (const auto& [vocab, hidden, tokens] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {512, 256, 9}, {1024, 192, 33}, {129280, 256, 5}, {300, 75, 1}}) {
    auto table = make_weight(rng, vocab, hidden, DType::kBF16);
    prepare(*table);
    std::vector<int32_t> ids(static_cast<size_t>(tokens));
    for (auto& id : ids) id = rng.uniform_int(0, static_cast<int32_t>(vocab - 1));
    ids.back() = static_cast<int32_t>(vocab - 1);
    for (bool f32 : {true, false}) {
      auto [c, g] = outputs({tokens, hidden}, f32);
      cpu_.embedding(table->weight, ids, c);
      gpu_.embedding(table->weight, ids, g);
      EXPECT_EQ(error(c, g), kExact) << vocab << "x" << hidden << (f32 ? " f32" : " bf16");
    }
  }
}

TEST_F(NormTest, RmsNormMatches) {
  Rng rng(2);
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 256}, {9, 192}, {33, 7168}, {5, 75}, {130, 1536}, {3, 512}}) {
    auto w = make_norm_weight(rng, cols);
    prepare(*w);
    const auto values = rng.normal(rows * cols, 3.0f);
    for (bool in_f32 : {true, false})
      for (bool out_f32 : {true, false}) {
        auto [xc, xg] = pair({rows, cols}, values, in_f32);
        auto [c, g] = outputs({rows, cols}, out_f32);
        cpu_.rms_norm(xc, w->weight, 1e-6f, c);
        gpu_.rms_norm(xg, w->weight, 1e-6f, g);
        EXPECT_LT(error(c, g), out_f32 ? kF32Tol : kBf16Tol) << rows << "x" << cols << " in_f32 " << in_f32;
      }
  }
}

// The fused residual add: the residual (F32, as the model keeps it) gets the branch added, and the output is
// the norm of the sum; both must match the CPU's add then rms_norm.
TEST_F(NormTest, AddRmsNormUpdatesTheResidualAndNormalizesIt) {
  Rng rng(4);
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 256}, {33, 7168}, {5, 75}}) {
    auto w = make_norm_weight(rng, cols);
    prepare(*w);
    auto [rc, rg] = pair({rows, cols}, rng.normal(rows * cols, 3.0f), /*f32=*/true);
    auto [bc, bg] = pair({rows, cols}, rng.normal(rows * cols, 1.0f), /*f32=*/true);
    auto [c, g] = outputs({rows, cols}, /*f32=*/false);
    cpu_.add_rms_norm(rc, bc, w->weight, 1e-6f, c);
    gpu_.add_rms_norm(rg, bg, w->weight, 1e-6f, g);
    EXPECT_LT(error(rc, rg), kF32Tol) << rows << "x" << cols << " residual";
    EXPECT_LT(error(c, g), kBf16Tol) << rows << "x" << cols << " normalized";
  }
}

TEST_F(NormTest, RmsNormOfAColumnWindow) {
  Rng rng(3);
  // kv_a = [latent | k_rope]: the latent part is normalized, as the model does.
  for (const auto& [rows, lora, rope, offset] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>{
           {9, 128, 32, 0}, {33, 512, 64, 0}, {4, 64, 16, 0}, {7, 100, 60, 37}}) {
    const int64_t cols = lora + rope;
    auto w = make_norm_weight(rng, lora);
    prepare(*w);
    auto [xc, xg] = pair({rows, cols}, rng.normal(rows * cols));
    auto [c, g] = outputs({rows, lora});
    cpu_.rms_norm_cols(xc, offset, w->weight, 1e-6f, c);
    gpu_.rms_norm_cols(xg, offset, w->weight, 1e-6f, g);
    EXPECT_LT(error(c, g), kBf16Tol) << rows << "x" << cols << " offset " << offset;
  }
}

struct LinearCase {
  int64_t t, n, k;
  DType w_dtype;
};

TEST_F(LinearTest, MatchesForEveryWeightDtypeAndOddShapes) {
  Rng rng(4);
  const std::vector<LinearCase> cases = {
      {9, 192, 256, DType::kBF16},    {33, 1024, 192, DType::kBF16},   {1, 512, 256, DType::kBF16},
      {5, 333, 75, DType::kBF16},     {16, 200, 300, DType::kBF16},    {130, 2048, 512, DType::kBF16},
      {4, 576, 7168, DType::kBF16},   {9, 160, 256, DType::kF8E4M3},   {9, 320, 128, DType::kF8E4M3},
      {33, 256, 192, DType::kF8E4M3}, {3, 1536, 7168, DType::kF8E4M3}, {7, 200, 300, DType::kF8E4M3},
      {6, 8, 256, DType::kF32},       {5, 77, 33, DType::kF32},        {100, 320, 128, DType::kF8E4M3},
      {64, 2048, 512, DType::kBF16},
  };
  for (const LinearCase& lc : cases) {
    auto w = make_weight(rng, lc.n, lc.k, lc.w_dtype, 1.0f / std::sqrt(static_cast<float>(lc.k)));
    prepare(*w);
    const auto x = rng.normal(lc.t * lc.k);
    for (bool out_f32 : {true, false}) {
      auto [xc, xg] = pair({lc.t, lc.k}, x);
      auto [c, g] = outputs({lc.t, lc.n}, out_f32);
      cpu_.linear(xc, w->weight, c);
      gpu_.linear(xg, w->weight, g);
      double tol = out_f32 ? kF32Tol : kBf16Tol;
      if (lc.w_dtype == DType::kF8E4M3) tol = out_f32 ? kBf16Tol : kFp8WeightTol;
      const double err = error(c, g);
      EXPECT_LT(err, tol) << "[" << lc.t << ", " << lc.k << "] @ [" << lc.n << ", " << lc.k << "]^T "
                          << dtype_name(lc.w_dtype) << (out_f32 ? " -> f32" : " -> bf16");
    }
  }
}

TEST_F(LinearTest, F32InputIsRoundedToBf16Once) {
  Rng rng(5);
  auto w = make_weight(rng, 96, 160, DType::kBF16, 0.1f);
  prepare(*w);
  auto [xc, xg] = pair({7, 160}, rng.normal(7 * 160), /*f32=*/true);
  auto [c, g] = outputs({7, 96}, true);
  cpu_.linear(xc, w->weight, c);
  gpu_.linear(xg, w->weight, g);
  EXPECT_LT(error(c, g), kF32Tol);  // the inputs are bf16 values, so the rounding is exact here
}

TEST_F(LinearTest, MlpMatches) {
  Rng rng(6);
  for (const auto& [t, hidden, inter, dtype] :
       std::vector<std::tuple<int64_t, int64_t, int64_t, DType>>{{9, 256, 384, DType::kBF16},
                                                                 {9, 256, 384, DType::kF8E4M3},
                                                                 {33, 192, 96, DType::kBF16},
                                                                 {3, 200, 75, DType::kBF16},
                                                                 {5, 7168, 512, DType::kF8E4M3},
                                                                 {1, 256, 64, DType::kF8E4M3},
                                                                 {100, 256, 384, DType::kBF16}}) {
    auto gate = make_weight(rng, inter, hidden, dtype, 1.0f / std::sqrt(float(hidden)), "gate");
    auto up = make_weight(rng, inter, hidden, dtype, 1.0f / std::sqrt(float(hidden)), "up");
    auto down = make_weight(rng, hidden, inter, dtype, 1.0f / std::sqrt(float(inter)), "down");
    for (auto* w : {gate.get(), up.get(), down.get()}) prepare(*w);
    const MlpWeights mw{gate->weight, up->weight, down->weight};
    auto [xc, xg] = pair({t, hidden}, rng.normal(t * hidden));
    auto [c, g] = outputs({t, hidden});
    cpu_.mlp(xc, mw, c);
    gpu_.mlp(xg, mw, g);
    EXPECT_LT(error(c, g), kChainTol)
        << t << " tokens, hidden " << hidden << ", inter " << inter << " " << dtype_name(dtype);
  }
}

// ||g - c|| / ||c|| of a tensor of each backend.
double normalized_error(Backend& cpu, const Tensor& c, Backend& gpu, const Tensor& g) {
  std::vector<float> ch(static_cast<size_t>(c.numel())), gh(ch.size());
  cpu.copy_to_host(c, ch);
  gpu.copy_to_host(g, gh);
  double diff = 0, norm = 0;
  for (size_t i = 0; i < ch.size(); ++i) {
    diff += (double(gh[i]) - ch[i]) * (double(gh[i]) - ch[i]);
    norm += double(ch[i]) * ch[i];
  }
  return std::sqrt(diff / norm);
}

// StreamGemm::kAuto takes the streaming kernel only where it measured faster than cuBLASLt: FP8 weights at 1-8
// rows with K >= 3 N (V3's q_a, kv_a, shared-expert gate/up), never bf16, never wide FP8 weights (q_b, o_proj).
TEST(StreamGemmTest, AutoPicksNarrowFp8WeightsAtFewRowsOnly) {
  auto weight = [](DType dtype, int64_t n, int64_t k) {
    cuda::DeviceWeight w;
    w.dtype = dtype, w.rows = n, w.cols = k;
    return w;
  };
  const cuda::DeviceWeight q_a = weight(DType::kF8E4M3, 1536, 7168), kv_a = weight(DType::kF8E4M3, 576, 7168),
                           shared_gate = weight(DType::kF8E4M3, 2048, 7168);
  for (const cuda::DeviceWeight& w : {q_a, kv_a, shared_gate}) {
    EXPECT_TRUE(cuda::stream_gemm_auto_picks(w, 1)) << w.rows << " x " << w.cols;
    EXPECT_TRUE(cuda::stream_gemm_auto_picks(w, 8)) << w.rows << " x " << w.cols;
    EXPECT_FALSE(cuda::stream_gemm_auto_picks(w, 9)) << w.rows << " x " << w.cols;
    EXPECT_FALSE(cuda::stream_gemm_auto_picks(w, 0)) << w.rows << " x " << w.cols;
  }
  EXPECT_FALSE(cuda::stream_gemm_auto_picks(weight(DType::kF8E4M3, 24576, 1536), 1));  // q_b
  EXPECT_FALSE(cuda::stream_gemm_auto_picks(weight(DType::kF8E4M3, 7168, 16384), 1));  // o_proj
  EXPECT_FALSE(cuda::stream_gemm_auto_picks(weight(DType::kF8E4M3, 7168, 2048), 1));   // shared down
  EXPECT_FALSE(cuda::stream_gemm_auto_picks(weight(DType::kBF16, 576, 2048), 1));      // V2-Lite kv_a
}

// CudaBackendOptions::stream_gemm: linears and MLPs of at most 64 rows through the streaming kernel, with K
// split over CTAs for narrow weights (576 x 7168: 28 pieces; the MLP's gate/up of 512 x 7168: 33), against the
// CPU; above 64 rows cuBLASLt runs as without the option.
TEST(StreamGemmTest, DecodeRowsMatchTheCpuWithAndWithoutKSplit) {
  Rng rng(8);
  CpuBackend cpu(0);
  CudaBackend gpu(CudaBackendOptions{.device = 0, .sync_each_op = true, .fp8_gemm = false, .stream_gemm = StreamGemm::kAlways});
  for (const LinearCase& lc : std::vector<LinearCase>{{1, 576, 7168, DType::kBF16},
                                                      {4, 576, 7168, DType::kF8E4M3},
                                                      {1, 3072, 2048, DType::kBF16},
                                                      {33, 1536, 7168, DType::kF8E4M3},
                                                      {64, 7168, 2048, DType::kF8E4M3},
                                                      {9, 192, 48, DType::kBF16},
                                                      {100, 320, 128, DType::kF8E4M3}}) {
    auto w = make_weight(rng, lc.n, lc.k, lc.w_dtype, 1.0f / std::sqrt(static_cast<float>(lc.k)));
    gpu.prepare_weight(w->weight);
    const auto x = rng.normal(lc.t * lc.k);
    Tensor xc = cpu.empty({lc.t, lc.k}), xg = gpu.empty({lc.t, lc.k});
    cpu.copy_from_host(x, xc);
    gpu.copy_from_host(x, xg);
    Tensor c = cpu.empty({lc.t, lc.n}), g = gpu.empty_f32({lc.t, lc.n});
    cpu.linear(xc, w->weight, c);
    gpu.linear(xg, w->weight, g);
    EXPECT_LT(normalized_error(cpu, c, gpu, g), kBf16Tol) << "[" << lc.t << ", " << lc.k << "] @ [" << lc.n << ", " << lc.k
                                                << "]^T " << dtype_name(lc.w_dtype);
  }
  for (const auto& [t, hidden, inter] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 7168, 512}, {40, 256, 384}}) {
    auto gate = make_weight(rng, inter, hidden, DType::kF8E4M3, 1.0f / std::sqrt(float(hidden)), "gate");
    auto up = make_weight(rng, inter, hidden, DType::kF8E4M3, 1.0f / std::sqrt(float(hidden)), "up");
    auto down = make_weight(rng, hidden, inter, DType::kF8E4M3, 1.0f / std::sqrt(float(inter)), "down");
    for (auto* w : {gate.get(), up.get(), down.get()}) gpu.prepare_weight(w->weight);
    const MlpWeights mw{gate->weight, up->weight, down->weight};
    const auto x = rng.normal(t * hidden);
    Tensor xc = cpu.empty({t, hidden}), xg = gpu.empty({t, hidden});
    cpu.copy_from_host(x, xc);
    gpu.copy_from_host(x, xg);
    Tensor c = cpu.empty({t, hidden}), g = gpu.empty({t, hidden});
    cpu.mlp(xc, mw, c);
    gpu.mlp(xg, mw, g);
    EXPECT_LT(normalized_error(cpu, c, gpu, g), kChainTol) << "mlp " << t << " tokens, " << hidden << " x " << inter;
  }
}

TEST_F(ElementwiseTest, AddAndSiluMulMatch) {
  Rng rng(7);
  for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{9, 256}, {33, 7168}, {3, 75}}) {
    const auto a = rng.normal(rows * cols), b = rng.normal(rows * cols);
    for (bool acc_f32 : {true, false}) {
      auto [ac, ag] = pair({rows, cols}, a, acc_f32);
      auto [bc, bg] = pair({rows, cols}, b);
      cpu_.add(ac, bc);
      gpu_.add(ag, bg);
      EXPECT_LT(error(ac, ag), acc_f32 ? kF32Tol : kBf16Tol) << "add " << rows << "x" << cols;
    }
    auto [gc, gg] = pair({rows, 2 * cols}, rng.normal(rows * 2 * cols, 2.0f));
    auto [c, g] = outputs({rows, cols});
    cpu_.silu_mul(gc, c);
    gpu_.silu_mul(gg, g);
    EXPECT_LT(error(c, g), kBf16Tol) << "silu_mul " << rows << "x" << cols;
  }
}

TEST_F(RopeTest, InterleavedYarnRotationMatches) {
  Rng rng(8);
  struct Case {
    int64_t tokens, heads, head_dim, offset, rotary;
    int32_t max_pos;
  };
  for (const Case& rc : std::vector<Case>{{9, 4, 64, 32, 32, 200},          // V3 fixture q: nope 32 | rope 32
                                          {9, 1, 160, 128, 32, 200},        // V3 fixture kv_a: latent | rope
                                          {33, 4, 48, 32, 16, 255},         // V2 fixture q
                                          {5, 128, 192, 128, 64, 163840},   // V3 q at long positions
                                          {3, 1, 576, 512, 64, 163840}}) {  // V3 kv_a
    RopeParams rope;
    for (int64_t i = 0; i < rc.rotary / 2; ++i)
      rope.inv_freq.push_back(std::pow(10000.0f, -2.0f * float(i) / float(rc.rotary)) /
                              (i % 3 == 0 ? 40.0f : 1.0f));
    rope.attention_factor = 1.0f + 0.1f * std::log(40.0f);
    std::vector<int32_t> positions(static_cast<size_t>(rc.tokens));
    for (auto& p : positions) p = rng.uniform_int(0, rc.max_pos);
    const auto x = rng.normal(rc.tokens * rc.heads * rc.head_dim);
    for (bool f32 : {true, false}) {
      auto [c, g] = pair({rc.tokens, rc.heads * rc.head_dim}, x, f32);
      cpu_.rope(c, positions, rc.heads, rc.head_dim, rc.offset, rope);
      gpu_.rope(g, positions, rc.heads, rc.head_dim, rc.offset, rope);
      // f32: cos/sin of angles up to ~1.6e5 rad, where fp32 ulps of the angle differ by library: 1e-4.
      EXPECT_LT(error(c, g), f32 ? 1e-4 : kBf16Tol)
          << rc.heads << " heads of " << rc.head_dim << ", max position " << rc.max_pos
          << (f32 ? " f32" : " bf16");
    }
  }
}

TEST_F(CacheTest, StoreKvAndGatherRowsCopyExactly) {
  Rng rng(9);
  for (const auto& [tokens, lora, rope, extra] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>{
           {9, 128, 32, 0}, {33, 512, 64, 0}, {5, 64, 16, 7}}) {
    const int64_t slots = 4 * 64;
    auto [cc, cg] = pair({slots, lora + rope}, rng.normal(slots * (lora + rope)));
    auto [lc, lg] = pair({tokens, lora}, rng.normal(tokens * lora));
    // k_rope sits at column lora + extra of a wider matrix (kv_a in the model).
    const int64_t src_cols = lora + extra + rope;
    auto [kc, kg] = pair({tokens, src_cols}, rng.normal(tokens * src_cols));
    std::vector<int64_t> slot_mapping(static_cast<size_t>(tokens));
    std::vector<int64_t> all(static_cast<size_t>(slots));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng.gen());
    std::copy_n(all.begin(), tokens, slot_mapping.begin());
    cpu_.store_kv(lc, kc, lora + extra, slot_mapping, cc);
    gpu_.store_kv(lg, kg, lora + extra, slot_mapping, cg);
    EXPECT_EQ(error(cc, cg), kExact) << "store_kv " << tokens << " tokens, " << lora << " + " << rope;

    std::vector<int32_t> rows = {static_cast<int32_t>(tokens - 1), 0, static_cast<int32_t>(tokens / 2), 0};
    for (bool f32 : {true, false}) {
      auto [xc, xg] = pair({tokens, src_cols}, rng.normal(tokens * src_cols), f32);
      auto [c, g] = outputs({4, src_cols}, f32);
      cpu_.gather_rows(xc, rows, c);
      gpu_.gather_rows(xg, rows, g);
      EXPECT_EQ(error(c, g), kExact) << "gather_rows";
    }
  }
}

TEST_F(CacheTest, CopyBlocksSwapsThroughPinnedHostAndCopiesOnDevice) {
  // Swap out to the host pool, swap back into other blocks, copy-on-write within the cache: the values
  // must come back bit for bit, as on the CPU.
  Rng rng(21);
  const int32_t block = 16;
  const int64_t width = 576, blocks = 8;
  auto [cc, cg] = pair({blocks * block, width}, rng.normal(blocks * block * width));
  Tensor pool_c = cpu_.empty_host({4 * block, width});
  Tensor pool_g = gpu_.empty_host({4 * block, width});
  const std::vector<BlockMove> out = {{5, 0}, {2, 3}}, in = {{0, 1}, {3, 6}}, cow = {{7, 4}};
  cpu_.copy_blocks(cc, pool_c, out, block);
  gpu_.copy_blocks(cg, pool_g, out, block);
  cpu_.copy_blocks(pool_c, cc, in, block);
  gpu_.copy_blocks(pool_g, cg, in, block);
  cpu_.copy_blocks(cc, cc, cow, block);
  gpu_.copy_blocks(cg, cg, cow, block);
  EXPECT_EQ(error(cc, cg), kExact);
  EXPECT_THROW(gpu_.copy_blocks(cg, pool_g, std::vector<BlockMove>{{0, 4}}, block), InternalError);
}

TEST_F(ErrorsTest, MisuseIsACleanError) {
  Rng rng(10);
  auto w = make_weight(rng, 16, 32, DType::kBF16);
  Tensor x = gpu_.zeros({2, 32});
  Tensor out = gpu_.empty({2, 16});
  try {
    gpu_.linear(x, w->weight, out);
    FAIL() << "an unprepared weight was accepted";
  } catch (const InternalError& e) {
    EXPECT_NE(std::string(e.what()).find("prepare_weight"), std::string::npos) << e.what();
  }
  Tensor cache = gpu_.empty({32, 48});
  Tensor latent = gpu_.zeros({1, 32});
  Tensor kv_a = gpu_.zeros({1, 48});
  const std::vector<int64_t> bad_slot = {32};
  EXPECT_THROW(gpu_.store_kv(latent, kv_a, 32, bad_slot, cache), InternalError);
  const std::vector<int32_t> bad_id = {16};
  prepare(*w);
  Tensor e = gpu_.empty({1, 32});
  EXPECT_THROW(gpu_.embedding(w->weight, bad_id, e), InternalError);
  EXPECT_THROW(CudaBackend(CudaBackendOptions{999, false}), UserError);
}

// The DS_* debug switches take their documented values only; another is a UserError that lists them.
TEST(DebugSwitches, AnUnknownValueIsRefusedWithTheChoices) {
  for (const auto& [name, bad, listed] : std::vector<std::tuple<const char*, const char*, const char*>>{
           {"DS_STREAM_GEMM", "yes", "use 0 (cuBLASLt for every linear) or 1"},
           {"DS_MOE_TILE_ROWS", "48", "use 32 (32-row expert tiles) or 64"},
           {"DS_FP8_GEMM", "off", "use 0 (FP8 weights expanded to bf16 for every GEMM) or 1"},
           {"DS_MOE_GROUPED", "2", "use 0 (one cuBLASLt GEMM per expert"},
           {"DS_MLA_DECODE", "3", "use 1 (the first tensor-core MLA kernel) or 2"},
           {"DS_MLA_PREFILL", "auto", "use 0 (weight-absorbed MLA for every token) or 1"}}) {
    ASSERT_EQ(::setenv(name, bad, 1), 0);
    try {
      CudaBackend gpu;
      ADD_FAILURE() << name << "=" << bad << " was accepted";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(name) + "=" + bad + ": " + listed), std::string::npos)
          << e.what();
    }
    ASSERT_EQ(::setenv(name, name == std::string("DS_MOE_TILE_ROWS") ? "64" : "1", 1), 0);
    EXPECT_NO_THROW(CudaBackend{}) << name;  // a documented value is taken
    ASSERT_EQ(::unsetenv(name), 0);
  }
}

}  // namespace
}  // namespace ds::testing
