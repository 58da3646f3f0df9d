// CudaBackend::mla_attention: checks the batch against the cache on the host (so no kernel can read outside
// it), then runs one of two weight-absorbed paths:
// - latent 512 + rope 64 (DeepSeek-V2/V3), bf16 cache: q_nope through W_UK as one cuBLASLt GEMM batched over
//   heads, the tensor-core attention over the paged latent cache (cuda_mla.cu; decode, prefill and chunked
//   prefill tokens alike, in 64-row tiles of one sequence, split over the context so every SM has work), and
//   the latent output through W_UV as a second batched GEMM;
//   Prefill sequences the rule of cuda_mla_expanded.h picks take the expanded form instead (keys and values
//   through kv_b_proj, then causal flash attention, cuda_mla_prefill.cu); both write disjoint rows of out;
// - any other shape (the tiny fixtures) or DEEPSERVE_MLA=legacy: the first kernel, one thread block per
//   (token, head), fp32 throughout (cuda_attention.cu).
#include <algorithm>
#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_context.h"
#include "backend/cuda/cuda_gemm.h"
#include "backend/cuda/cuda_mla_expanded.h"
#include "util/check.h"

namespace ds {
namespace {

// Where the attention kernel finds its work: tiles, their pieces, and which CTA runs which (cuda_kernels.h).
struct MlaPlan {
  const cuda::MlaTile* tiles = nullptr;
  const cuda::MlaSegment* segments = nullptr;
  const int32_t* cta_seg_begin = nullptr;
  int32_t num_ctas = 0, max_tile_rows = 0;
  const int32_t* split_tiles = nullptr;
  int32_t num_split_tiles = 0, num_parts = 0;
  const int32_t* positions = nullptr;    // device [num_tokens]
  const int32_t* block_table = nullptr;  // device [num_seqs, table_pitch]
  int32_t table_pitch = 0;
};

// The plan made on the host from the batch and uploaded (any batch); `meta` keeps the upload alive.
MlaPlan host_plan(cuda::CudaContext& ctx, int64_t heads, const ForwardBatch& batch, const std::vector<char>& skip,
                  std::unique_ptr<cuda::DeviceBuffer>& meta) {
  using cuda::kMlaBlockKeys;
  using cuda::kMlaTileRows;
  // Tiles of 64 (token, head) rows of one sequence; every tile's key blocks dealt to one CTA per SM.
  std::vector<cuda::MlaTile> tiles;
  const int64_t tokens_per_tile = heads <= kMlaTileRows ? kMlaTileRows / heads : 1;
  for (int64_t s = 0; s < batch.num_seqs(); ++s) {
    if (skip[static_cast<size_t>(s)]) continue;
    const int32_t q0 = batch.query_start_loc[static_cast<size_t>(s)],
                  q1 = batch.query_start_loc[static_cast<size_t>(s) + 1];
    for (int32_t t = q0; t < q1; t += static_cast<int32_t>(tokens_per_tile)) {
      const int32_t ntok = std::min(static_cast<int32_t>(tokens_per_tile), q1 - t);
      int32_t kv_len = 0;
      for (int32_t i = t; i < t + ntok; ++i)
        kv_len = std::max(kv_len, batch.positions[static_cast<size_t>(i)] + 1);
      for (int64_t h0 = 0; h0 < heads; h0 += kMlaTileRows) {
        cuda::MlaTile tile;
        tile.seq = static_cast<int32_t>(s), tile.tok0 = t, tile.ntok = ntok,
        tile.head0 = static_cast<int32_t>(h0);
        tile.nheads = static_cast<int32_t>(std::min<int64_t>(kMlaTileRows, heads - h0));
        tile.kv_len = kv_len;
        tiles.push_back(tile);
      }
    }
  }
  // A piece costs its key blocks plus about two blocks' worth for loading Q and writing out; each CTA gets an
  // equal share (quota) of the total, pieces of at least kMinPiece blocks where the tile has them. Cutting
  // adds overhead, so the quota grows until the pieces fit one wave of one CTA per SM.
  constexpr int64_t kOverhead = 2, kMinPiece = 4;
  int64_t total = 0;
  for (const cuda::MlaTile& t : tiles) total += (t.kv_len + kMlaBlockKeys - 1) / kMlaBlockKeys + kOverhead;
  const int64_t target_ctas = std::max(ctx.sm_count, 1);
  std::vector<cuda::MlaSegment> segments;
  std::vector<int32_t> cta_begin;
  auto deal = [&](int64_t quota) {
    segments.clear();
    cta_begin.assign(1, 0);
    int64_t left = quota;
    for (size_t ti = 0; ti < tiles.size(); ++ti) {
      const int32_t nb = (tiles[ti].kv_len + kMlaBlockKeys - 1) / kMlaBlockKeys;
      for (int32_t kb = 0; kb < nb;) {
        const int64_t avail = left - kOverhead;
        const bool cta_empty = static_cast<int64_t>(segments.size()) == cta_begin.back();
        if (!cta_empty && avail < std::min<int64_t>(kMinPiece, nb - kb)) {
          cta_begin.push_back(static_cast<int32_t>(segments.size()));
          left = quota;
          continue;
        }
        int32_t take = static_cast<int32_t>(std::min<int64_t>(nb - kb, std::max<int64_t>(avail, 1)));
        if (nb - kb - take < kMinPiece / 2) take = nb - kb;  // no sliver of a piece left for the next CTA
        segments.push_back(cuda::MlaSegment{static_cast<int32_t>(ti), kb, kb + take, -1});
        left -= take + kOverhead;
        kb += take;
      }
    }
    if (static_cast<int64_t>(segments.size()) > cta_begin.back())
      cta_begin.push_back(static_cast<int32_t>(segments.size()));
    return static_cast<int64_t>(cta_begin.size()) - 1;
  };
  int64_t quota = std::max((total + target_ctas - 1) / target_ctas, kOverhead + kMinPiece);
  while (deal(quota) > target_ctas) quota += std::max<int64_t>(1, quota / 32);
  // Tiles cut into several pieces get a partial slot per piece (pieces of a tile are consecutive).
  std::vector<int32_t> split_tiles;
  int32_t num_parts = 0;
  for (size_t i = 0; i < segments.size();) {
    size_t j = i;
    while (j < segments.size() && segments[j].tile == segments[i].tile) ++j;
    cuda::MlaTile& tile = tiles[static_cast<size_t>(segments[i].tile)];
    tile.num_pieces = static_cast<int32_t>(j - i);
    if (tile.num_pieces > 1) {
      tile.part_base = num_parts;
      for (size_t k = i; k < j; ++k) segments[k].part = num_parts++;
      split_tiles.push_back(segments[i].tile);
    }
    i = j;
  }

  // Everything the kernels read, in one upload: tiles, segments, CTA offsets, split tiles, positions, table.
  static_assert(sizeof(cuda::MlaTile) == 8 * sizeof(int32_t) &&
                sizeof(cuda::MlaSegment) == 4 * sizeof(int32_t));
  std::vector<int32_t> words;
  auto append = [&words](const void* data, size_t bytes) {
    const size_t at = words.size();
    const auto* fields = static_cast<const int32_t*>(data);  // the structs are int32 fields only
    words.insert(words.end(), fields, fields + bytes / sizeof(int32_t));
    return at;
  };
  const size_t tiles_at = append(tiles.data(), tiles.size() * sizeof(cuda::MlaTile));
  const size_t segs_at = append(segments.data(), segments.size() * sizeof(cuda::MlaSegment));
  const size_t cta_at = append(cta_begin.data(), cta_begin.size() * sizeof(int32_t));
  const size_t split_at = append(split_tiles.data(), split_tiles.size() * sizeof(int32_t));
  const size_t pos_at = append(batch.positions.data(), batch.positions.size() * sizeof(int32_t));
  const size_t table_at = append(batch.block_table.data(), batch.block_table.size() * sizeof(int32_t));
  meta = std::make_unique<cuda::DeviceBuffer>(cuda::upload(ctx, std::span<const int32_t>(words)));
  const int32_t* m = meta->as<int32_t>();
  MlaPlan plan;
  plan.tiles = reinterpret_cast<const cuda::MlaTile*>(m + tiles_at);
  plan.segments = reinterpret_cast<const cuda::MlaSegment*>(m + segs_at);
  plan.cta_seg_begin = m + cta_at;
  plan.num_ctas = static_cast<int32_t>(cta_begin.size()) - 1;
  for (const cuda::MlaTile& t : tiles) plan.max_tile_rows = std::max(plan.max_tile_rows, t.ntok * t.nheads);
  plan.split_tiles = m + split_at;
  plan.num_split_tiles = static_cast<int32_t>(split_tiles.size());
  plan.num_parts = num_parts;
  plan.positions = m + pos_at;
  plan.block_table = m + table_at;
  plan.table_pitch = batch.max_blocks_per_seq;
  return plan;

}

// A decode batch staged by stage_step: one token per sequence, the step's arrays on the device.
bool decode_plan_applies(const cuda::CudaContext& ctx, const ForwardBatch& batch) {
  if (!ctx.step.active() || batch.num_tokens() != batch.num_seqs() ||
      ctx.step.find(batch.positions.data(), batch.positions.size() * sizeof(int32_t)) == nullptr)
    return false;
  for (int64_t s = 0; s <= batch.num_seqs(); ++s)
    if (batch.query_start_loc[static_cast<size_t>(s)] != s) return false;
  return true;
}

// The decode plan made on the device (cuda_kernels.h: launch_mla_decode_plan): its grid depends on the number
// of sequences only, so a graph can replay it whatever the contexts. Each tile's keys are split in as many
// pieces as there are SMs per tile (one wave), empty ones included when a context is short.
MlaPlan decode_plan(cuda::CudaContext& ctx, int64_t heads, const ForwardBatch& batch) {
  using cuda::kMlaTileRows;
  const auto head_groups = static_cast<int32_t>((heads + kMlaTileRows - 1) / kMlaTileRows);
  const int64_t num_tiles = batch.num_seqs() * head_groups;
  const auto splits = static_cast<int32_t>(std::max<int64_t>(1, ctx.sm_count / std::max<int64_t>(num_tiles, 1)));
  const int64_t num_ctas = num_tiles * splits;
  static_assert(sizeof(cuda::MlaTile) == 8 * sizeof(int32_t) && sizeof(cuda::MlaSegment) == 4 * sizeof(int32_t));
  const size_t words = static_cast<size_t>(num_tiles * 8 + num_ctas * 4 + (num_ctas + 1) + num_tiles);
  auto* base = static_cast<int32_t*>(ctx.mla_plan.get(ctx.stream, words * sizeof(int32_t)));
  cuda::MlaDecodePlanBuffers out;
  out.tiles = base;
  out.segments = out.tiles + num_tiles * 8;
  out.cta_seg_begin = out.segments + num_ctas * 4;
  out.split_tiles = out.cta_seg_begin + num_ctas + 1;
  cuda::MlaDecodePlanParams p;
  p.positions = static_cast<const int32_t*>(
      ctx.step.find(batch.positions.data(), batch.positions.size() * sizeof(int32_t)));
  p.num_seqs = static_cast<int32_t>(batch.num_seqs());
  p.num_heads = static_cast<int32_t>(heads);
  p.head_groups = head_groups;
  p.splits = splits;
  cuda::launch_mla_decode_plan(p, out, ctx.stream);
  DS_CUDA_CHECK_LAUNCH();
  MlaPlan plan;
  plan.tiles = reinterpret_cast<const cuda::MlaTile*>(out.tiles);
  plan.segments = reinterpret_cast<const cuda::MlaSegment*>(out.segments);
  plan.cta_seg_begin = out.cta_seg_begin;
  plan.num_ctas = static_cast<int32_t>(num_ctas);
  plan.max_tile_rows = static_cast<int32_t>(std::min<int64_t>(heads, kMlaTileRows));
  plan.split_tiles = out.split_tiles;
  plan.num_split_tiles = splits > 1 ? static_cast<int32_t>(num_tiles) : 0;
  plan.num_parts = splits > 1 ? static_cast<int32_t>(num_ctas) : 0;
  plan.positions = p.positions;
  plan.block_table = ctx.step.device<int32_t>(cuda::StepArray::kBlockTable);
  plan.table_pitch = ctx.step.table_pitch();
  return plan;
}

// The query and kv_b_proj in bf16, as the GEMMs and both kernels take them.
struct MlaBf16Operands {
  cuda::MatrixRef q;
  const void* kv_b_proj = nullptr;  // [heads * (nope + v), lora] row-major
};
MlaBf16Operands bf16_operands(cuda::CudaContext& ctx, const MlaAttentionParams& p) {
  MlaBf16Operands r;
  r.q = cuda::matrix(*p.q);
  if (r.q.dtype != DType::kBF16) {
    void* buf = ctx.input_bf16.get(ctx.stream, static_cast<size_t>(r.q.rows * r.q.cols) * 2);
    cuda::launch_convert(r.q, cuda::MatrixRef{buf, DType::kBF16, r.q.rows, r.q.cols, r.q.cols}, ctx.stream);
    DS_CUDA_CHECK_LAUNCH();
    r.q = cuda::MatrixRef{buf, DType::kBF16, r.q.rows, r.q.cols, r.q.cols};
  }
  const cuda::DeviceWeight w = cuda::device_weight(*p.kv_b_proj);
  r.kv_b_proj = w.data;
  if (w.dtype != DType::kBF16 || w.scale_inv != nullptr) {
    // FP8 kv_b_proj (V3): expanded to bf16 for the GEMMs, as linear() does (fp8 * scale rounded to bf16).
    void* buf = ctx.weight_bf16.get(ctx.stream, static_cast<size_t>(w.rows * w.cols) * 2);
    cuda::launch_weight_to_bf16(w, buf, ctx.stream);
    DS_CUDA_CHECK_LAUNCH();
    r.kv_b_proj = buf;
  }
  return r;
}

// Which attention kernel runs, and the bench's events around it (CudaBackend::set_mla_kernel_events).
struct MlaKernelChoice {
  MlaDecodeKernel kernel = MlaDecodeKernel::kV1;
  void* start_event = nullptr;  // cudaEvent_t
  void* stop_event = nullptr;
};

// The tensor-core path: see the file comment. Shapes and the batch are checked by the caller. Sequences with
// skip[s] set are left out (the expanded form writes their rows): the GEMMs run over each run of consecutive
// tokens of the others, the attention kernel over their tiles.
void mla_absorbed(cuda::CudaContext& ctx, const MlaAttentionParams& p, const ForwardBatch& batch,
                  const MlaBf16Operands& in, const std::vector<char>& skip, const MlaKernelChoice& choice) {
  using cuda::kMlaBlockKeys;
  using cuda::kMlaLatent;
  using cuda::kMlaTileRows;
  const int64_t heads = p.num_heads, nope = p.qk_nope_head_dim, vdim = p.v_head_dim, lora = p.kv_lora_rank;
  const int64_t num_tokens = batch.num_tokens();
  // Token ranges [first, second) of the sequences not skipped, neighbours merged: [0, T) when none is skipped.
  std::vector<std::pair<int32_t, int32_t>> runs;
  for (int64_t s = 0; s < batch.num_seqs(); ++s) {
    const int32_t q0 = batch.query_start_loc[static_cast<size_t>(s)],
                  q1 = batch.query_start_loc[static_cast<size_t>(s) + 1];
    if (skip[static_cast<size_t>(s)] || q0 == q1) continue;
    if (!runs.empty() && runs.back().second == q0) {
      runs.back().second = q1;
    } else {
      runs.emplace_back(q0, q1);
    }
  }
  if (runs.empty()) return;
  const cuda::MatrixRef q = in.q;
  const void* w_bf16 = in.kv_b_proj;

  // q_latent[t, h, :] = W_UK_h^T q_nope[t, h, :]: per head, column-major D [512, T] = A [512, nope] B [nope,
  // T], A = rows [h * (nope + v), + nope) of kv_b_proj read column-major, B = the query's nope columns.
  const size_t latent_bytes = static_cast<size_t>(num_tokens * heads * kMlaLatent) * 2;
  void* q_latent = ctx.mla_q.get(ctx.stream, latent_bytes);
  for (const auto& [t0, t1] : runs) {
    cuda::BatchedGemm uk;
    uk.m = kMlaLatent, uk.n = t1 - t0, uk.k = nope, uk.batch = heads, uk.trans_a = false;
    uk.a = w_bf16, uk.lda = lora, uk.stride_a = (nope + vdim) * lora;
    uk.b = static_cast<const std::byte*>(q.data) + static_cast<size_t>(t0 * q.ld) * 2, uk.ldb = q.ld;
    uk.stride_b = nope + p.qk_rope_head_dim;
    uk.d = static_cast<std::byte*>(q_latent) + static_cast<size_t>(t0 * heads * kMlaLatent) * 2;
    uk.d_dtype = DType::kBF16, uk.ldd = heads * kMlaLatent, uk.stride_d = kMlaLatent;
    cuda::gemm_bf16_batched(ctx, uk);
  }

  MlaPlan plan;
  std::unique_ptr<cuda::DeviceBuffer> host_meta;  // the host plan's upload, alive until the kernels are queued
  if (decode_plan_applies(ctx, batch)) {
    plan = decode_plan(ctx, heads, batch);
  } else {
    plan = host_plan(ctx, heads, batch, skip, host_meta);
  }

  void* o_latent = ctx.mla_o.get(ctx.stream, latent_bytes);
  const size_t part_o_bytes = static_cast<size_t>(plan.num_parts) * kMlaTileRows * kMlaLatent * sizeof(float);
  const size_t part_bytes = part_o_bytes + static_cast<size_t>(plan.num_parts) * kMlaTileRows * 2 * sizeof(float);
  auto* partials = static_cast<float*>(plan.num_parts > 0 ? ctx.mla_partial.get(ctx.stream, part_bytes) : nullptr);

  cuda::MlaDecodeParams k;
  k.q_latent = static_cast<const __nv_bfloat16*>(q_latent);
  k.q = static_cast<const __nv_bfloat16*>(q.data);
  k.q_ld = q.ld, k.q_head_stride = nope + p.qk_rope_head_dim, k.q_rope_offset = nope;
  const cuda::MatrixRef cache = cuda::matrix(*p.kv_cache);
  k.kv_cache = static_cast<const __nv_bfloat16*>(cache.data);
  k.kv_ld = cache.ld;
  k.positions = plan.positions;
  k.block_table = plan.block_table;
  k.max_blocks_per_seq = plan.table_pitch;
  k.block_size = p.block_size;
  k.num_heads = heads;
  k.scale_log2 = p.softmax_scale * 1.4426950408889634f;
  k.tiles = plan.tiles;
  k.segments = plan.segments;
  k.cta_seg_begin = plan.cta_seg_begin;
  k.num_ctas = plan.num_ctas;
  k.max_tile_rows = plan.max_tile_rows;
  k.split_tiles = plan.split_tiles;
  k.num_split_tiles = plan.num_split_tiles;
  k.part_o = partials;
  k.part_ml = partials == nullptr ? nullptr : partials + part_o_bytes / sizeof(float);
  k.o_latent = static_cast<__nv_bfloat16*>(o_latent);
  k.kernel_version = choice.kernel == MlaDecodeKernel::kV2 ? 2 : 1;
  if (choice.start_event != nullptr)
    DS_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(choice.start_event), ctx.stream));
  cuda::launch_mla_decode(k, ctx.stream);
  DS_CUDA_CHECK_LAUNCH();
  if (choice.stop_event != nullptr)
    DS_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(choice.stop_event), ctx.stream));

  // out[t, h, :] = W_UV_h o_latent[t, h, :]: per head, column-major D [v, T] = A^T [v, 512] B [512, T], A =
  // rows [h * (nope + v) + nope, + v) of kv_b_proj read column-major as [512, v].
  const cuda::MatrixRef out = cuda::matrix(*p.out);
  for (const auto& [t0, t1] : runs) {
    cuda::BatchedGemm uv;
    uv.m = vdim, uv.n = t1 - t0, uv.k = kMlaLatent, uv.batch = heads, uv.trans_a = true;
    uv.a = static_cast<const std::byte*>(w_bf16) + static_cast<size_t>(nope * lora) * 2;
    uv.lda = lora, uv.stride_a = (nope + vdim) * lora;
    uv.b = static_cast<const std::byte*>(o_latent) + static_cast<size_t>(t0 * heads * kMlaLatent) * 2;
    uv.ldb = heads * kMlaLatent, uv.stride_b = kMlaLatent;
    uv.d = static_cast<std::byte*>(out.data) + static_cast<size_t>(t0 * out.ld) * dtype_size(out.dtype);
    uv.d_dtype = out.dtype, uv.ldd = out.ld, uv.stride_d = vdim;
    cuda::gemm_bf16_batched(ctx, uv);
  }
}

}  // namespace

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
  // The tensor-core path needs DeepSeek's latent 512 + rope 64, a bf16 cache and 16-byte aligned query rows.
  const bool fast = !legacy_mla_ && lora == cuda::kMlaLatent && rope == cuda::kMlaRope &&
                    p.kv_cache->dtype == DType::kBF16 && nope % 8 == 0 && (nope + rope) % 8 == 0;
  if (fast) {
    // A decode batch staged for a graph stays exactly as it was: one token per sequence, so no sequence of it
    // takes the expanded form.
    const std::vector<int32_t> expanded =
        decode_plan_applies(*ctx_, batch) ? std::vector<int32_t>{} : cuda::mla_expanded_sequences(p, batch, mla_prefill_);
    std::vector<char> skip(static_cast<size_t>(batch.num_seqs()), 0);
    for (const int32_t s : expanded) skip[static_cast<size_t>(s)] = 1;
    if (num_tokens > 0) {
      const MlaBf16Operands in = bf16_operands(*ctx_, p);
      mla_absorbed(*ctx_, p, batch, in, skip,
                   MlaKernelChoice{mla_decode_, mla_kernel_start_, mla_kernel_stop_});
      if (!expanded.empty()) cuda::mla_expanded(*ctx_, p, batch, in.q, in.kv_b_proj, expanded);
    }
    ctx_->after_op("mla_attention");
    return;
  }
  // The step's arrays when stage_step staged this batch (a graph can replay them), else uploads of them.
  const cuda::DeviceArray d_positions = cuda::device_array(*ctx_, std::span<const int32_t>(batch.positions));
  const bool staged = ctx_->step.find(batch.positions.data(), batch.positions.size() * sizeof(int32_t)) != nullptr;
  std::unique_ptr<cuda::DeviceBuffer> d_seq, d_table;
  if (!staged) {
    d_seq = std::make_unique<cuda::DeviceBuffer>(cuda::upload(*ctx_, std::span<const int32_t>(seq_of_token)));
    d_table = std::make_unique<cuda::DeviceBuffer>(cuda::upload(*ctx_, std::span<const int32_t>(batch.block_table)));
  }

  cuda::MlaKernelParams k;
  k.q = cuda::matrix(*p.q);
  k.kv_cache = cuda::matrix(*p.kv_cache);
  k.kv_b_proj = cuda::device_weight(*p.kv_b_proj);
  k.out = cuda::matrix(*p.out);
  k.positions = d_positions.as<int32_t>();
  k.seq_of_token = staged ? ctx_->step.device<int32_t>(cuda::StepArray::kSeqOfToken) : d_seq->as<int32_t>();
  k.block_table = staged ? ctx_->step.device<int32_t>(cuda::StepArray::kBlockTable) : d_table->as<int32_t>();
  k.max_blocks_per_seq = staged ? ctx_->step.table_pitch() : batch.max_blocks_per_seq;
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
