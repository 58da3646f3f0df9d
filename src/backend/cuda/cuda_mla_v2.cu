// The second MLA decode kernel, for tiles of more than 16 rows (CudaBackendOptions::mla_decode = kV2): the same tiles,
// pieces, partials and combine as cuda_mla.cu (read its header first), with the warps laid out to read less
// shared memory per key and to exponentiate each probability once.
//
// Why: in the first kernel each warp owns 16 rows, so every key and value element is read from shared memory
// by 4 warps (mma.sync's B operand serves 16 rows), Q is read again every 32 keys, and the two warps of a row
// group both run the same softmax: per 32-key step ~400 KB of ldmatrix/exchange traffic per SM (~3,100 cycles
// at 128 B/cycle) against ~2,200 cycles of mma. Cutting that by a quarter and halving the exp work made it
// only 6-8% faster at 128 heads on the H100 (bench/BENCH.md), so they were not the main bound; latency with 2
// warps per scheduler and lock-stepped phases is the likelier one (wgmma's asynchrony is the remedy).
//
// Layout here: two row groups of 32 rows, four warps each (warp w: group w / 4, quarter q = w % 4).
// - S = Q K^T: warp q computes the 32 rows x 32 keys over dims [144 q, + 144) (9 k-steps, two 16-row A
//   tiles per B fragment, so each key element is read by 2 warps instead of 4);
// - the four partial S go through shared memory; warp q sums one 8-row slice of the group's 32 rows over
//   all 32 keys (in the fixed order 0..3, so the result does not depend on timing), runs the online softmax
//   for those rows (so every probability is computed once) and writes P (bf16) and the rows' rescale factors;
// - O += P V: warp q keeps 32 rows x output columns [128 q, + 128) (128 fp32 per thread, as before), A from
//   the shared P tile by ldmatrix, V from the same shared stage as K (each value read by 2 warps, not 4);
//   the rescale of O is skipped when no row's maximum moved (bit-identical: it would multiply by 1).
// Two group barriers per 32-key step (after the partial S, after P), one __syncthreads for the key pipeline.
// Shared memory: Q 74.8 KB + 3 stages of 37.4 KB + partial S 16 KB + P and factors 5.6 KB = 209 KB.
#include <cuda_bf16.h>
#include <math_constants.h>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_mla_tile.cuh"
#include "backend/cuda/cuda_mma.cuh"

namespace ds::cuda {
namespace {

using namespace mla;  // the tile layout both MLA kernels share (cuda_mla_tile.cuh)
constexpr int kGroupRows = 32;             // rows per group of 4 warps
constexpr int kKStepsPerWarp = kDim / 16 / 4;  // 9 k-steps of 16 dims each
constexpr int kCols = kLat / 4;                // 128 output columns per warp
constexpr int kPStride = kKeys + 8;            // bf16 per row of the P tile: 80 bytes, ldmatrix conflict-free
// float2 per group of the partial S: [4 warps][2 row tiles][2 row halves][4 key tiles][32 lanes].
constexpr int kPartialPerGroup = 4 * 2 * 2 * 4 * 32;

static_assert(kDim / 16 % 4 == 0 && kLat % (4 * 16) == 0, "four warps share dims and output columns evenly");

// Synchronizes the 4 warps of row group `group`; ids 1..2 (0 is __syncthreads).
__device__ __forceinline__ void group_barrier(int group) {
  asm volatile("bar.sync %0, 128;\n" ::"r"(group + 1));
}

__global__ void __launch_bounds__(kThreads, 1) mla_decode_v2_kernel(MlaDecodeParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto* sq = reinterpret_cast<__nv_bfloat16*>(smem_raw);                    // [kRows][kStride]
  __nv_bfloat16* sk = sq + kRows * kStride;                                 // [kStages][kKeys][kStride]
  auto* sx = reinterpret_cast<float2*>(sk + kStages * kKeys * kStride);     // [2 groups][kPartialPerGroup]
  auto* sp = reinterpret_cast<__nv_bfloat16*>(sx + 2 * kPartialPerGroup);   // [2][kGroupRows][kPStride]
  auto* salpha = reinterpret_cast<float*>(sp + 2 * kGroupRows * kPStride);  // [2][kGroupRows]
  float* sl = salpha + 2 * kGroupRows;                                      // [2][kGroupRows]

  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int group = warp / 4, q = warp % 4;
  const int g = lane / 4, t4 = lane % 4;
  // The 8-row slice this warp runs the softmax for: row tile rt_s, half ri_s (rows g of it).
  const int rt_s = q / 2, ri_s = q % 2;
  const int slice_row = rt_s * 16 + ri_s * 8 + g;  // within the group
  float2* gx = sx + group * kPartialPerGroup;
  __nv_bfloat16* gp = sp + group * kGroupRows * kPStride;
  float* galpha = salpha + group * kGroupRows;
  float* gl = sl + group * kGroupRows;
  const int seg_end = p.cta_seg_begin[blockIdx.x + 1];

  for (int si = p.cta_seg_begin[blockIdx.x]; si < seg_end; ++si) {
    const MlaSegment seg = p.segments[si];
    const MlaTile tile = p.tiles[seg.tile];
    const int rows = tile.ntok * tile.nheads;
    if (seg.kb1 <= seg.kb0) {  // uniform across the CTA, so no barrier is left unmatched
      write_empty_partial<kThreads>(p, seg, rows, tid);
      continue;
    }
    const bool group_active = group * kGroupRows < rows;
    const int my_row = group * kGroupRows + slice_row;  // the softmax row of this thread, within the tile
    const int row_pos = my_row < rows ? p.positions[tile.tok0 + my_row / tile.nheads] : -1;
    __syncthreads();  // the previous segment is done with sq, sk and the group buffers

    load_query_tile<kThreads>(p, tile, rows, kRows, sq, tid);
    auto load_block = [&](int kb, int stage) {
      load_key_block(p, tile, kb, sk + stage * kKeys * kStride, tid);
    };
    const int nblk = seg.kb1 - seg.kb0;
    load_block(seg.kb0, 0);
    cp_async_commit();  // group: Q and block 0
    if (nblk > 1) load_block(seg.kb0 + 1, 1);
    cp_async_commit();

    float o[2][kCols / 8][4];  // [row tile][n-tile of this warp's 128 columns][accumulator]
#pragma unroll
    for (int rt = 0; rt < 2; ++rt)
#pragma unroll
      for (int n = 0; n < kCols / 8; ++n) o[rt][n][0] = o[rt][n][1] = o[rt][n][2] = o[rt][n][3] = 0.0f;
    float m_run = -CUDART_INF_F, l_run = 0.0f;  // of row slice_row; l over this thread's keys (quad summed)

    for (int i = 0; i < nblk; ++i) {
      cp_async_wait<kStages - 2>();  // this thread's copies of block i (and Q) have landed
      __syncthreads();               // everyone's have; and block i - 1's buffer is free again
      if (i + 2 < nblk) load_block(seg.kb0 + i + 2, (i + 2) % kStages);
      cp_async_commit();
      if (!group_active) continue;
      const __nv_bfloat16* kbuf = sk + (i % kStages) * kKeys * kStride;
      const __nv_bfloat16* qrows = sq + group * kGroupRows * kStride;

      // This warp's part of S: 32 rows x 32 keys over k-steps [9 q, 9 q + 9).
      float s[2][4][4];
#pragma unroll
      for (int rt = 0; rt < 2; ++rt)
#pragma unroll
        for (int j = 0; j < 4; ++j) s[rt][j][0] = s[rt][j][1] = s[rt][j][2] = s[rt][j][3] = 0.0f;
#pragma unroll 3
      for (int step = 0; step < kKStepsPerWarp; ++step) {
        const int d0 = (q * kKStepsPerWarp + step) * 16;
        uint32_t a[2][4];
#pragma unroll
        for (int rt = 0; rt < 2; ++rt)
          ldmatrix_x4(a[rt], qrows + (rt * 16 + lane % 16) * kStride + d0 + (lane / 16) * 8);
#pragma unroll
        for (int j = 0; j < 4; j += 2) {
          uint32_t b[4];
          ldmatrix_x4(b, kbuf + (j * 8 + (lane / 16) * 8 + lane % 8) * kStride + d0 + ((lane / 8) % 2) * 8);
#pragma unroll
          for (int rt = 0; rt < 2; ++rt) {
            mma_bf16(s[rt][j], a[rt], b[0], b[1]);
            mma_bf16(s[rt][j + 1], a[rt], b[2], b[3]);
          }
        }
      }
      // Partial S out, lane-contiguous float2s (conflict-free).
#pragma unroll
      for (int rt = 0; rt < 2; ++rt)
#pragma unroll
        for (int ri = 0; ri < 2; ++ri)
#pragma unroll
          for (int j = 0; j < 4; ++j)
            gx[(((q * 2 + rt) * 2 + ri) * 4 + j) * 32 + lane] =
                make_float2(s[rt][j][2 * ri], s[rt][j][2 * ri + 1]);
      group_barrier(group);

      // Row slice_row over all 32 keys: the four parts summed in one order, masked, scaled (log2 domain).
      float v[4][2];
      const int key0 = (seg.kb0 + i) * kKeys;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float2 sum = gx[(((0 * 2 + rt_s) * 2 + ri_s) * 4 + j) * 32 + lane];
#pragma unroll
        for (int w = 1; w < 4; ++w) {
          const float2 x = gx[(((w * 2 + rt_s) * 2 + ri_s) * 4 + j) * 32 + lane];
          sum.x += x.x, sum.y += x.y;
        }
        const int key = key0 + j * 8 + 2 * t4;
        v[j][0] = key <= row_pos ? sum.x * p.scale_log2 : -CUDART_INF_F;
        v[j][1] = key + 1 <= row_pos ? sum.y * p.scale_log2 : -CUDART_INF_F;
      }
      float mx = -CUDART_INF_F;
#pragma unroll
      for (int j = 0; j < 4; ++j) mx = fmaxf(mx, fmaxf(v[j][0], v[j][1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_run, mx);
      const float m_use = m_new == -CUDART_INF_F ? 0.0f : m_new;  // no key yet: keep everything at 0
      const float alpha = exp2f(m_run - m_use);
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        v[j][0] = exp2f(v[j][0] - m_use);
        v[j][1] = exp2f(v[j][1] - m_use);
        sum += v[j][0] + v[j][1];
        *reinterpret_cast<__nv_bfloat162*>(gp + slice_row * kPStride + j * 8 + 2 * t4) =
            __floats2bfloat162_rn(v[j][0], v[j][1]);
      }
      l_run = l_run * alpha + sum;
      m_run = m_new;
      if (t4 == 0) galpha[slice_row] = alpha;
      group_barrier(group);

      // Rescale O by its rows' factors, unless none of the warp's rows moved its maximum.
      float row_alpha[2][2];
      bool moved = false;
#pragma unroll
      for (int rt = 0; rt < 2; ++rt)
#pragma unroll
        for (int ri = 0; ri < 2; ++ri) {
          row_alpha[rt][ri] = galpha[rt * 16 + ri * 8 + g];
          moved |= row_alpha[rt][ri] != 1.0f;
        }
      if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
        for (int rt = 0; rt < 2; ++rt)
#pragma unroll
          for (int n = 0; n < kCols / 8; ++n) {
            o[rt][n][0] *= row_alpha[rt][0], o[rt][n][1] *= row_alpha[rt][0];
            o[rt][n][2] *= row_alpha[rt][1], o[rt][n][3] *= row_alpha[rt][1];
          }
      }

      // O += P V over this warp's 128 columns.
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {
        uint32_t pa[2][4];
#pragma unroll
        for (int rt = 0; rt < 2; ++rt)
          ldmatrix_x4(pa[rt], gp + (rt * 16 + lane % 16) * kPStride + kk * 16 + (lane / 16) * 8);
        const __nv_bfloat16* vrow =
            kbuf + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kStride + q * kCols + (lane / 16) * 8;
#pragma unroll
        for (int n = 0; n < kCols / 8; n += 2) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, vrow + n * 8);
#pragma unroll
          for (int rt = 0; rt < 2; ++rt) {
            mma_bf16(o[rt][n], pa[rt], b[0], b[1]);
            mma_bf16(o[rt][n + 1], pa[rt], b[2], b[3]);
          }
        }
      }
    }

    if (!group_active) continue;
    // The rows' sums (quad-summed) to every warp of the group; partial maxima and sums out.
    l_run += __shfl_xor_sync(0xffffffffu, l_run, 1);
    l_run += __shfl_xor_sync(0xffffffffu, l_run, 2);
    if (t4 == 0) {
      gl[slice_row] = l_run;
      if (seg.part >= 0 && row_pos >= 0) {
        const int64_t prow = int64_t{seg.part} * kRows + my_row;
        p.part_ml[prow * 2] = m_run;
        p.part_ml[prow * 2 + 1] = l_run;
      }
    }
    group_barrier(group);
#pragma unroll
    for (int rt = 0; rt < 2; ++rt)
#pragma unroll
      for (int ri = 0; ri < 2; ++ri) {
        const int gr = rt * 16 + ri * 8 + g, r = group * kGroupRows + gr;
        if (r >= rows) continue;
        const int col0 = q * kCols + 2 * t4;
        if (seg.part < 0) {
          const int64_t tok = tile.tok0 + r / tile.nheads, head = tile.head0 + r % tile.nheads;
          __nv_bfloat16* dst = p.o_latent + (tok * p.num_heads + head) * kLat + col0;
          const float inv = 1.0f / gl[gr];
#pragma unroll
          for (int n = 0; n < kCols / 8; ++n)
            *reinterpret_cast<__nv_bfloat162*>(dst + n * 8) =
                __floats2bfloat162_rn(o[rt][n][2 * ri] * inv, o[rt][n][2 * ri + 1] * inv);
        } else {
          float* dst = p.part_o + (int64_t{seg.part} * kRows + r) * kLat + col0;
#pragma unroll
          for (int n = 0; n < kCols / 8; ++n)
            *reinterpret_cast<float2*>(dst + n * 8) = make_float2(o[rt][n][2 * ri], o[rt][n][2 * ri + 1]);
        }
      }
  }
}

constexpr size_t kSmemBytes = size_t{kRows + kStages * kKeys} * kStride * sizeof(__nv_bfloat16) +
                              size_t{2 * kPartialPerGroup} * sizeof(float2) +
                              size_t{2 * kGroupRows * kPStride} * sizeof(__nv_bfloat16) +
                              size_t{4 * kGroupRows} * sizeof(float);

}  // namespace

bool launch_mla_decode_v2_rows64(const MlaDecodeParams& p, bool capturing, cudaStream_t stream) {
  // While a graph is recorded, the warm-up run before it has set the attribute already.
  if (!capturing && cudaFuncSetAttribute(mla_decode_v2_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(kSmemBytes)) != cudaSuccess)
    return false;  // left as the last error; the caller's launch check reports it
  mla_decode_v2_kernel<<<static_cast<unsigned>(p.num_ctas), kThreads, kSmemBytes, stream>>>(p);
  return true;
}

}  // namespace ds::cuda
