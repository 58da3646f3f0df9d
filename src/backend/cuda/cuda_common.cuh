// Device-side helpers shared by the kernels: loads and stores of activations by runtime dtype (the branch is
// uniform across a warp), weight elements with FP8 block scales, and warp/block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "backend/cuda/cuda_kernels.h"

namespace ds::cuda {

__device__ __forceinline__ float load_act(const void* p, DType dtype, int64_t i) {
  if (dtype == DType::kF32) return static_cast<const float*>(p)[i];
  return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
}

__device__ __forceinline__ void store_act(void* p, DType dtype, int64_t i, float v) {
  if (dtype == DType::kF32) {
    static_cast<float*>(p)[i] = v;
  } else {
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  }
}

__device__ __forceinline__ float load_at(const MatrixRef& m, int64_t r, int64_t c) {
  return load_act(m.data, m.dtype, r * m.ld + c);
}

__device__ __forceinline__ void store_at(const MatrixRef& m, int64_t r, int64_t c, float v) {
  store_act(m.data, m.dtype, r * m.ld + c, v);
}

// w[r][c] in fp32: the stored value times its block scale (exactly the CPU's dequantize_rows).
__device__ __forceinline__ float weight_at(const DeviceWeight& w, int64_t r, int64_t c) {
  const int64_t i = r * w.cols + c;
  float v;
  switch (w.dtype) {
    case DType::kF32:
      v = static_cast<const float*>(w.data)[i];
      break;
    case DType::kF16:
      v = __half2float(static_cast<const __half*>(w.data)[i]);
      break;
    case DType::kBF16:
      v = __bfloat162float(static_cast<const __nv_bfloat16*>(w.data)[i]);
      break;
    default: {
      __nv_fp8_e4m3 f;
      f.__x = static_cast<const __nv_fp8_storage_t*>(w.data)[i];
      v = static_cast<float>(f);
    }
  }
  if (w.scale_inv != nullptr) v *= w.scale_inv[(r / w.block_rows) * w.scale_cols + c / w.block_cols];
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block; every thread gets the result. `shared` holds at least 32 floats.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  v = warp_sum(v);
  __syncthreads();  // `shared` may still be read from a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < warps; ++w) total += shared[w];
  return total;
}

inline unsigned int blocks_for(int64_t n, int threads) {
  return static_cast<unsigned int>((n + threads - 1) / threads);
}

}  // namespace ds::cuda
