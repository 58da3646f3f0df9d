// MLA test helpers shared by attention_test.cpp (the weight-absorbed kernels) and mla_prefill_test.cpp (the
// expanded prefill form): a shape, a batch of sequences laid out in shuffled blocks of a paged cache, and one
// run of that batch through the CPU reference and the CUDA backend.
#pragma once

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <numeric>
#include <string>
#include <vector>

#include "op_test_util.h"

namespace ds::testing {

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

// Tolerances. Shapes with latent 512 + rope 64 take the tensor-core paths: intermediates (q_latent or the
// expanded keys and values, the probabilities P, the latent output) are rounded to bf16 on the way (the GEMMs
// and mma take bf16 operands), which adds a few 1e-3 of normalized error to the output's own rounding, so
// they are held to kChainTol (1e-2; measured on the H100 in the SUMMARY line). Other shapes take the fp32
// kernel: one rounding of the output, kBf16Tol (4e-3).
inline double tolerance(const MlaShape& s) {
  return s.lora == 512 && s.rope == 64 ? kChainTol : kBf16Tol;
}

inline std::string describe(const std::vector<SeqSpec>& seqs) {
  std::string d;
  for (const SeqSpec& q : seqs) {
    d += '(';
    d += std::to_string(q.cached);
    d += '+';
    d += std::to_string(q.new_tokens);
    d += ')';
  }
  return d;
}

// The sequences laid out in shuffled blocks of a cache just large enough (plus spare blocks); sets *slots to
// the cache's number of slots.
inline ForwardBatch make_mla_batch(Rng& rng, int32_t block_size, const std::vector<SeqSpec>& seqs,
                                   int64_t* slots) {
  int32_t max_blocks = 0, needed = 0;
  for (const SeqSpec& q : seqs) {
    const int32_t blocks = (q.cached + q.new_tokens + block_size - 1) / block_size;
    max_blocks = std::max(max_blocks, blocks);
    needed += blocks;
  }
  const int32_t num_blocks = std::max(needed + 3, 64);
  *slots = int64_t{num_blocks} * block_size;
  // Blocks handed out in a shuffled order, so no sequence's blocks are contiguous.
  std::vector<int32_t> free_blocks(static_cast<size_t>(num_blocks));
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng.gen());
  ForwardBatch batch;
  batch.max_blocks_per_seq = max_blocks;
  batch.query_start_loc = {0};
  size_t next_block = 0;
  for (const SeqSpec& q : seqs) {
    const int32_t len = q.cached + q.new_tokens;
    std::vector<int32_t> table(static_cast<size_t>(max_blocks), 0);
    for (int32_t b = 0; b < (len + block_size - 1) / block_size; ++b) table[b] = free_blocks.at(next_block++);
    for (int32_t i = 0; i < q.new_tokens; ++i) {
      const int32_t pos = q.cached + i;
      batch.token_ids.push_back(0);
      batch.positions.push_back(pos);
      batch.slot_mapping.push_back(int64_t{table[pos / block_size]} * block_size + pos % block_size);
    }
    batch.query_start_loc.push_back(static_cast<int32_t>(batch.token_ids.size()));
    batch.seq_lens.push_back(len);
    batch.block_table.insert(batch.block_table.end(), table.begin(), table.end());
  }
  batch.validate(*slots, block_size);
  return batch;
}

inline MlaAttentionParams mla_params(const MlaShape& s, const Weight& kv_b) {
  MlaAttentionParams p;
  p.kv_b_proj = &kv_b;
  p.num_heads = s.heads;
  p.qk_nope_head_dim = s.nope;
  p.qk_rope_head_dim = s.rope;
  p.v_head_dim = s.v;
  p.kv_lora_rank = s.lora;
  p.block_size = s.block_size;
  p.softmax_scale = 1.0f / std::sqrt(static_cast<float>(s.nope + s.rope));
  return p;
}

// OpTest with the CUDA backend's MLA prefill form and attention kernel chosen.
class MlaOpTest : public OpTest {
 protected:
  explicit MlaOpTest(MlaPrefillForm form, MlaDecodeKernel kernel = MlaDecodeKernel::kV2)
      : OpTest(CudaBackendOptions{.device = 0,
                                  .sync_each_op = true,
                                  .fp8_gemm = false,
                                  .mla_prefill = form,
                                  .mla_decode = kernel}) {}

  std::unique_ptr<HostWeight> make_kv_b(Rng& rng, const MlaShape& s) {
    auto kv_b = make_weight(rng, s.heads * (s.nope + s.v), s.lora, s.kv_b_dtype,
                            1.0f / std::sqrt(static_cast<float>(s.lora)), "kv_b_proj");
    prepare(*kv_b);
    return kv_b;
  }

  // Runs one batch through both backends, every cache slot random (normalized-sized latents and rope keys);
  // returns the normalized error.
  double run_batch(Rng& rng, const MlaShape& s, const Weight& kv_b, const std::vector<SeqSpec>& seqs) {
    const int64_t qk = s.nope + s.rope, cache_dim = s.lora + s.rope;
    int64_t slots = 0;
    const ForwardBatch batch = make_mla_batch(rng, s.block_size, seqs, &slots);
    const int64_t t = batch.num_tokens();
    auto [cache_c, cache_g] = pair({slots, cache_dim}, rng.normal(slots * cache_dim));
    auto [qc, qg] = pair({t, s.heads * qk}, rng.normal(t * s.heads * qk));
    auto [c, g] = outputs({t, s.heads * s.v});
    MlaAttentionParams p = mla_params(s, kv_b);
    p.q = &qc, p.kv_cache = &cache_c, p.out = &c;
    cpu_.mla_attention(p, batch);
    p.q = &qg, p.kv_cache = &cache_g, p.out = &g;
    gpu_.mla_attention(p, batch);
    return error(c, g);
  }

  // mla_attention on each backend in turn, on the same cache ([slots, lora + rope] values) and query; their
  // outputs in fp32, in order. The backends share kv_b's device copy (one device, one process).
  std::vector<std::vector<float>> outputs_of(std::initializer_list<CudaBackend*> backends, const MlaShape& s,
                                             const Weight& kv_b, const ForwardBatch& batch,
                                             const std::vector<float>& cache_v, const std::vector<float>& q_v) {
    const int64_t t = batch.num_tokens(), slots = static_cast<int64_t>(cache_v.size()) / (s.lora + s.rope);
    std::vector<std::vector<float>> results;
    for (CudaBackend* b : backends) {
      Tensor cache = b->empty({slots, s.lora + s.rope}), q = b->empty({t, s.heads * (s.nope + s.rope)}),
             out = b->empty({t, s.heads * s.v});
      b->copy_from_host(cache_v, cache);
      b->copy_from_host(q_v, q);
      MlaAttentionParams p = mla_params(s, kv_b);
      p.q = &q, p.kv_cache = &cache, p.out = &out;
      b->mla_attention(p, batch);
      results.push_back(host(*b, out));
    }
    return results;
  }
};

// ||a - ref|| / ||ref||, with every element of a finite.
inline double normalized_difference(const std::vector<float>& a, const std::vector<float>& ref) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(std::isfinite(a[i])) << "element " << i;
    diff += (double(a[i]) - ref[i]) * (double(a[i]) - ref[i]);
    norm += double(ref[i]) * ref[i];
  }
  return std::sqrt(diff / norm);
}

}  // namespace ds::testing
