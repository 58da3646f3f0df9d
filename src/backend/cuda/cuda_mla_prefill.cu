// MLA prefill in the expanded (non-absorbed) form: causal flash attention with the keys and values already
// expanded through kv_b_proj (cuda_mla_expanded.cpp gathers the context's latent rows and runs that GEMM).
// Per head h the query is q[t, h] = q_nope (128) | q_rope (64, rotated); the key is k_nope_h (128, from the
// expansion) | k_rope (64, the cache's rope key, shared by all heads); the value is v_h (128).
//
// One CTA = (head, tile of up to 64 query tokens of one sequence), 4 warps of 16 rows each
// (FlashAttention-2's split: a warp owns its rows, so the softmax needs no exchange between warps). Per block
// of 64 keys: S = Q K^T on mma.sync m16n8k16 (bf16 in, fp32 accumulate; Q's fragments stay in registers for
// the whole tile), the causal mask (row t sees keys 0..positions[t]), the online softmax in fp32 (base 2),
// and O += P V with P going from the S accumulators straight into the A operand. Keys and values arrive by
// 16-byte cp.async, two stages; shared rows are padded by 16 bytes (an odd number of 16-byte chunks per row)
// so ldmatrix has no bank conflicts. Rows past the tile and keys past the tile's context are zero-filled and
// masked.
#include <cuda_bf16.h>
#include <math_constants.h>

#include "backend/cuda/cuda_flash.cuh"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/cuda_mma.cuh"

namespace ds::cuda {
namespace {

constexpr int kNope = kMlaPrefillNope, kRope = kMlaPrefillRope, kV = kMlaPrefillV;
constexpr int kQk = kNope + kRope;           // 192
constexpr int kRows = kMlaPrefillTileRows;   // 64 query rows per CTA
constexpr int kKeys = 64;                    // keys per step
constexpr int kThreads = 128;                // 4 warps x 16 rows
constexpr int kQkStride = kQk + 8;           // 200 bf16 = 25 chunks of 16 bytes
constexpr int kVStride = kV + 8;             // 136 bf16 = 17 chunks
constexpr int kQkChunks = kQk * 2 / 16;      // 24 per row: 16 nope, 8 rope
constexpr int kNopeChunks = kNope * 2 / 16;  // 16
constexpr int kVChunks = kV * 2 / 16;        // 16
constexpr int kKSteps = kQk / 16;            // 12 k-steps in S
constexpr int kONTiles = kV / 8;             // 16 n-tiles of 8 output columns
constexpr int kSNTiles = kKeys / 8;          // 8 n-tiles of 8 keys

constexpr size_t kSmemBytes =
    (size_t{kRows} * kQkStride + 2 * size_t{kKeys} * kQkStride + 2 * size_t{kKeys} * kVStride) *
    sizeof(__nv_bfloat16);

__global__ void __launch_bounds__(kThreads, 2) mla_prefill_kernel(MlaPrefillParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto* sq = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [kRows][kQkStride]
  __nv_bfloat16* sk = sq + kRows * kQkStride;             // [2][kKeys][kQkStride]: k_nope | k_rope
  __nv_bfloat16* sv = sk + 2 * kKeys * kQkStride;         // [2][kKeys][kVStride]

  const int head = static_cast<int>(blockIdx.x);
  const MlaPrefillTile tile = p.tiles[blockIdx.y];
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t4 = lane % 4;

  for (int c = tid; c < kRows * kQkChunks; c += kThreads) {
    const int r = c / kQkChunks, ch = c % kQkChunks;
    const bool valid = r < tile.ntok;
    const int64_t tok = tile.tok0 + (valid ? r : 0);
    cp_async16(sq + r * kQkStride + ch * 8, p.q + tok * p.q_ld + int64_t{head} * kQk + ch * 8, valid);
  }
  auto load_block = [&](int kb, int stage) {
    __nv_bfloat16* kdst = sk + stage * kKeys * kQkStride;
    __nv_bfloat16* vdst = sv + stage * kKeys * kVStride;
    for (int c = tid; c < kKeys * (kQkChunks + kVChunks); c += kThreads) {
      const int r = c / (kQkChunks + kVChunks), ch = c % (kQkChunks + kVChunks);
      const int key = kb * kKeys + r;
      const bool valid = key < tile.kv_len;
      const int64_t row = tile.key_base + (valid ? key : 0);
      const __nv_bfloat16* kv_row = p.kv + row * p.kv_ld + int64_t{head} * (kNope + kV);
      if (ch < kNopeChunks) {
        cp_async16(kdst + r * kQkStride + ch * 8, kv_row + ch * 8, valid);
      } else if (ch < kQkChunks) {
        cp_async16(kdst + r * kQkStride + ch * 8, p.k_rope + row * p.k_rope_ld + (ch - kNopeChunks) * 8,
                   valid);
      } else {
        const int vc = ch - kQkChunks;
        cp_async16(vdst + r * kVStride + vc * 8, kv_row + kNope + vc * 8, valid);
      }
    }
  };

  const int nblk = (tile.kv_len + kKeys - 1) / kKeys;
  load_block(0, 0);
  cp_async_commit();  // group: Q and block 0

  int row_pos[2];  // this thread's rows g and g + 8 of the warp's 16: the last key they see, -1 for no row
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    const int r = warp * 16 + g + 8 * ri;
    row_pos[ri] = r < tile.ntok ? p.positions[tile.tok0 + r] : -1;
  }
  const bool warp_active = warp * 16 < tile.ntok;

  float o[kONTiles][4];
#pragma unroll
  for (int n = 0; n < kONTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_run[2] = {-CUDART_INF_F, -CUDART_INF_F}, l_run[2] = {0.0f, 0.0f};
  uint32_t qa[kKSteps][4];

  for (int i = 0; i < nblk; ++i) {
    if (i + 1 < nblk) load_block(i + 1, (i + 1) % 2);
    cp_async_commit();
    cp_async_wait<1>();  // this thread's copies of block i (and Q) have landed
    __syncthreads();     // everyone's have
    if (i == 0 && warp_active) {
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks)
        ldmatrix_x4(qa[ks], sq + (warp * 16 + lane % 16) * kQkStride + ks * 16 + (lane / 16) * 8);
    }
    if (warp_active) {
      const __nv_bfloat16* kbuf = sk + (i % 2) * kKeys * kQkStride;
      const __nv_bfloat16* vbuf = sv + (i % 2) * kKeys * kVStride;
      float s[kSNTiles][4];
#pragma unroll
      for (int j = 0; j < kSNTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
#pragma unroll
        for (int j = 0; j < kSNTiles; j += 2) {
          uint32_t b[4];
          ldmatrix_x4(
              b, kbuf + (j * 8 + (lane / 16) * 8 + lane % 8) * kQkStride + ks * 16 + ((lane / 8) % 2) * 8);
          mma_bf16(s[j], qa[ks], b[0], b[1]);
          mma_bf16(s[j + 1], qa[ks], b[2], b[3]);
        }
      }
      // Causal mask, scale (log2 domain), the online softmax of rows g and g + 8, then O += P V.
      flash::mask_and_scale(s, i * kKeys, t4, row_pos, p.scale_log2);
      flash::online_softmax(s, o, m_run, l_run);
      flash::accumulate_pv(o, s, vbuf, kVStride, lane);
    }
    __syncthreads();  // block i's buffers are free for block i + 2
  }

  if (!warp_active) return;
  flash::finish_row_sums(l_run);
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    if (row_pos[ri] < 0) continue;
    const int64_t tok = tile.tok0 + warp * 16 + g + 8 * ri;
    const float inv = 1.0f / l_run[ri];  // every row sees key 0, so l > 0
    const int64_t col0 = int64_t{head} * kV + 2 * t4;
    if (p.out_f32) {
      float* dst = static_cast<float*>(p.out) + tok * p.out_ld + col0;
#pragma unroll
      for (int n = 0; n < kONTiles; ++n)
        *reinterpret_cast<float2*>(dst + n * 8) = make_float2(o[n][2 * ri] * inv, o[n][2 * ri + 1] * inv);
    } else {
      __nv_bfloat16* dst = static_cast<__nv_bfloat16*>(p.out) + tok * p.out_ld + col0;
#pragma unroll
      for (int n = 0; n < kONTiles; ++n)
        *reinterpret_cast<__nv_bfloat162*>(dst + n * 8) =
            __floats2bfloat162_rn(o[n][2 * ri] * inv, o[n][2 * ri + 1] * inv);
    }
  }
}

}  // namespace

void launch_mla_prefill(const MlaPrefillParams& p, cudaStream_t stream) {
  if (p.num_tiles == 0 || p.num_heads == 0) return;
  const cudaError_t attr = cudaFuncSetAttribute(
      mla_prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmemBytes));
  if (attr != cudaSuccess) return;  // left as the last error; the caller's launch check reports it
  mla_prefill_kernel<<<dim3(static_cast<unsigned>(p.num_heads), static_cast<unsigned>(p.num_tiles)), kThreads,
                       kSmemBytes, stream>>>(p);
}

}  // namespace ds::cuda
