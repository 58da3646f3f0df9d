// MLA prefill in the expanded form (keys and values through kv_b_proj, causal flash attention): against the
// CPU reference (which runs the weight-absorbed form in fp32: the two forms are the same function), against
// the CUDA backend's own absorbed form, and the rule that picks the sequences that take it.
#include <cmath>
#include <vector>

#include "backend/cuda/cuda_mla_expanded.h"
#include "mla_test_util.h"

namespace ds::testing {
namespace {

class MlaPrefillTest : public MlaOpTest {
 protected:
  MlaPrefillTest() : MlaOpTest(MlaPrefillForm::kExpanded) {}
};

// DeepSeek's shapes (16 heads: V2-Lite; 128: V3) at both page sizes, bf16 and FP8 kv_b_proj. Every sequence
// with more than one new token takes the expanded form (kExpanded); one-token sequences (decode) take the
// absorbed form in the same call, each form writing its own rows (outputs start as NaN: a row neither wrote
// fails). Tolerance kChainTol (1e-2) as the absorbed form: k_nope, v and P are rounded to bf16 on the way.
TEST_F(MlaPrefillTest, ExpandedFormMatchesTheCpuReference) {
  Rng rng(31);
  const std::vector<MlaShape> shapes = {
      {"16 heads (V2-Lite), page 64", 16, 128, 64, 128, 512, 64, DType::kBF16},
      {"16 heads (V2-Lite) fp8, page 16", 16, 128, 64, 128, 512, 16, DType::kF8E4M3},
      {"128 heads (V3) fp8, page 64", 128, 128, 64, 128, 512, 64, DType::kF8E4M3},
      {"128 heads (V3), page 16", 128, 128, 64, 128, 512, 16, DType::kBF16},
  };
  const std::vector<std::vector<SeqSpec>> batches = {
      {{0, 300}},                                                   // a prompt: 5 tiles, the last partial
      {{500, 200}},                                                 // a chunk after a cached prefix
      {{63, 65}},                                                   // tiles and key steps off their edges
      {{130, 45}, {0, 3}, {0, 2}},                                  // chunked + short prompts
      {{300, 1}, {0, 100}, {50, 1}, {64, 70}, {7, 1}, {1000, 17}},  // prefills mixed with decode tokens
  };
  for (const MlaShape& s : shapes) {
    auto kv_b = make_kv_b(rng, s);
    for (const auto& seqs : batches)
      EXPECT_LT(run_batch(rng, s, kv_b->weight, seqs), kChainTol) << s.name << ", " << describe(seqs);
  }
}

// One long prompt (1,024 tokens: 16 tiles, the longest seeing 1,024 keys) and a long chunk after a cached
// prefix, at 16 heads (the CPU reference at 128 heads would take too long for a unit test).
TEST_F(MlaPrefillTest, LongPrefillMatchesTheCpuReference) {
  Rng rng(32);
  const MlaShape s{"16 heads (V2-Lite), page 64", 16, 128, 64, 128, 512, 64, DType::kBF16};
  auto kv_b = make_kv_b(rng, s);
  for (const std::vector<SeqSpec>& seqs : std::vector<std::vector<SeqSpec>>{{{0, 1024}}, {{1536, 512}}})
    EXPECT_LT(run_batch(rng, s, kv_b->weight, seqs), kChainTol) << describe(seqs);
}

// The expanded and the absorbed form on the same inputs agree to the bf16 chain tolerance (they round
// different intermediates), and the expanded form gives the same bits twice (no race between warps).
TEST_F(MlaPrefillTest, ExpandedAndAbsorbedFormsAgree) {
  Rng rng(33);
  CudaBackend absorbed{CudaBackendOptions{
      .device = 0, .sync_each_op = true, .fp8_gemm = false, .mla_prefill = MlaPrefillForm::kAbsorbed}};
  for (const int64_t heads : {16, 128}) {
    const MlaShape s{"agree", heads, 128, 64, 128, 512, 64, DType::kBF16};
    auto kv_b = make_kv_b(rng, s);  // its device copy (prepared by gpu_) serves both backends: one device
    int64_t slots = 0;
    const ForwardBatch batch = make_mla_batch(rng, s.block_size, {{0, 130}, {200, 1}, {90, 70}}, &slots);
    const int64_t t = batch.num_tokens(), qk = s.nope + s.rope;
    const std::vector<float> cache_v = rng.normal(slots * (s.lora + s.rope)),
                             q_v = rng.normal(t * s.heads * qk);
    const std::vector<std::vector<float>> results =
        outputs_of({&gpu_, &gpu_, &absorbed}, s, kv_b->weight, batch, cache_v, q_v);
    EXPECT_EQ(results[0], results[1]) << heads << " heads";
    const double rel = normalized_difference(results[0], results[2]);
    std::printf("SUMMARY mla expanded vs absorbed, %lld heads: normalized difference %.1e\n",
                static_cast<long long>(heads), rel);
    EXPECT_LT(rel, kChainTol) << heads << " heads";
  }
}

// With the default rule (kAuto): a prompt from position 0 takes the expanded form from 64 new tokens; a
// chunk after a 4,000-token prefix only once it is long enough for its FLOPs to pay for expanding the whole
// context (64 new tokens: no; 512: yes); decode tokens never; kAbsorbed and other head dimensions never.
TEST(MlaPrefillRule, PicksTheSequencesWhereTheExpandedFormNeedsFewerFlops) {
  Rng rng(34);
  HostWeight none;
  const MlaShape s{"rule", 16, 128, 64, 128, 512, 64, DType::kBF16};
  const MlaAttentionParams p = mla_params(s, none.weight);
  int64_t slots = 0;
  const ForwardBatch batch =
      make_mla_batch(rng, 64, {{0, 1024}, {0, 63}, {0, 64}, {4000, 64}, {4000, 512}, {100, 1}}, &slots);
  EXPECT_EQ(cuda::mla_expanded_sequences(p, batch, MlaPrefillForm::kAuto), (std::vector<int32_t>{0, 2, 4}));
  EXPECT_EQ(cuda::mla_expanded_sequences(p, batch, MlaPrefillForm::kExpanded),
            (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(cuda::mla_expanded_sequences(p, batch, MlaPrefillForm::kAbsorbed).empty());
  MlaAttentionParams small = p;
  small.qk_nope_head_dim = 32;
  EXPECT_TRUE(cuda::mla_expanded_sequences(small, batch, MlaPrefillForm::kAuto).empty());
  // A context whose keys do not fit one pass (kMlaExpandMaxBytes, 512 MiB) takes the absorbed form: at 128
  // heads a key costs (576 + 128 * 256) * 2 = 66,688 bytes, so 8,050 keys fit.
  const MlaShape v3{"rule V3", 128, 128, 64, 128, 512, 64, DType::kBF16};
  const ForwardBatch long_batch = make_mla_batch(rng, 64, {{0, 8050}, {0, 8051}}, &slots);
  EXPECT_EQ(cuda::mla_expanded_bytes_per_key(mla_params(v3, none.weight)), size_t{66688});
  EXPECT_EQ(cuda::mla_expanded_sequences(mla_params(v3, none.weight), long_batch, MlaPrefillForm::kAuto),
            (std::vector<int32_t>{0}));
}

}  // namespace
}  // namespace ds::testing
