// The routed experts as grouped GEMMs with the routing on the device: no copy to the host, no wait, one launch
// for every expert's gate and up projections and one for the down projections, whatever the batch.
//
// moe_permute (one CTA) counts the (token, k) pairs per expert, lays the experts' rows out one after another
// and cuts each expert's rows into tiles of kTileRows; moe_gemm then runs one CTA per (tile, 64 output columns):
// out[rows of the tile, columns] = x[rows] @ W_e[columns, :]^T over the whole K dimension, on mma.sync m16n8k16
// (bf16 operands, fp32 accumulation). The weight streams through shared memory in 64-wide K steps, three
// stages of 16-byte cp.async deep, and is read once per tile: at decode, where an expert gets a handful of rows,
// that is once per step, so the kernel runs at the speed the weights can be read.
//
// FP8 weights (128x128 block scales) stay FP8 in shared memory; each 64-wide K step is one block, so the
// step's products accumulate unscaled (e4m3 values are exact in bf16) and join the result times the block
// scale: fp32 throughout, closer to the CPU's exact dequantization than HF's bf16-rounded weight.
// The gate/up kernel computes both projections of the same rows and columns and writes silu(gate) * up in bf16.
// Without tiles the same kernel is a plain GEMM of one weight over dense_rows rows: the decode-sized linears and
// MLPs, which cuBLASLt runs at a small share of the bandwidth at a few rows.
#include <cuda_fp8.h>

#include <algorithm>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_mma.cuh"

namespace ds::cuda {
namespace {

constexpr int kBm = kMoeTileRows;  // 32 rows per tile
constexpr int kBn = 64;            // output columns per CTA
constexpr int kBk = 64;            // K per stage
constexpr int kStages = 3;
constexpr int kThreads = 128;      // 4 warps: 2 (rows) x 2 (columns), 16 x 32 each
constexpr int kXStride = kBk + 8;  // bf16 elements per shared row of x: +16 bytes against bank conflicts

template <bool kFp8>
__host__ __device__ constexpr int w_row_bytes() {
  return kFp8 ? kBk + 16 : (kBk + 8) * 2;  // 80 or 144 bytes: conflict-free fragment loads
}

template <bool kFp8, bool kGateUp>
__host__ __device__ constexpr int stage_bytes() {
  return kBm * kXStride * 2 + (kGateUp ? 2 : 1) * kBn * w_row_bytes<kFp8>();
}

// Two adjacent weights of row n, columns c and c + 1, as packed bf16 (exact for e4m3).
template <bool kFp8>
__device__ __forceinline__ uint32_t load_w_pair(const unsigned char* row, int c) {
  if constexpr (kFp8) {
    const auto bits = *reinterpret_cast<const __nv_fp8x2_storage_t*>(row + c);
    const __half2 h = __half2(__nv_cvt_fp8x2_to_halfraw2(bits, __NV_E4M3));
    const float2 f = __half22float2(h);
    return pack_bf16(f.x, f.y);
  } else {
    return *reinterpret_cast<const uint32_t*>(row + 2 * c);
  }
}

__device__ __forceinline__ float silu(float v) {
  return v / (1.0f + __expf(-v));
}

template <bool kFp8, bool kGateUp>
__global__ void __launch_bounds__(kThreads) moe_gemm_kernel(MoeGemmParams p) {
  // Tiles vary fastest, so the tiles that read the same weight columns run side by side and share them in L2.
  const int tile_index = static_cast<int>(blockIdx.x);
  int expert = 0, row0 = tile_index * kBm, rows = 0;
  if (p.tiles != nullptr) {
    if (tile_index >= *p.num_tiles) return;
    const int4 tile = p.tiles[tile_index];  // expert, first row, end row
    expert = tile.x, row0 = tile.y, rows = tile.z - tile.y;
  } else {
    rows = min(kBm, p.dense_rows - row0);
  }
  const int64_t n0 = int64_t{blockIdx.y} * kBn;
  constexpr int kMats = kGateUp ? 2 : 1;
  constexpr int kWRow = w_row_bytes<kFp8>();
  constexpr int kElem = kFp8 ? 1 : 2;
  constexpr int kWChunks = kBk * kElem / 16;  // 16-byte chunks per weight row and stage

  extern __shared__ __align__(16) unsigned char smem[];
  const unsigned char* w_base[kMats];
  const float* w_scale[kMats];
  const bool grouped = p.tiles != nullptr;
  w_base[0] = static_cast<const unsigned char*>(grouped ? p.w[expert] : p.w_one);
  w_scale[0] = kFp8 ? (grouped ? p.w_scale[expert] : p.w_scale_one) : nullptr;
  if constexpr (kGateUp) {
    w_base[1] = static_cast<const unsigned char*>(grouped ? p.w_up[expert] : p.w_up_one);
    w_scale[1] = kFp8 ? (grouped ? p.w_up_scale[expert] : p.w_up_scale_one) : nullptr;
  }

  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int wm = warp / 2, wn = warp % 2;
  const int g = lane / 4, t4 = lane % 4;

  // This CTA's piece of K: [k_begin, k_end) (all of it unless the dense form splits K).
  const int64_t k_begin = p.k_split > 0 ? int64_t{blockIdx.z} * p.k_split : 0;
  const int64_t k = p.k_split > 0 ? min(p.k, k_begin + p.k_split) : p.k;
  const int64_t k_steps = (k - k_begin + kBk - 1) / kBk;
  // The rows of x this tile reads (the gather of the gate/up kernel happens here).
  auto load_stage = [&](int stage, int64_t ks) {
    unsigned char* base = smem + stage * stage_bytes<kFp8, kGateUp>();
    auto* sx = reinterpret_cast<__nv_bfloat16*>(base);
    const int64_t kk = k_begin + ks * kBk;
    for (int c = tid; c < kBm * (kBk / 8); c += kThreads) {
      const int r = c / (kBk / 8), ch = c % (kBk / 8);
      const int64_t col = kk + ch * 8;
      const bool valid = r < rows && col < k;
      int64_t src_row = 0;
      if (valid) src_row = p.x_rows != nullptr ? p.x_rows[row0 + r] : row0 + r;
      cp_async16(sx + r * kXStride + ch * 8, p.x + (valid ? src_row * p.ldx + col : 0), valid);
    }
    unsigned char* sw = base + kBm * kXStride * 2;
    for (int m = 0; m < kMats; ++m) {
      for (int c = tid; c < kBn * kWChunks; c += kThreads) {
        const int r = c / kWChunks, ch = c % kWChunks;
        const int64_t n = n0 + r, col = kk + ch * (16 / kElem);
        const bool valid = n < p.n && col < k;
        cp_async16(sw + (m * kBn + r) * kWRow + ch * 16, w_base[m] + (valid ? (n * p.k + col) * kElem : 0),
                   valid);
      }
    }
  };

  float acc[kMats][4][4] = {};
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_steps) load_stage(s, s);
    cp_async_commit();
  }
  for (int64_t ks = 0; ks < k_steps; ++ks) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage ks has landed for every thread, and stage ks - 1 is no longer read
    if (ks + kStages - 1 < k_steps) load_stage(static_cast<int>((ks + kStages - 1) % kStages), ks + kStages - 1);
    cp_async_commit();

    const unsigned char* base = smem + static_cast<int>(ks % kStages) * stage_bytes<kFp8, kGateUp>();
    const auto* sx = reinterpret_cast<const __nv_bfloat16*>(base);
    const unsigned char* sw = base + kBm * kXStride * 2;
    float part[kMats][4][4] = {};
#pragma unroll
    for (int kk = 0; kk < kBk; kk += 16) {
      uint32_t a[4];
      ldmatrix_x4(a, sx + (wm * 16 + lane % 16) * kXStride + kk + (lane / 16) * 8);
#pragma unroll
      for (int m = 0; m < kMats; ++m) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const unsigned char* wrow = sw + (m * kBn + wn * 32 + j * 8 + g) * kWRow;
          const uint32_t b0 = load_w_pair<kFp8>(wrow, kk + 2 * t4);
          const uint32_t b1 = load_w_pair<kFp8>(wrow, kk + 8 + 2 * t4);
          if constexpr (kFp8) {
            mma_bf16(part[m][j], a, b0, b1);
          } else {
            mma_bf16(acc[m][j], a, b0, b1);
          }
        }
      }
    }
    if constexpr (kFp8) {
      const int64_t scale_cols = (p.k + 127) / 128;
#pragma unroll
      for (int m = 0; m < kMats; ++m) {
        const float s = w_scale[m][(n0 / 128) * scale_cols + (k_begin + ks * kBk) / 128];
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[m][j][i] += s * part[m][j][i];
      }
    }
  }
  cp_async_wait<0>();

  // Fragment element i of n-tile j: row g (+8 for i >= 2), columns 2 * t4 (+1 for odd i).
#pragma unroll
  for (int j = 0; j < 4; ++j) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = wm * 16 + g + (i >= 2 ? 8 : 0);
      const int64_t col = n0 + wn * 32 + j * 8 + 2 * t4 + (i % 2);
      if (r >= rows || col >= p.n) continue;
      if (p.partial != nullptr) {
        for (int m = 0; m < kMats; ++m)
          p.partial[((int64_t{blockIdx.z} * kMats + m) * p.dense_rows + row0 + r) * p.n + col] = acc[m][j][i];
        continue;
      }
      float v = acc[0][j][i];
      if constexpr (kGateUp) v = silu(v) * acc[kMats - 1][j][i];
      store_act(p.out, p.out_dtype, (row0 + r) * p.ldo + col, v);
    }
  }
}

__global__ void moe_permute_kernel(MoePermuteParams p) {
  extern __shared__ int counts[];  // [num_experts] counts, then [num_experts] cursors
  int* cursor = counts + p.num_experts;
  const int tid = static_cast<int>(threadIdx.x);
  for (int e = tid; e < p.num_experts; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int64_t i = tid; i < p.pairs; i += blockDim.x) {
    const int e = p.topk_ids[i];
    if (e >= 0 && e < p.num_experts) atomicAdd(&counts[e], 1);
  }
  __syncthreads();
  if (tid == 0) {
    int offset = 0, tiles = 0;
    for (int e = 0; e < p.num_experts; ++e) {
      cursor[e] = offset;
      const int end = offset + counts[e];
      for (int r = offset; r < end && tiles < p.max_tiles; r += p.tile_rows)
        p.tiles[tiles++] = make_int4(e, r, min(r + p.tile_rows, end), 0);
      offset = end;
    }
    *p.num_tiles = tiles;
  }
  __syncthreads();
  // Within an expert, rows go in the order the atomics hand them out: each row's result depends only on its
  // own input, and the combine adds in k order, so the output does not depend on it.
  for (int64_t i = tid; i < p.pairs; i += blockDim.x) {
    const int e = p.topk_ids[i];
    if (e >= 0 && e < p.num_experts) {
      const int row = atomicAdd(&cursor[e], 1);
      p.token_of_row[row] = static_cast<int32_t>(i / p.top_k);
      p.row_of_pair[i] = row;
    } else {
      p.row_of_pair[i] = -1;
    }
  }
}

__global__ void stream_gemm_reduce_kernel(MoeGemmParams p, int mats) {
  const int64_t total = int64_t{p.dense_rows} * p.n;
  const int64_t plane = total;  // one [rows, n] matrix of partials
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    float sums[2] = {0.0f, 0.0f};
    for (int z = 0; z < p.k_pieces; ++z)
      for (int m = 0; m < mats; ++m) sums[m] += p.partial[(int64_t{z} * mats + m) * plane + i];
    const float v = mats == 2 ? silu(sums[0]) * sums[1] : sums[0];
    store_act(p.out, p.out_dtype, (i / p.n) * p.ldo + i % p.n, v);
  }
}

template <bool kFp8, bool kGateUp>
void launch_moe_gemm_t(const MoeGemmParams& p, cudaStream_t stream) {
  constexpr int smem = kStages * stage_bytes<kFp8, kGateUp>();
  const cudaError_t attr =
      cudaFuncSetAttribute(moe_gemm_kernel<kFp8, kGateUp>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (attr != cudaSuccess) return;  // left as the last error; the caller's launch check reports it
  const dim3 grid(static_cast<unsigned int>(p.max_tiles), static_cast<unsigned int>((p.n + kBn - 1) / kBn),
                  static_cast<unsigned int>(p.k_split > 0 ? p.k_pieces : 1));
  moe_gemm_kernel<kFp8, kGateUp><<<grid, kThreads, smem, stream>>>(p);
}

}  // namespace

void launch_stream_gemm_reduce(const MoeGemmParams& p, cudaStream_t stream) {
  const int64_t total = int64_t{p.dense_rows} * p.n;
  if (total == 0) return;
  const int mats = p.w_up_one != nullptr ? 2 : 1;
  const auto blocks = static_cast<unsigned int>(std::min<int64_t>((total + 255) / 256, 4096));
  stream_gemm_reduce_kernel<<<blocks, 256, 0, stream>>>(p, mats);
}

void launch_moe_permute(const MoePermuteParams& p, cudaStream_t stream) {
  if (p.pairs == 0) return;
  const size_t smem = static_cast<size_t>(p.num_experts) * 2 * sizeof(int);
  moe_permute_kernel<<<1, 1024, smem, stream>>>(p);
}

void launch_moe_gemm(const MoeGemmParams& p, cudaStream_t stream) {
  if (p.max_tiles == 0 || p.n == 0) return;
  const bool gate_up = p.tiles != nullptr ? p.w_up != nullptr : p.w_up_one != nullptr;
  if (p.fp8) {
    gate_up ? launch_moe_gemm_t<true, true>(p, stream) : launch_moe_gemm_t<true, false>(p, stream);
  } else {
    gate_up ? launch_moe_gemm_t<false, true>(p, stream) : launch_moe_gemm_t<false, false>(p, stream);
  }
}

}  // namespace ds::cuda
