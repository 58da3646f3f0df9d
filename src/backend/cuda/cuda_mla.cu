// Weight-absorbed MLA over the paged 576-wide latent cache on tensor cores (the FlashMLA idea; no code of
// FlashMLA's is used). The absorption GEMMs (q_nope through W_UK before, the latent output through W_UV
// after) run outside, as cuBLASLt batched GEMMs; this file holds the attention itself and the split-KV
// combine.
//
// A tile is 64 query rows of one sequence: (token, head) pairs, row r = token (r / nheads), head (r %
// nheads), so a decode tile is one token x 64 heads and a prefill tile is 64 / heads consecutive tokens x all
// heads (4 tokens at 16 heads). The host cuts every tile's key range into pieces of whole 32-key blocks and
// deals pieces to one CTA per SM in equal shares (a CTA may take the end of one tile and the start of the
// next); a tile cut into several pieces writes fp32 partials (unnormalized output, running max and sum per
// row) that the combine kernel merges.
//
// One CTA = 8 warps over kGroups groups of 16 rows (4: 64-row tiles; 1: tiles of at most 16 rows, as in
// decode with 16 heads, where 6 of 8 warps would otherwise idle). The W = 8 / kGroups warps of a group (w,
// w + kGroups, ...) share its rows: for S = Q K^T each computes 1/W of the 576 dimensions for all 32 keys
// and they add their parts through shared memory in a fixed order (all then hold the same S and run the same
// online softmax, in fp32, base 2); for O += P V each keeps 1/W of the 512 output columns in registers (16
// rows x 256 columns = 128 fp32 per thread at W = 2), P going from the S accumulators straight into the A
// operand. mma.sync m16n8k16 bf16 with fp32 accumulation; keys arrive by 16-byte cp.async, 3 stages deep,
// rows padded by 16 bytes so ldmatrix is free of bank conflicts. Rows past the tile and keys past the
// context are zero-filled and masked, so garbage in unused cache slots never reaches the arithmetic.
#include <cuda_bf16.h>
#include <math_constants.h>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_flash.cuh"
#include "backend/cuda/cuda_mla_tile.cuh"
#include "backend/cuda/cuda_mma.cuh"

namespace ds::cuda {
namespace {

using namespace mla;  // the tile layout both MLA kernels share (cuda_mla_tile.cuh)
constexpr int kKSteps = kDim / 16;         // 36 k-steps of 16 dimensions in S

// Synchronizes the warps that share a row group; ids 1..4 (0 is __syncthreads).
template <int kWarpsPerGroup>
__device__ __forceinline__ void group_barrier(int group) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(group + 1), "n"(kWarpsPerGroup * 32));
}

// Shared memory of mla_decode_kernel<kGroups>: Q for kGroups * 16 rows, the key stages, the S exchange.
constexpr size_t smem_bytes(int groups) {
  return size_t(groups * 16 + kStages * kKeys) * kStride * sizeof(__nv_bfloat16) +
         size_t{8 * 4 * 32} * sizeof(float4);
}

template <int kGroups>
__global__ void __launch_bounds__(kThreads, 1) mla_decode_kernel(MlaDecodeParams p) {
  constexpr int kQRows = kGroups * 16;         // rows of Q kept: tiles of more rows take more groups
  constexpr int kW = kThreads / 32 / kGroups;  // warps per row group
  constexpr int kCols = kLat / kW;             // output columns per warp
  constexpr int kTiles = kCols / 8;            // n-tiles of O per warp
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto* sq = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [kQRows][kStride]: q_latent | q_rope
  __nv_bfloat16* sk = sq + kQRows * kStride;              // [kStages][kKeys][kStride]: latent | rope key
  auto* sx = reinterpret_cast<float4*>(sk + kStages * kKeys * kStride);  // [8 warps][4][32 lanes]

  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int pair = warp % kGroups, half = warp / kGroups;  // row group; part of it
  const int ks_begin = half * kKSteps / kW, ks_end = (half + 1) * kKSteps / kW;
  const int g = lane / 4, t4 = lane % 4;
  const int seg_end = p.cta_seg_begin[blockIdx.x + 1];

  for (int si = p.cta_seg_begin[blockIdx.x]; si < seg_end; ++si) {
    const MlaSegment seg = p.segments[si];
    const MlaTile tile = p.tiles[seg.tile];
    const int rows = tile.ntok * tile.nheads;
    if (seg.kb1 <= seg.kb0) {  // uniform across the CTA, so no barrier is left unmatched
      write_empty_partial<kThreads>(p, seg, rows, tid);
      continue;
    }
    const bool warp_active = pair * 16 < rows;
    int row_pos[2];  // this thread's rows g and g + 8 of the warp's 16: the key limit, -1 for no row
#pragma unroll
    for (int ri = 0; ri < 2; ++ri) {
      const int r = pair * 16 + g + 8 * ri;
      row_pos[ri] = r < rows ? p.positions[tile.tok0 + r / tile.nheads] : -1;
    }
    __syncthreads();  // the previous segment is done with sq and sk

    load_query_tile<kThreads>(p, tile, rows, kQRows, sq, tid);
    auto load_block = [&](int kb, int stage) {
      load_key_block(p, tile, kb, sk + stage * kKeys * kStride, tid);
    };
    const int nblk = seg.kb1 - seg.kb0;
    // Blocks 0 .. kStages - 2 in flight before the loop, one commit group each (the first holds Q too).
#pragma unroll
    for (int b = 0; b < kStages - 1; ++b) {
      if (b < nblk) load_block(seg.kb0 + b, b);
      cp_async_commit();
    }

    float o[kTiles][4];
#pragma unroll
    for (int n = 0; n < kTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m_run[2] = {-CUDART_INF_F, -CUDART_INF_F}, l_run[2] = {0.0f, 0.0f};

    for (int i = 0; i < nblk; ++i) {
      cp_async_wait<kStages - 2>();  // this thread's copies of block i (and Q) have landed
      __syncthreads();               // everyone's have; and block i - 1's buffer is free again
      if (i + kStages - 1 < nblk) load_block(seg.kb0 + i + kStages - 1, (i + kStages - 1) % kStages);
      cp_async_commit();
      if (!warp_active) continue;
      const __nv_bfloat16* kbuf = sk + (i % kStages) * kKeys * kStride;

      // This warp's part of S = Q K^T: 16 rows x 32 keys over k-steps [ks_begin, ks_end).
      float s[4][4];
#pragma unroll
      for (int j = 0; j < 4; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll 6
      for (int step = 0; step < (kKSteps + kW - 1) / kW; ++step) {
        const int ks = ks_begin + step;
        if (kKSteps % kW != 0 && ks >= ks_end) break;  // uneven shares (W = 8: 4 or 5 k-steps)
        const int d0 = ks * 16;
        uint32_t a[4];
        ldmatrix_x4(a, sq + (pair * 16 + lane % 16) * kStride + d0 + (lane / 16) * 8);
#pragma unroll
        for (int j = 0; j < 4; j += 2) {
          uint32_t b[4];
          ldmatrix_x4(b, kbuf + (j * 8 + (lane / 16) * 8 + lane % 8) * kStride + d0 + ((lane / 8) % 2) * 8);
          mma_bf16(s[j], a, b[0], b[1]);
          mma_bf16(s[j + 1], a, b[2], b[3]);
        }
      }
      // Sum the group's parts in one order in every warp, so all hold identical S (conflict-free:
      // lane-contiguous float4s).
#pragma unroll
      for (int j = 0; j < 4; ++j)
        sx[(warp * 4 + j) * 32 + lane] = make_float4(s[j][0], s[j][1], s[j][2], s[j][3]);
      group_barrier<kW>(pair);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float4 sum = sx[(pair * 4 + j) * 32 + lane];
#pragma unroll
        for (int w = 1; w < kW; ++w) {
          const float4 x = sx[((pair + w * kGroups) * 4 + j) * 32 + lane];
          sum.x += x.x, sum.y += x.y, sum.z += x.z, sum.w += x.w;
        }
        s[j][0] = sum.x, s[j][1] = sum.y, s[j][2] = sum.z, s[j][3] = sum.w;
      }

      // Causal mask, scale (log2 domain), the online softmax of rows g and g + 8, then O += P V over this
      // warp's columns (V is the latent part of the same keys).
      flash::mask_and_scale(s, (seg.kb0 + i) * kKeys, t4, row_pos, p.scale_log2);
      flash::online_softmax(s, o, m_run, l_run);
      flash::accumulate_pv(o, s, kbuf + half * kCols, kStride, lane);
    }

    if (!warp_active) continue;
    flash::finish_row_sums(l_run);
#pragma unroll
    for (int ri = 0; ri < 2; ++ri) {
      if (row_pos[ri] < 0) continue;
      const int r = pair * 16 + g + 8 * ri;
      const int col0 = half * kCols + 2 * t4;
      if (seg.part < 0) {
        const int64_t tok = tile.tok0 + r / tile.nheads, head = tile.head0 + r % tile.nheads;
        __nv_bfloat16* dst = p.o_latent + (tok * p.num_heads + head) * kLat + col0;
        const float inv = 1.0f / l_run[ri];
#pragma unroll
        for (int n = 0; n < kTiles; ++n)
          *reinterpret_cast<__nv_bfloat162*>(dst + n * 8) =
              __floats2bfloat162_rn(o[n][2 * ri] * inv, o[n][2 * ri + 1] * inv);
      } else {
        const int64_t prow = int64_t{seg.part} * kRows + r;
        float* dst = p.part_o + prow * kLat + col0;
#pragma unroll
        for (int n = 0; n < kTiles; ++n)
          *reinterpret_cast<float2*>(dst + n * 8) = make_float2(o[n][2 * ri], o[n][2 * ri + 1]);
        if (half == 0 && t4 == 0) {
          p.part_ml[prow * 2] = m_run[ri];
          p.part_ml[prow * 2 + 1] = l_run[ri];
        }
      }
    }
  }
}

// One block per (split tile, row): out = sum_i 2^(m_i - M) o_i / sum_i 2^(m_i - M) l_i.
__global__ void __launch_bounds__(128) mla_combine_kernel(MlaDecodeParams p) {
  const MlaTile tile = p.tiles[p.split_tiles[blockIdx.x]];
  const int r = static_cast<int>(blockIdx.y);
  if (r >= tile.ntok * tile.nheads) return;
  float m_max = -CUDART_INF_F;
  for (int i = 0; i < tile.num_pieces; ++i)
    m_max = fmaxf(m_max, p.part_ml[(int64_t{tile.part_base + i} * kRows + r) * 2]);
  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float denom = 0.0f;
  const int col = static_cast<int>(threadIdx.x) * 4;
  for (int i = 0; i < tile.num_pieces; ++i) {
    const int64_t prow = int64_t{tile.part_base + i} * kRows + r;
    const float m = p.part_ml[prow * 2];
    if (m == -CUDART_INF_F) continue;  // no key of this piece is visible to the row
    const float w = exp2f(m - m_max);
    denom += w * p.part_ml[prow * 2 + 1];
    const float4 x = *reinterpret_cast<const float4*>(p.part_o + prow * kLat + col);
    acc.x += w * x.x, acc.y += w * x.y, acc.z += w * x.z, acc.w += w * x.w;
  }
  const float inv = 1.0f / denom;
  const int64_t tok = tile.tok0 + r / tile.nheads, head = tile.head0 + r % tile.nheads;
  __nv_bfloat16* dst = p.o_latent + (tok * p.num_heads + head) * kLat + col;
  reinterpret_cast<__nv_bfloat162*>(dst)[0] = __floats2bfloat162_rn(acc.x * inv, acc.y * inv);
  reinterpret_cast<__nv_bfloat162*>(dst)[1] = __floats2bfloat162_rn(acc.z * inv, acc.w * inv);
}

// One thread per (tile, piece) of a decode batch: tile = (sequence, 64-head group), its keys cut into
// `splits` equal runs of whole key blocks; CTA c runs segment c.
__global__ void mla_decode_plan_kernel(MlaDecodePlanParams p, int32_t* tiles_out, int32_t* segments_out,
                                       int32_t* cta_begin_out, int32_t* split_tiles_out) {
  const int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const int64_t num_tiles = int64_t{p.num_seqs} * p.head_groups;
  if (i > num_tiles * p.splits) return;
  cta_begin_out[i] = static_cast<int32_t>(i);  // [num_ctas + 1]: one segment each
  if (i == num_tiles * p.splits) return;
  const int32_t ti = static_cast<int32_t>(i / p.splits), piece = static_cast<int32_t>(i % p.splits);
  const int32_t seq = ti / p.head_groups, group = ti % p.head_groups;
  const int32_t kv_len = p.positions[seq] + 1;
  const int32_t nblk = (kv_len + kMlaBlockKeys - 1) / kMlaBlockKeys;
  const int32_t per = (nblk + p.splits - 1) / p.splits;
  const int32_t kb0 = min(piece * per, nblk), kb1 = min(kb0 + per, nblk);
  auto* seg = reinterpret_cast<MlaSegment*>(segments_out) + i;
  *seg = MlaSegment{ti, kb0, kb1, p.splits > 1 ? static_cast<int32_t>(i) : -1};
  if (piece != 0) return;
  auto* tile = reinterpret_cast<MlaTile*>(tiles_out) + ti;
  const int32_t head0 = group * kMlaTileRows;
  *tile = MlaTile{seq, seq, 1, head0, min(kMlaTileRows, p.num_heads - head0), kv_len, p.splits,
                  ti * p.splits};
  if (p.splits > 1) split_tiles_out[ti] = ti;
}

}  // namespace

size_t mla_decode_smem_bytes() {
  return smem_bytes(4);
}

void launch_mla_decode(const MlaDecodeParams& p, cudaStream_t stream) {
  if (p.num_ctas == 0) return;
  static_assert(kLat / 4 == 128, "the combine kernel's 128 threads cover 4 columns each");
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capturing) != cudaSuccess) return;  // the caller's launch check reports it
  if (p.kernel_version == 2 && p.max_tile_rows > 16) {
    if (!launch_mla_decode_v2_rows64(p, capturing != cudaStreamCaptureStatusNone, stream)) return;
  } else {
    // Tiles of at most 16 rows (decode at <= 16 heads) spread each row group over all 8 warps (both
    // versions: 4 key blocks in flight for them instead of 2 measured no faster on the H100, bench/BENCH.md).
    auto* kernel = p.max_tile_rows <= 16 ? mla_decode_kernel<1> : mla_decode_kernel<4>;
    const size_t smem = smem_bytes(p.max_tile_rows <= 16 ? 1 : 4);
    // While a graph is recorded, the warm-up run before it has set the attribute already.
    if (capturing == cudaStreamCaptureStatusNone) {
      const cudaError_t attr =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
      if (attr != cudaSuccess) return;  // left as the last error; the caller's launch check reports it
    }
    kernel<<<static_cast<unsigned>(p.num_ctas), kThreads, smem, stream>>>(p);
  }
  if (p.num_split_tiles > 0)
    mla_combine_kernel<<<dim3(static_cast<unsigned>(p.num_split_tiles), kRows), 128, 0, stream>>>(p);
}

void launch_mla_decode_plan(const MlaDecodePlanParams& p, const MlaDecodePlanBuffers& out, cudaStream_t stream) {
  const int64_t threads = int64_t{p.num_seqs} * p.head_groups * p.splits + 1;
  constexpr int kBlock = 128;
  mla_decode_plan_kernel<<<static_cast<unsigned>((threads + kBlock - 1) / kBlock), kBlock, 0, stream>>>(
      p, out.tiles, out.segments, out.cta_seg_begin, out.split_tiles);
}

}  // namespace ds::cuda
