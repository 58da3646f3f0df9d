// MLA over the paged latent cache: the CUDA kernel against the CPU reference, for prefill, chunked prefill
// with a cached prefix, decode, several sequences in one batch and block tables out of order.
#include <algorithm>
#include <numeric>
#include <string>

#include "mla_test_util.h"

namespace ds::testing {
namespace {

// The existing tests hold the weight-absorbed kernels to the CPU; the expanded prefill form has its own tests
// (mla_prefill_test.cpp). Every test runs with each tensor-core attention kernel (CudaBackendOptions::
// mla_decode: V1 = cuda_mla.cu, V2 = cuda_mla_v2.cu for 64-row tiles and the deeper pipeline for 16-row
// ones).
class MlaTest : public MlaOpTest, public ::testing::WithParamInterface<MlaDecodeKernel> {
 protected:
  MlaTest() : MlaOpTest(MlaPrefillForm::kAbsorbed, GetParam()) {}
};

TEST_P(MlaTest, MatchesTheCpuReference) {
  Rng rng(20);
  const std::vector<MlaShape> shapes = {
      {"V3 fixture", 4, 32, 32, 48, 128, 16, DType::kBF16},
      {"V3 fixture fp8", 4, 32, 32, 48, 128, 16, DType::kF8E4M3},
      {"V2 fixture", 4, 32, 16, 32, 64, 16, DType::kBF16},
      {"V3 (16 of 128 heads), page 64", 16, 128, 64, 128, 512, 64, DType::kF8E4M3},
      {"odd dims", 3, 24, 8, 40, 100, 8, DType::kBF16},
  };
  const std::vector<std::vector<SeqSpec>> batches = {
      {{0, 33}},                    // prefill
      {{20, 13}, {0, 9}},           // chunked prefill after a cached prefix, plus a fresh prompt
      {{70, 1}, {5, 1}, {199, 1}},  // decode
      {{0, 1}},                     // a one-token prompt
      {{0, 150}, {40, 90}},         // prefills longer than the kernel's 64-key chunks
  };
  for (const MlaShape& s : shapes) {
    auto kv_b = make_weight(rng, s.heads * (s.nope + s.v), s.lora, s.kv_b_dtype,
                            1.0f / std::sqrt(static_cast<float>(s.lora)), "kv_b_proj");
    prepare(*kv_b);
    for (const auto& seqs : batches)
      EXPECT_LT(run_batch(rng, s, kv_b->weight, seqs), tolerance(s)) << s.name << ", " << describe(seqs);
  }
}

// The tensor-core path (latent 512 + rope 64) at DeepSeek's head counts (16: V2-Lite; 128: V3) and both block
// sizes: decode at batch 1..32 with contexts that are and are not multiples of the block size and of the
// kernel's 32-key steps (split over the context into pieces, then combined), prefill with and without a
// cached prefix, and mixed batches of decode and prefill tokens.
TEST_P(MlaTest, TensorCorePathMatchesTheCpuReference) {
  Rng rng(21);
  const std::vector<MlaShape> shapes = {
      {"16 heads (V2-Lite), page 64", 16, 128, 64, 128, 512, 64, DType::kBF16},
      {"16 heads (V2-Lite), page 16", 16, 128, 64, 128, 512, 16, DType::kBF16},
      {"128 heads (V3), page 64", 128, 128, 64, 128, 512, 64, DType::kBF16},
      {"128 heads (V3) fp8, page 16", 128, 128, 64, 128, 512, 16, DType::kF8E4M3},
  };
  std::vector<std::vector<SeqSpec>> batches = {
      {{0, 1}},                                         // decode at context 1
      {{1023, 1}},                                      // batch 1, context 1024 (split into pieces)
      {{1500, 1}, {16, 1}, {63, 1}, {64, 1}, {31, 1}},  // ragged contexts
      {{0, 77}},                                        // prefill (4 tokens per tile at 16 heads)
      {{130, 45}, {0, 3}},                              // chunked prefill after a cached prefix + a prompt
      {{300, 1}, {0, 20}, {50, 1}, {64, 10}, {7, 1}},   // mixed decode and prefill
  };
  std::vector<SeqSpec> batch32;  // batch 32, contexts 200..510
  for (int32_t i = 0; i < 32; ++i) batch32.push_back({200 + 10 * i, 1});
  batches.push_back(batch32);
  std::vector<SeqSpec> batch8;  // batch 8 at 2,000+ (more pieces than tiles)
  for (int32_t i = 0; i < 8; ++i) batch8.push_back({2000 + 33 * i, 1});
  batches.push_back(batch8);
  // Batch 100 at contexts 1..99 (at most 4 key blocks a tile: one piece each, no split, no combine; at 128
  // heads 200 tiles for 132 CTAs, so CTAs run several tiles in turn).
  std::vector<SeqSpec> batch100;
  for (int32_t i = 0; i < 100; ++i) batch100.push_back({i, 1});
  batches.push_back(batch100);
  for (const MlaShape& s : shapes) {
    auto kv_b = make_weight(rng, s.heads * (s.nope + s.v), s.lora, s.kv_b_dtype,
                            1.0f / std::sqrt(static_cast<float>(s.lora)), "kv_b_proj");
    prepare(*kv_b);
    for (const auto& seqs : batches)
      EXPECT_LT(run_batch(rng, s, kv_b->weight, seqs), tolerance(s)) << s.name << ", " << describe(seqs);
  }
}

// The same batch twice through the tensor-core path gives the same bits (no race between the warps that
// share rows, or between the pieces of a split tile), and the legacy kernel agrees with it: 128 heads with a
// decode and a two-token chunk (64-row tiles), and 16 heads in pure decode (16-row tiles spread over 8
// warps).
TEST_P(MlaTest, TensorCorePathIsDeterministicAndAgreesWithTheLegacyKernel) {
  Rng rng(22);
  CudaBackend legacy{CudaBackendOptions{.device = 0, .sync_each_op = true, .legacy_mla = true}};
  for (const int64_t heads : {128, 16}) {
    const MlaShape s{"det", heads, 128, 64, 128, 512, 64, DType::kBF16};
    auto kv_b = make_kv_b(rng, s);  // its device copy (prepared by gpu_) serves both backends: one device
    const int64_t qk = s.nope + s.rope, slots = 64 * s.block_size;
    ForwardBatch batch;
    batch.max_blocks_per_seq = 20;
    if (heads == 128) {
      batch.query_start_loc = {0, 1, 3};
      batch.positions = {1200, 5, 6};
    } else {
      batch.query_start_loc = {0, 1, 2};
      batch.positions = {1200, 6};
    }
    batch.token_ids.assign(batch.positions.size(), 0);
    batch.seq_lens = {1201, 7};
    for (int32_t b = 0; b < 20; ++b) batch.block_table.push_back(63 - b);
    for (int32_t b = 0; b < 20; ++b) batch.block_table.push_back(b == 0 ? 40 : 0);
    const int64_t t = batch.num_tokens();
    const std::vector<float> cache_v = rng.normal(slots * (s.lora + s.rope)),
                             q_v = rng.normal(t * s.heads * qk);
    const std::vector<std::vector<float>> results =
        outputs_of({&gpu_, &gpu_, &legacy}, s, kv_b->weight, batch, cache_v, q_v);
    EXPECT_EQ(results[0], results[1]) << heads << " heads";
    EXPECT_LT(normalized_difference(results[0], results[2]), kChainTol) << heads << " heads";
  }
}

INSTANTIATE_TEST_SUITE_P(Mla, MlaTest, ::testing::Values(MlaDecodeKernel::kV1, MlaDecodeKernel::kV2),
                         [](const ::testing::TestParamInfo<MlaDecodeKernel>& info) {
                           return std::string(info.param == MlaDecodeKernel::kV1 ? "V1" : "V2");
                         });

}  // namespace
}  // namespace ds::testing
