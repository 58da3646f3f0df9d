// The routed experts as grouped GEMMs with the routing on the device: no copy to the host, no wait, one
// launch for every expert's gate and up projections and one for the down projections, whatever the batch.
//
// moe_permute (one CTA) counts the (token, k) pairs per expert, lays the experts' rows out one after another
// and cuts each expert's rows into tiles; moe_gemm then runs one CTA per (tile, 64 or 128 output columns):
// out[rows of the tile, columns] = x[rows] @ W_e[columns, :]^T over the whole K dimension, on mma.sync
// m16n8k16 (bf16 operands, fp32 accumulation). The weight streams through shared memory in 64-wide K steps,
// three (decode) or four (prefill) stages of 16-byte cp.async deep, and is read once per tile: at decode,
// where an expert gets a handful of rows, that is once per step, so the kernel runs at the speed the weights
// can be read. Decode cuts 32-row tiles (4 warps); prefill, with a hundred rows per expert, cuts 64-row tiles
// run by 8 warps over 128 weight rows, so that each weight fragment feeds two MMAs and each weight byte
// staged in shared memory serves 64 rows.
//
// FP8 weights (128x128 block scales) stay FP8 in shared memory; each 64-wide K step is one block, so the
// step's products accumulate unscaled (e4m3 values are exact in bf16) and join the result times the block
// scale: fp32 throughout, closer to the CPU's exact dequantization than HF's bf16-rounded weight.
// The gate/up kernel computes both projections of the same rows and columns and writes silu(gate) * up in
// bf16. Without tiles the same kernel is a plain GEMM of one weight over dense_rows rows: the decode-sized
// linears and MLPs, which cuBLASLt runs at a small share of the bandwidth at a few rows.
#include <cuda_fp8.h>

#include <algorithm>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/cuda_mma.cuh"

namespace ds::cuda {
namespace {

constexpr int kBk = 64;  // K per stage: one half of a 128-wide FP8 scale block

// A CTA's tile: kBm rows of x by kBn columns of each weight (gate and up both, in the gate/up kernel),
// computed by kWarpsM x kWarpsN warps of kMi x kNj m16n8 fragments each, fed by kStages of cp.async.
//   Small (decode, and the dense streaming form): 32 rows x 64 columns, 4 warps of 16 x 32.
//   Large (prefill, many rows per expert): 64 rows x 64 (gate/up: 128 weight rows) or 128 (down) columns,
//   8 warps of 32 x 16 or 32 x 32: each weight fragment feeds two MMAs instead of one, and each weight byte
//   brought into shared memory serves twice the rows.
template <int Bm, int Bn, int WarpsM, int WarpsN, int Stages, int MinBlocks>
struct TileShape {
  static constexpr int kBm = Bm, kBn = Bn, kWarpsN = WarpsN, kStages = Stages, kMinBlocks = MinBlocks;
  static constexpr int kThreads = 32 * WarpsM * WarpsN;
  static constexpr int kMi = Bm / (16 * WarpsM);  // m16 fragments per warp
  static constexpr int kNj = Bn / (8 * WarpsN);   // n8 fragments per warp and weight
  static_assert(kMi >= 1 && kMi * 16 * WarpsM == Bm && kNj % 2 == 0 && kNj * 8 * WarpsN == Bn);
};
using SmallTile = TileShape<kMoeTileRows, 64, 2, 2, 3, 0>;  // 0: no minimum, the registers it had
// Two CTAs per SM (16 warps): at most 128 registers a thread, and 2 x 4 stages of 19.5 KB (FP8) or 27.6 KB
// (bf16) of shared memory.
template <bool kGateUp>
using LargeTile = TileShape<kMoeLargeTileRows, kGateUp ? 64 : 128, 2, 4, 4, 2>;

constexpr int kXStride = kBk + 8;  // bf16 elements per shared row of x: +16 bytes against bank conflicts

template <bool kFp8>
__host__ __device__ constexpr int w_row_bytes() {
  return kFp8 ? kBk + 16 : (kBk + 8) * 2;  // 80 or 144 bytes: conflict-free fragment loads
}

template <class T, bool kFp8, bool kGateUp>
__host__ __device__ constexpr int stage_bytes() {
  return T::kBm * kXStride * 2 + (kGateUp ? 2 : 1) * T::kBn * w_row_bytes<kFp8>();
}

// Two adjacent weights of row n, columns c and c + 1, as packed bf16 (exact for e4m3).
__device__ __forceinline__ uint32_t load_fp8_pair(const unsigned char* row, int c) {
  const auto bits = *reinterpret_cast<const __nv_fp8x2_storage_t*>(row + c);
  const __half2 h = __half2(__nv_cvt_fp8x2_to_halfraw2(bits, __NV_E4M3));
  const float2 f = __half22float2(h);
  return pack_bf16(f.x, f.y);
}

// The B fragments (b0, b1) of n8 fragments j and j + 1 of one k16 step: shared rows [n, n + 16) of the weight
// (row n = output column n, K contiguous), columns [kk, kk + 16).
template <bool kFp8>
__device__ __forceinline__ void load_b_pair(const unsigned char* sw, int n, int kk, int lane,
                                            uint32_t (&b)[4]) {
  constexpr int kWRow = w_row_bytes<kFp8>();
  if constexpr (kFp8) {
    const int g = lane / 4, t4 = lane % 4;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const unsigned char* row = sw + (n + h * 8 + g) * kWRow;
      b[2 * h] = load_fp8_pair(row, kk + 2 * t4);
      b[2 * h + 1] = load_fp8_pair(row, kk + 8 + 2 * t4);
    }
  } else {
    // ldmatrix: lanes 0-7 address fragment j's rows at k 0-7, 8-15 at k 8-15, 16-31 the same for j + 1.
    ldmatrix_x4(b, sw + (n + (lane / 16) * 8 + lane % 8) * kWRow + (kk + ((lane / 8) % 2) * 8) * 2);
  }
}

__device__ __forceinline__ float silu(float v) {
  return v / (1.0f + __expf(-v));
}

template <class T, bool kFp8, bool kGateUp>
__global__ void __launch_bounds__(T::kThreads, T::kMinBlocks) moe_gemm_kernel(MoeGemmParams p) {
  constexpr int kBm = T::kBm, kBn = T::kBn, kStages = T::kStages, kThreads = T::kThreads;
  constexpr int kMi = T::kMi, kNj = T::kNj;
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
  constexpr int kStageBytes = stage_bytes<T, kFp8, kGateUp>();

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
  const int wm = warp / T::kWarpsN, wn = warp % T::kWarpsN;
  const int g = lane / 4, t4 = lane % 4;

  // This CTA's piece of K: [k_begin, k_end) (all of it unless the dense form splits K).
  const int64_t k_begin = p.k_split > 0 ? int64_t{blockIdx.z} * p.k_split : 0;
  const int64_t k = p.k_split > 0 ? min(p.k, k_begin + p.k_split) : p.k;
  const int64_t k_steps = (k - k_begin + kBk - 1) / kBk;
  // The rows of x this tile reads (the gather of the gate/up kernel happens here).
  auto load_stage = [&](int stage, int64_t ks) {
    unsigned char* base = smem + stage * kStageBytes;
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
#pragma unroll
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

  float acc[kMats][kMi][kNj][4] = {};
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_steps) load_stage(s, s);
    cp_async_commit();
  }
  for (int64_t ks = 0; ks < k_steps; ++ks) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage ks has landed for every thread, and stage ks - 1 is no longer read
    if (ks + kStages - 1 < k_steps)
      load_stage(static_cast<int>((ks + kStages - 1) % kStages), ks + kStages - 1);
    cp_async_commit();

    const unsigned char* base = smem + static_cast<int>(ks % kStages) * kStageBytes;
    const auto* sx = reinterpret_cast<const __nv_bfloat16*>(base);
    const unsigned char* sw = base + kBm * kXStride * 2;
    // FP8: the step's products accumulate unscaled here and join acc times the block's scale.
    float part[kFp8 ? kMats : 1][kFp8 ? kMi : 1][kFp8 ? kNj : 1][4] = {};
#pragma unroll
    for (int kk = 0; kk < kBk; kk += 16) {
      uint32_t a[kMi][4];
#pragma unroll
      for (int mi = 0; mi < kMi; ++mi)
        ldmatrix_x4(a[mi], sx + (wm * kMi * 16 + mi * 16 + lane % 16) * kXStride + kk + (lane / 16) * 8);
#pragma unroll
      for (int m = 0; m < kMats; ++m) {
#pragma unroll
        for (int j = 0; j < kNj; j += 2) {
          uint32_t b[4];
          load_b_pair<kFp8>(sw, m * kBn + wn * kNj * 8 + j * 8, kk, lane, b);
#pragma unroll
          for (int mi = 0; mi < kMi; ++mi) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              if constexpr (kFp8) {
                mma_bf16(part[m][mi][j + h], a[mi], b[2 * h], b[2 * h + 1]);
              } else {
                mma_bf16(acc[m][mi][j + h], a[mi], b[2 * h], b[2 * h + 1]);
              }
            }
          }
        }
      }
    }
    if constexpr (kFp8) {
      // One scale per weight and step: the CTA's columns lie in one 128-row block (n0 is a multiple of kBn,
      // which divides 128) and the step's 64 K in one 128-column block.
      const int64_t scale_cols = (p.k + 127) / 128;
#pragma unroll
      for (int m = 0; m < kMats; ++m) {
        const float s = w_scale[m][(n0 / 128) * scale_cols + (k_begin + ks * kBk) / 128];
#pragma unroll
        for (int mi = 0; mi < kMi; ++mi)
#pragma unroll
          for (int j = 0; j < kNj; ++j)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[m][mi][j][i] += s * part[m][mi][j][i];
      }
    }
  }
  cp_async_wait<0>();

  // Fragment element i of (mi, j): row g (+8 for i >= 2), columns 2 * t4 (+1 for odd i).
#pragma unroll
  for (int mi = 0; mi < kMi; ++mi) {
#pragma unroll
    for (int j = 0; j < kNj; ++j) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = wm * kMi * 16 + mi * 16 + g + (i >= 2 ? 8 : 0);
        const int64_t col = n0 + wn * kNj * 8 + j * 8 + 2 * t4 + (i % 2);
        if (r >= rows || col >= p.n) continue;
        if (p.partial != nullptr) {
          for (int m = 0; m < kMats; ++m)
            p.partial[((int64_t{blockIdx.z} * kMats + m) * p.dense_rows + row0 + r) * p.n + col] =
                acc[m][mi][j][i];
          continue;
        }
        float v = acc[0][mi][j][i];
        if constexpr (kGateUp) v = silu(v) * acc[kMats - 1][mi][j][i];
        store_act(p.out, p.out_dtype, (row0 + r) * p.ldo + col, v);
      }
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

template <class T, bool kFp8, bool kGateUp>
void launch_moe_gemm_t(const MoeGemmParams& p, cudaStream_t stream) {
  constexpr int smem = T::kStages * stage_bytes<T, kFp8, kGateUp>();
  const cudaError_t attr = cudaFuncSetAttribute(moe_gemm_kernel<T, kFp8, kGateUp>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (attr != cudaSuccess) return;  // left as the last error; the caller's launch check reports it
  const dim3 grid(static_cast<unsigned int>(p.max_tiles),
                  static_cast<unsigned int>((p.n + T::kBn - 1) / T::kBn),
                  static_cast<unsigned int>(p.k_split > 0 ? p.k_pieces : 1));
  moe_gemm_kernel<T, kFp8, kGateUp><<<grid, T::kThreads, smem, stream>>>(p);
}

template <bool kFp8, bool kGateUp>
void launch_moe_gemm_shape(const MoeGemmParams& p, cudaStream_t stream) {
  if (p.tile_rows == kMoeLargeTileRows) {
    launch_moe_gemm_t<LargeTile<kGateUp>, kFp8, kGateUp>(p, stream);
  } else {
    launch_moe_gemm_t<SmallTile, kFp8, kGateUp>(p, stream);
  }
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
    gate_up ? launch_moe_gemm_shape<true, true>(p, stream) : launch_moe_gemm_shape<true, false>(p, stream);
  } else {
    gate_up ? launch_moe_gemm_shape<false, true>(p, stream) : launch_moe_gemm_shape<false, false>(p, stream);
  }
}

}  // namespace ds::cuda
