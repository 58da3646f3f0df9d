// MLA over the paged latent cache: the CUDA kernel against the CPU reference, for prefill, chunked prefill
// with a cached prefix, decode, several sequences in one batch and block tables out of order.
#include <algorithm>
#include <numeric>

#include "op_test_util.h"

namespace ds::testing {
namespace {

struct MlaShape {
  const char* name;
  int64_t heads, nope, rope, v, lora;
  int32_t block_size;
  DType kv_b_dtype;
};

// A sequence of a batch: how many of its tokens are cached already, how many are new this step.
struct SeqSpec {
  int32_t cached, new_tokens;
};

using MlaTest = OpTest;

TEST_F(MlaTest, MatchesTheCpuReference) {
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
    const int64_t qk = s.nope + s.rope, cache_dim = s.lora + s.rope;
    auto kv_b = make_weight(rng, s.heads * (s.nope + s.v), s.lora, s.kv_b_dtype,
                            1.0f / std::sqrt(static_cast<float>(s.lora)), "kv_b_proj");
    prepare(*kv_b);
    const int32_t num_blocks = 64;
    const int64_t slots = int64_t{num_blocks} * s.block_size;
    for (const auto& seqs : batches) {
      // Blocks handed out in a shuffled order, so no sequence's blocks are contiguous.
      std::vector<int32_t> free_blocks(num_blocks);
      std::iota(free_blocks.begin(), free_blocks.end(), 0);
      std::shuffle(free_blocks.begin(), free_blocks.end(), rng.gen());
      ForwardBatch batch;
      int32_t max_blocks = 0;
      for (const SeqSpec& q : seqs)
        max_blocks = std::max(max_blocks, (q.cached + q.new_tokens + s.block_size - 1) / s.block_size);
      batch.max_blocks_per_seq = max_blocks;
      batch.query_start_loc = {0};
      size_t next_block = 0;
      for (const SeqSpec& q : seqs) {
        const int32_t len = q.cached + q.new_tokens;
        std::vector<int32_t> table(static_cast<size_t>(max_blocks), 0);
        for (int32_t b = 0; b < (len + s.block_size - 1) / s.block_size; ++b)
          table[b] = free_blocks.at(next_block++);
        for (int32_t i = 0; i < q.new_tokens; ++i) {
          const int32_t pos = q.cached + i;
          batch.token_ids.push_back(0);
          batch.positions.push_back(pos);
          batch.slot_mapping.push_back(int64_t{table[pos / s.block_size]} * s.block_size +
                                       pos % s.block_size);
        }
        batch.query_start_loc.push_back(static_cast<int32_t>(batch.token_ids.size()));
        batch.seq_lens.push_back(len);
        batch.block_table.insert(batch.block_table.end(), table.begin(), table.end());
      }
      batch.validate(slots, s.block_size);
      const int64_t t = batch.num_tokens();
      // Every slot of the cache holds a random latent (normalized-sized) and rope key.
      auto [cache_c, cache_g] = pair({slots, cache_dim}, rng.normal(slots * cache_dim));
      auto [qc, qg] = pair({t, s.heads * qk}, rng.normal(t * s.heads * qk));
      auto [c, g] = outputs({t, s.heads * s.v});
      MlaAttentionParams p;
      p.kv_b_proj = &kv_b->weight;
      p.num_heads = s.heads;
      p.qk_nope_head_dim = s.nope;
      p.qk_rope_head_dim = s.rope;
      p.v_head_dim = s.v;
      p.kv_lora_rank = s.lora;
      p.block_size = s.block_size;
      p.softmax_scale = 1.0f / std::sqrt(static_cast<float>(qk));
      p.q = &qc, p.kv_cache = &cache_c, p.out = &c;
      cpu_.mla_attention(p, batch);
      p.q = &qg, p.kv_cache = &cache_g, p.out = &g;
      gpu_.mla_attention(p, batch);
      // All of the kernel's arithmetic is fp32; only the output is rounded to bf16.
      EXPECT_LT(error(c, g), kBf16Tol) << s.name << ", " << seqs.size() << " sequences, " << t << " tokens";
    }
  }
}

}  // namespace
}  // namespace ds::testing
