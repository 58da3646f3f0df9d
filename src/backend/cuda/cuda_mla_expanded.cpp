// MLA prefill in the expanded form (DeepSeek-V3 inference/model.py's "naive" attention, over the paged
// cache): per group of sequences, the cache rows of their contexts gathered into one contiguous buffer [keys,
// 576], one GEMM latent [keys, 512] @ kv_b_proj^T -> k_nope | v per head [keys, heads * 256], then the causal
// flash attention of cuda_mla_prefill.cu with the rope key read from the gathered rows.
#include "backend/cuda/cuda_mla_expanded.h"

#include <algorithm>
#include <limits>

#include "backend/cuda/cuda_gemm.h"
#include "util/check.h"

namespace ds::cuda {
namespace {

// Keys [0, context_len) of sequence s are what its new tokens see: its largest position + 1.
int32_t context_len(const ForwardBatch& batch, int64_t s) {
  int32_t len = 0;
  for (int32_t t = batch.query_start_loc[static_cast<size_t>(s)];
       t < batch.query_start_loc[static_cast<size_t>(s) + 1]; ++t)
    len = std::max(len, batch.positions[static_cast<size_t>(t)] + 1);
  return len;
}

}  // namespace

size_t mla_expanded_bytes_per_key(const MlaAttentionParams& p) {
  return static_cast<size_t>(p.kv_lora_rank + p.qk_rope_head_dim +
                             p.num_heads * (p.qk_nope_head_dim + p.v_head_dim)) *
         2;
}

std::vector<int32_t> mla_expanded_sequences(const MlaAttentionParams& p, const ForwardBatch& batch,
                                            MlaPrefillForm form) {
  std::vector<int32_t> seqs;
  const bool shape = p.qk_nope_head_dim == kMlaPrefillNope && p.qk_rope_head_dim == kMlaPrefillRope &&
                     p.v_head_dim == kMlaPrefillV && p.kv_lora_rank == kMlaLatent;
  if (form == MlaPrefillForm::kAbsorbed || !shape) return seqs;
  const auto max_keys = static_cast<int64_t>(kMlaExpandMaxBytes / mla_expanded_bytes_per_key(p));
  const double lora = static_cast<double>(p.kv_lora_rank);
  for (int64_t s = 0; s < batch.num_seqs(); ++s) {
    const int32_t q0 = batch.query_start_loc[static_cast<size_t>(s)],
                  q1 = batch.query_start_loc[static_cast<size_t>(s) + 1];
    const int64_t n = q1 - q0, len = context_len(batch, s);
    if (n < 2 || len > max_keys) continue;
    if (form == MlaPrefillForm::kAuto) {
      if (n < kMlaExpandMinTokens) continue;
      double pairs = 0;
      for (int32_t t = q0; t < q1; ++t) pairs += batch.positions[static_cast<size_t>(t)] + 1;
      const double absorbed = static_cast<double>(n) * 4 * 128 * lora + pairs * 2 * (576 + 512);
      const double expanded = static_cast<double>(len) * 2 * 256 * lora + pairs * 2 * (192 + 128);
      if (expanded >= absorbed) continue;
    }
    seqs.push_back(static_cast<int32_t>(s));
  }
  return seqs;
}

void mla_expanded(CudaContext& ctx, const MlaAttentionParams& p, const ForwardBatch& batch, MatrixRef q,
                  const void* w_bf16, std::span<const int32_t> seqs) {
  const int64_t heads = p.num_heads, kv_cols = heads * (kMlaPrefillNope + kMlaPrefillV);
  const MatrixRef cache = matrix(*p.kv_cache);
  DS_CHECK(
      cache.dtype == DType::kBF16 && cache.cols == kMlaLatent + kMlaPrefillRope && q.dtype == DType::kBF16,
      "expanded MLA: a bf16 cache of 576 columns and a bf16 query");
  DS_CHECK(cache.rows <= std::numeric_limits<int32_t>::max(), "expanded MLA: {} cache slots exceed int32",
           cache.rows);
  const auto max_keys = static_cast<int64_t>(kMlaExpandMaxBytes / mla_expanded_bytes_per_key(p));
  const DeviceArray positions = device_array(ctx, std::span<const int32_t>(batch.positions));
  const MatrixRef out = matrix(*p.out);

  for (size_t i = 0; i < seqs.size();) {
    // One group: as many sequences as fit kMlaExpandMaxBytes together (each fits alone: the caller's rule).
    std::vector<int32_t> slots;  // [keys]: the cache slot of each key, sequence after sequence
    std::vector<MlaPrefillTile> tiles;
    for (; i < seqs.size(); ++i) {
      const int64_t s = seqs[i];
      const int32_t len = context_len(batch, s);
      DS_CHECK(len <= max_keys, "expanded MLA: seq {} has {} keys, more than one pass holds ({})", s, len,
               max_keys);
      if (!slots.empty() && static_cast<int64_t>(slots.size()) + len > max_keys) break;
      const auto key_base = static_cast<int32_t>(slots.size());
      for (int32_t k = 0; k < len; ++k) {
        const int32_t block =
            batch.block_table[static_cast<size_t>(s * batch.max_blocks_per_seq + k / p.block_size)];
        slots.push_back(block * p.block_size + k % p.block_size);
      }
      const int32_t q0 = batch.query_start_loc[static_cast<size_t>(s)],
                    q1 = batch.query_start_loc[static_cast<size_t>(s) + 1];
      for (int32_t t = q0; t < q1; t += kMlaPrefillTileRows) {
        MlaPrefillTile tile;
        tile.tok0 = t, tile.ntok = std::min(kMlaPrefillTileRows, q1 - t), tile.key_base = key_base;
        for (int32_t u = t; u < t + tile.ntok; ++u)
          tile.kv_len = std::max(tile.kv_len, batch.positions[static_cast<size_t>(u)] + 1);
        tiles.push_back(tile);
      }
    }
    // The longest tiles first, so the causal triangle's long rows do not end the launch alone.
    std::stable_sort(tiles.begin(), tiles.end(),
                     [](const MlaPrefillTile& a, const MlaPrefillTile& b) { return a.kv_len > b.kv_len; });
    const auto keys = static_cast<int64_t>(slots.size());
    DS_CHECK(tiles.size() <= 65535, "expanded MLA: {} tiles of 64 tokens exceed one launch's grid",
             tiles.size());

    static_assert(sizeof(MlaPrefillTile) == 4 * sizeof(int32_t));
    std::vector<int32_t> words(slots);
    const auto* tile_words = reinterpret_cast<const int32_t*>(tiles.data());  // int32 fields only
    words.insert(words.end(), tile_words, tile_words + tiles.size() * 4);
    const DeviceBuffer meta = upload(ctx, std::span<const int32_t>(words));

    // [keys, 576]: latent | rope key of every key of the group.
    void* latent = ctx.mla_expand_latent.get(ctx.stream, static_cast<size_t>(keys * cache.cols) * 2);
    const MatrixRef gathered{latent, DType::kBF16, keys, cache.cols, cache.cols};
    launch_gather_rows(cache, meta.as<int32_t>(), gathered, ctx.stream);
    DS_CUDA_CHECK_LAUNCH();
    // [keys, heads * 256] = latent [keys, 512] @ kv_b_proj [heads * 256, 512]^T: k_nope | v per head.
    void* kv = ctx.mla_expand_kv.get(ctx.stream, static_cast<size_t>(keys * kv_cols) * 2);
    gemm_bf16(ctx, latent, cache.cols, w_bf16, p.kv_lora_rank, p.kv_lora_rank,
              MatrixRef{kv, DType::kBF16, keys, kv_cols, kv_cols});

    MlaPrefillParams k;
    k.q = static_cast<const __nv_bfloat16*>(q.data), k.q_ld = q.ld;
    k.kv = static_cast<const __nv_bfloat16*>(kv), k.kv_ld = kv_cols;
    k.k_rope = static_cast<const __nv_bfloat16*>(latent) + kMlaLatent, k.k_rope_ld = cache.cols;
    k.positions = positions.as<int32_t>();
    k.tiles = reinterpret_cast<const MlaPrefillTile*>(meta.as<int32_t>() + keys);
    k.num_tiles = static_cast<int32_t>(tiles.size());
    k.num_heads = static_cast<int32_t>(heads);
    k.scale_log2 = p.softmax_scale * 1.4426950408889634f;
    k.out = out.data, k.out_ld = out.ld, k.out_f32 = out.dtype == DType::kF32;
    launch_mla_prefill(k, ctx.stream);
    DS_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace ds::cuda
