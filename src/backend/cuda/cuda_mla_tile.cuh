// What the two weight-absorbed MLA attention kernels (cuda_mla.cu, cuda_mla_v2.cu) share: the shared-memory row
// layout of the query tile and of a key block, and the cp.async loads that fill them.
#pragma once

#include <cuda_bf16.h>
#include <math_constants.h>

#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/cuda_mma.cuh"

namespace ds::cuda::mla {

inline constexpr int kLat = kMlaLatent, kDim = kMlaLatent + kMlaRope;  // 512 + 64
inline constexpr int kKeys = kMlaBlockKeys;                            // 32 keys per block
inline constexpr int kStride = kDim + 8;  // bf16 elements per shared row: +16 bytes against bank conflicts
inline constexpr int kChunks = kDim * 2 / 16;     // 72 16-byte chunks per row
inline constexpr int kLatChunks = kLat * 2 / 16;  // 64 of them latent
inline constexpr int kRows = kMlaTileRows;        // 64 query rows per tile
inline constexpr int kThreads = 256;              // 8 warps; load_key_block gives each key row 8 threads
inline constexpr int kStages = 3;                 // key blocks in shared memory, 2 in flight while one is used

// The first q_rows rows of the tile's query into sq ([q_rows][kStride]): row r is token tok0 + r / nheads, head
// head0 + r % nheads, its q_latent then its rope part; rows at or past `rows` are zero-filled. Every thread of
// the CTA (kThreads of them) takes part; the caller commits the cp.async group.
template <int kThreads>
__device__ __forceinline__ void load_query_tile(const MlaDecodeParams& p, const MlaTile& tile, int rows, int q_rows,
                                                __nv_bfloat16* sq, int tid) {
  for (int c = tid; c < q_rows * kChunks; c += kThreads) {
    const int r = c / kChunks, ch = c % kChunks;
    const bool valid = r < rows;
    const int64_t tok = tile.tok0 + (valid ? r / tile.nheads : 0);
    const int64_t head = tile.head0 + (valid ? r % tile.nheads : 0);
    const __nv_bfloat16* src = ch < kLatChunks ? p.q_latent + (tok * p.num_heads + head) * kLat + ch * 8
                                               : p.q + tok * p.q_ld + head * p.q_head_stride + p.q_rope_offset +
                                                     (ch - kLatChunks) * 8;
    cp_async16(sq + r * kStride + ch * 8, src, valid);
  }
}

// Key block kb of the tile's sequence (keys kb * kKeys ..) into one stage ([kKeys][kStride]) through the block
// table; keys at or past kv_len are zero-filled. kThreads threads: 8 per key row, 9 chunks each.
__device__ __forceinline__ void load_key_block(const MlaDecodeParams& p, const MlaTile& tile, int kb,
                                               __nv_bfloat16* stage, int tid) {
  const int r = tid / 8;
  const int key = kb * kKeys + r;
  const bool valid = key < tile.kv_len;
  int64_t slot = 0;
  if (valid)
    slot = int64_t{p.block_table[int64_t{tile.seq} * p.max_blocks_per_seq + key / p.block_size]} * p.block_size +
           key % p.block_size;
  const __nv_bfloat16* src = p.kv_cache + slot * p.kv_ld;
  __nv_bfloat16* dst = stage + r * kStride;
#pragma unroll
  for (int m = 0; m < kChunks / 8; ++m) {
    const int ch = tid % 8 + 8 * m;
    cp_async16(dst + ch * 8, src + ch * 8, valid);
  }
}

// An empty piece of a tile (the device-made decode plan gives short contexts fewer pieces than CTAs) has seen no
// key: its partial rows get max -inf and sum 0, which the combine skips. Every thread of the CTA takes part.
template <int kThreads>
__device__ __forceinline__ void write_empty_partial(const MlaDecodeParams& p, const MlaSegment& seg, int rows,
                                                    int tid) {
  if (seg.part < 0) return;
  for (int r = tid; r < rows; r += kThreads) {
    p.part_ml[(int64_t{seg.part} * kMlaTileRows + r) * 2] = -CUDART_INF_F;
    p.part_ml[(int64_t{seg.part} * kMlaTileRows + r) * 2 + 1] = 0.0f;
  }
}

}  // namespace ds::cuda::mla
