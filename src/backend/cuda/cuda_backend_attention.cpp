// CudaBackend::mla_attention: checks the batch against the cache on the host (so the kernel cannot read
// outside it), uploads the per-token metadata and launches the weight-absorbed MLA kernel.
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_context.h"
#include "util/check.h"

namespace ds {

void CudaBackend::mla_attention(const MlaAttentionParams& p, const ForwardBatch& batch) {
  const int64_t heads = p.num_heads, nope = p.qk_nope_head_dim, rope = p.qk_rope_head_dim,
                vdim = p.v_head_dim;
  const int64_t lora = p.kv_lora_rank, cache_dim = lora + rope;
  DS_CHECK(p.q->cols() == heads * (nope + rope) && p.out->cols() == heads * vdim &&
               p.kv_cache->cols() == cache_dim && p.kv_b_proj->rows == heads * (nope + vdim) &&
               p.kv_b_proj->cols == lora && p.q->rows() == batch.num_tokens() &&
               p.out->rows() == batch.num_tokens(),
           "mla_attention shapes");
  DS_CHECK(p.block_size > 0 && p.kv_cache->rows() % p.block_size == 0, "cache of {} slots in blocks of {}",
           p.kv_cache->rows(), p.block_size);
  const int64_t num_blocks = p.kv_cache->rows() / p.block_size;
  const int64_t num_tokens = batch.num_tokens();
  std::vector<int32_t> seq_of_token(static_cast<size_t>(num_tokens));
  for (int64_t s = 0; s < batch.num_seqs(); ++s) {
    for (int32_t t = batch.query_start_loc[s]; t < batch.query_start_loc[s + 1]; ++t) {
      seq_of_token[static_cast<size_t>(t)] = static_cast<int32_t>(s);
      DS_CHECK(batch.positions[static_cast<size_t>(t)] >= 0 &&
                   batch.positions[static_cast<size_t>(t)] < batch.seq_lens[static_cast<size_t>(s)],
               "token {} at position {} beyond its context {}", t, batch.positions[static_cast<size_t>(t)],
               batch.seq_lens[static_cast<size_t>(s)]);
    }
    // Every block the sequence's keys live in must be a block of this cache.
    const int64_t used = (batch.seq_lens[static_cast<size_t>(s)] + p.block_size - 1) / p.block_size;
    DS_CHECK(used <= batch.max_blocks_per_seq, "seq {}: context {} needs {} blocks, table has {}", s,
             batch.seq_lens[static_cast<size_t>(s)], used, batch.max_blocks_per_seq);
    for (int64_t b = 0; b < used; ++b) {
      const int32_t block = batch.block_table[static_cast<size_t>(s * batch.max_blocks_per_seq + b)];
      DS_CHECK(block >= 0 && block < num_blocks, "seq {}: block {} outside the cache ({} blocks)", s, block,
               num_blocks);
    }
  }
  const cuda::DeviceBuffer d_positions = cuda::upload(*ctx_, std::span<const int32_t>(batch.positions));
  const cuda::DeviceBuffer d_seq = cuda::upload(*ctx_, std::span<const int32_t>(seq_of_token));
  const cuda::DeviceBuffer d_table = cuda::upload(*ctx_, std::span<const int32_t>(batch.block_table));

  cuda::MlaKernelParams k;
  k.q = cuda::matrix(*p.q);
  k.kv_cache = cuda::matrix(*p.kv_cache);
  k.kv_b_proj = cuda::device_weight(*p.kv_b_proj);
  k.out = cuda::matrix(*p.out);
  k.positions = d_positions.as<int32_t>();
  k.seq_of_token = d_seq.as<int32_t>();
  k.block_table = d_table.as<int32_t>();
  k.max_blocks_per_seq = batch.max_blocks_per_seq;
  k.block_size = p.block_size;
  k.num_heads = heads;
  k.nope = nope;
  k.rope = rope;
  k.v = vdim;
  k.lora = lora;
  k.softmax_scale = p.softmax_scale;
  cuda::launch_mla_attention(k, ctx_->stream);
  ctx_->after_op("mla_attention");
}

}  // namespace ds
