// The flash-attention step on mma.sync fragments that the MLA kernels share (cuda_mla.cu: weight-absorbed,
// cuda_mla_prefill.cu: expanded): a warp holds S for 16 query rows x one block of keys in m16n8k16 accumulators
// (s[j][e]: row g + 8 (e / 2), key 8 j + 2 t4 + (e & 1), with g = lane / 4, t4 = lane % 4), and the running
// max, sum and output of its rows g (index 0) and g + 8 (index 1).
#pragma once

#include <cuda_bf16.h>
#include <math_constants.h>

#include "backend/cuda/cuda_mma.cuh"

namespace ds::cuda::flash {

// The causal mask and the scale into the log2 domain: keys after row_pos[half] (the row's own position; -1 for
// a padding row) become -inf. key0 is the block's first key.
template <int kSTiles>
__device__ __forceinline__ void mask_and_scale(float (&s)[kSTiles][4], int key0, int t4, const int (&row_pos)[2],
                                               float scale_log2) {
#pragma unroll
  for (int j = 0; j < kSTiles; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = key0 + j * 8 + 2 * t4 + (e & 1);
      s[j][e] = key <= row_pos[e / 2] ? s[j][e] * scale_log2 : -CUDART_INF_F;
    }
}

// The online softmax over this block: s becomes exp2(s - running max), the running sum and output are rescaled
// to the new max. l_run holds this thread's columns only; the quad is summed once at the end.
template <int kSTiles, int kOTiles>
__device__ __forceinline__ void online_softmax(float (&s)[kSTiles][4], float (&o)[kOTiles][4], float (&m_run)[2],
                                               float (&l_run)[2]) {
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    float mx = -CUDART_INF_F;
#pragma unroll
    for (int j = 0; j < kSTiles; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * ri], s[j][2 * ri + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m_run[ri], mx);
    const float m_use = m_new == -CUDART_INF_F ? 0.0f : m_new;  // no key yet: keep everything at 0
    const float alpha = exp2f(m_run[ri] - m_use);
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < kSTiles; ++j) {
      s[j][2 * ri] = exp2f(s[j][2 * ri] - m_use);
      s[j][2 * ri + 1] = exp2f(s[j][2 * ri + 1] - m_use);
      sum += s[j][2 * ri] + s[j][2 * ri + 1];
    }
    l_run[ri] = l_run[ri] * alpha + sum;
    m_run[ri] = m_new;
#pragma unroll
    for (int n = 0; n < kOTiles; ++n) o[n][2 * ri] *= alpha, o[n][2 * ri + 1] *= alpha;
  }
}

// O += P V: P is s as it stands (the A operand, keys 16 kk .. 16 kk + 15), V the block's rows in shared memory
// (row r at v + r * v_stride, this warp's first output column at v).
template <int kSTiles, int kOTiles>
__device__ __forceinline__ void accumulate_pv(float (&o)[kOTiles][4], const float (&s)[kSTiles][4],
                                              const __nv_bfloat16* v, int v_stride, int lane) {
#pragma unroll
  for (int kk = 0; kk < kSTiles / 2; ++kk) {
    const uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                            pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                            pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
    const __nv_bfloat16* vrow = v + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * v_stride + (lane / 16) * 8;
#pragma unroll
    for (int n = 0; n < kOTiles; n += 2) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, vrow + n * 8);
      mma_bf16(o[n], pa, b[0], b[1]);
      mma_bf16(o[n + 1], pa, b[2], b[3]);
    }
  }
}

// After the last block: each row's sum over the quad of threads that hold its columns.
__device__ __forceinline__ void finish_row_sums(float (&l_run)[2]) {
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    l_run[ri] += __shfl_xor_sync(0xffffffffu, l_run[ri], 1);
    l_run[ri] += __shfl_xor_sync(0xffffffffu, l_run[ri], 2);
  }
}

}  // namespace ds::cuda::flash
