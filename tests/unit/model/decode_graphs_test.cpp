// Decode graphs without a GPU: the sizes captured, the padding of a batch to one of them, and a backend
// without graphs (the CPU) declining to capture and running every step eagerly.
#include "model/decode_graphs.h"

#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "fixture.h"
#include "model/deepseek.h"

namespace ds {
namespace {

TEST(DecodeGraphSizes, PowersOfTwoUpTo256CappedAtMaxNumSeqs) {
  EXPECT_EQ(decode_graph_sizes(256), (std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 128, 256}));
  EXPECT_EQ(decode_graph_sizes(1024), (std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 128, 256}));
  EXPECT_EQ(decode_graph_sizes(64), (std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64}));
  EXPECT_EQ(decode_graph_sizes(100), (std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 100}));
  EXPECT_EQ(decode_graph_sizes(1), (std::vector<int64_t>{1}));
  const std::vector<int64_t> sizes = decode_graph_sizes(100);
  EXPECT_EQ(padded_decode_size(sizes, 1), 1);
  EXPECT_EQ(padded_decode_size(sizes, 3), 4);
  EXPECT_EQ(padded_decode_size(sizes, 64), 64);
  EXPECT_EQ(padded_decode_size(sizes, 65), 100);
  EXPECT_EQ(padded_decode_size(sizes, 101), 0);
}

// Two sequences (contexts 20 and 3, blocks [7, 9] and [4]) padded to 4.
TEST(PadDecodeBatch, PaddingRowsReadTheFirstKeyAndStoreNothing) {
  const ForwardBatch b = testing::make_batch({{{11}, 19, {7, 9}}, {{12}, 2, {4}}}, 16);
  ASSERT_TRUE(b.is_decode());
  const ForwardBatch p = pad_decode_batch(b, 4);
  EXPECT_TRUE(p.is_decode());
  EXPECT_EQ(p.token_ids, (std::vector<int32_t>{11, 12, 0, 0}));
  EXPECT_EQ(p.positions, (std::vector<int32_t>{19, 2, 0, 0}));
  EXPECT_EQ(p.slot_mapping, (std::vector<int64_t>{9 * 16 + 3, 4 * 16 + 2, -1, -1}));
  EXPECT_EQ(p.query_start_loc, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(p.seq_lens, (std::vector<int32_t>{20, 3, 1, 1}));
  EXPECT_EQ(p.max_blocks_per_seq, 2);
  EXPECT_EQ(p.block_table, (std::vector<int32_t>{7, 9, 4, 0, 7, 7, 7, 7}));
  EXPECT_EQ(p.logits_indices, (std::vector<int32_t>{0, 1, 2, 3}));
  p.validate(64 * 16, 16);
  EXPECT_THROW((void)pad_decode_batch(b, 1), InternalError);
}

TEST(PadDecodeBatch, OnlyDecodeBatchesArePadded) {
  const ForwardBatch prefill = testing::make_batch({{{1, 2, 3}, 0, {0}}}, 16);
  EXPECT_FALSE(prefill.is_decode());
  EXPECT_THROW((void)pad_decode_batch(prefill, 4), InternalError);
  // One token per sequence, but logits of only one of them: not a decode step.
  ForwardBatch partial = testing::make_batch({{{1}, 4, {0}}, {{2}, 4, {1}}}, 16);
  partial.logits_indices = {1};
  EXPECT_FALSE(partial.is_decode());
}

TEST(DecodeGraphsOnTheCpu, CaptureDeclinesAndForwardRunsEagerly) {
  CpuBackend cpu(1);
  auto model = DeepseekModel::load(testing::fixture_dir("deepseek_v2_tiny_bf16"), cpu);
  model->allocate_kv_cache(8, 16);
  const std::vector<int64_t> sizes = {1, 2};
  const DecodeGraphSummary s = model->capture_decode_graphs(sizes, 4);
  EXPECT_TRUE(s.sizes.empty());
  EXPECT_EQ(s.line(),
            "warning: no CUDA graphs, decode steps run eagerly: the backend has no graphs (the CPU, or "
            "DEEPSERVE_CUDA_SYNC)");
  const ForwardBatch b = testing::make_batch({{{5}, 0, {1}}}, 16);
  EXPECT_EQ(model->decode_graph_size(b), 0);
  std::vector<float> a(static_cast<size_t>(model->config().vocab_size)), e(a.size());
  cpu.copy_to_host(model->forward(b), a);
  cpu.copy_to_host(model->forward_eager(b), e);
  EXPECT_EQ(a, e);
}

TEST(DecodeGraphSummary, LineNamesSizesTimeAndMemory) {
  DecodeGraphSummary s;
  s.sizes = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  s.seconds = 2.34;
  s.memory_bytes = int64_t{300} << 20;
  EXPECT_EQ(s.line(), "captured CUDA graphs for 9 decode batch sizes (1..256) in 2.3 s, 300 MiB");
}

// store_kv's slot -1 (a padding row) stores nothing; the CPU reference skips it like the CUDA kernel.
TEST(StoreKv, SlotMinusOneStoresNothing) {
  CpuBackend cpu(1);
  Tensor l = cpu.empty({2, 2}), k = cpu.empty({2, 1}), cache = cpu.empty({3, 3});
  cpu.copy_from_host(std::vector<float>{1, 2, 3, 4}, l);
  cpu.copy_from_host(std::vector<float>{5, 6}, k);
  cpu.copy_from_host(std::vector<float>(9, 0.0f), cache);
  const std::vector<int64_t> slots = {2, -1};
  cpu.store_kv(l, k, 0, slots, cache);
  std::vector<float> got(9);
  cpu.copy_to_host(cache, got);
  EXPECT_EQ(got, (std::vector<float>{0, 0, 0, 0, 0, 0, 1, 2, 5}));
}

}  // namespace
}  // namespace ds
