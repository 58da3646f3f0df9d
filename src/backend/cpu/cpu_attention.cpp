// Multi-head latent attention on the CPU, weight-absorbed (DeepSeek-V2 paper, section 2.1.2):
//   score(t, j) = scale * ( (W_UK_h^T q_nope_h) . c_j  +  q_rope_h . k_rope_j )
//   out_h       = W_UV_h ( sum_j softmax_j * c_j )
// where c_j is the cached, normalized latent of token j and W_UK_h, W_UV_h are head h's rows of kv_b_proj.
// It equals HF's expanded form (k = W_UK c, v = W_UV c) up to fp32 rounding, and reads only the 576-wide cache.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace ds {

void CpuBackend::mla_attention(const MlaAttentionParams& p, const ForwardBatch& batch) {
  const int64_t heads = p.num_heads, nope = p.qk_nope_head_dim, rope = p.qk_rope_head_dim, vdim = p.v_head_dim;
  const int64_t lora = p.kv_lora_rank, qk_head = nope + rope, cache_dim = lora + rope;
  DS_CHECK(p.q->cols() == heads * qk_head && p.out->cols() == heads * vdim && p.kv_cache->cols() == cache_dim &&
               p.kv_b_proj->rows == heads * (nope + vdim) && p.kv_b_proj->cols == lora,
           "mla_attention shapes");
  // kv_b_proj in fp32: [heads, nope + vdim, lora].
  std::vector<float> kv_b(static_cast<size_t>(p.kv_b_proj->rows * lora));
  dequantize_rows(*p.kv_b_proj, 0, p.kv_b_proj->rows, kv_b.data());
  const float* cache = p.kv_cache->f32();
  const float* q = p.q->f32();
  float* out = p.out->f32();

  // Work items: (token, head) pairs.
  const int64_t num_tokens = batch.num_tokens();
  std::vector<int32_t> seq_of_token(static_cast<size_t>(num_tokens));
  for (int64_t s = 0; s < batch.num_seqs(); ++s)
    for (int32_t t = batch.query_start_loc[s]; t < batch.query_start_loc[s + 1]; ++t)
      seq_of_token[static_cast<size_t>(t)] = static_cast<int32_t>(s);

  pool_.parallel_for(num_tokens * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> q_latent(static_cast<size_t>(lora)), o_latent(static_cast<size_t>(lora)), scores;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t t = item / heads, h = item % heads;
      const int32_t s = seq_of_token[static_cast<size_t>(t)];
      // Causal: the token at position p sees keys 0..p of its own sequence.
      const int64_t num_keys = batch.positions[static_cast<size_t>(t)] + 1;
      DS_CHECK(num_keys <= batch.seq_lens[static_cast<size_t>(s)], "position beyond context");
      const float* qh = q + t * p.q->cols() + h * qk_head;
      const float* w_uk = kv_b.data() + h * (nope + vdim) * lora;  // [nope, lora]
      const float* w_uv = w_uk + nope * lora;                      // [vdim, lora]
      std::fill(q_latent.begin(), q_latent.end(), 0.0f);
      for (int64_t d = 0; d < nope; ++d)
        for (int64_t c = 0; c < lora; ++c) q_latent[static_cast<size_t>(c)] += qh[d] * w_uk[d * lora + c];
      scores.resize(static_cast<size_t>(num_keys));
      float max_score = -INFINITY;
      const int32_t* blocks = batch.block_table.data() + s * batch.max_blocks_per_seq;
      for (int64_t j = 0; j < num_keys; ++j) {
        const int64_t slot = int64_t{blocks[j / p.block_size]} * p.block_size + j % p.block_size;
        const float* kv = cache + slot * cache_dim;
        float dot = 0.0f;
        for (int64_t c = 0; c < lora; ++c) dot += q_latent[static_cast<size_t>(c)] * kv[c];
        for (int64_t r = 0; r < rope; ++r) dot += qh[nope + r] * kv[lora + r];
        scores[static_cast<size_t>(j)] = dot * p.softmax_scale;
        max_score = std::max(max_score, scores[static_cast<size_t>(j)]);
      }
      double denom = 0.0;
      for (auto& sc : scores) {
        sc = std::exp(sc - max_score);
        denom += sc;
      }
      std::fill(o_latent.begin(), o_latent.end(), 0.0f);
      for (int64_t j = 0; j < num_keys; ++j) {
        const int64_t slot = int64_t{blocks[j / p.block_size]} * p.block_size + j % p.block_size;
        const float* kv = cache + slot * cache_dim;
        const float w = static_cast<float>(scores[static_cast<size_t>(j)] / denom);
        for (int64_t c = 0; c < lora; ++c) o_latent[static_cast<size_t>(c)] += w * kv[c];
      }
      float* oh = out + t * p.out->cols() + h * vdim;
      for (int64_t e = 0; e < vdim; ++e) {
        float acc = 0.0f;
        for (int64_t c = 0; c < lora; ++c) acc += w_uv[e * lora + c] * o_latent[static_cast<size_t>(c)];
        oh[e] = acc;
      }
    }
  });
}

}  // namespace ds
