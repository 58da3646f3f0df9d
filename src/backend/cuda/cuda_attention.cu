// Multi-head latent attention over the paged latent cache, weight-absorbed as in the CPU backend
// (DeepSeek-V2 paper, section 2.1.2):
//   q_latent_h  = W_UK_h^T q_nope_h                                  [kv_lora_rank]
//   score(t, j) = scale * (q_latent_h . c_j + q_rope_h . k_rope_j)
//   out_h       = W_UV_h (sum_j softmax_j c_j)
// One thread block per (token, head); keys are visited in chunks with an online softmax (running max and
// denominator, the accumulator rescaled when the max grows), so any context length fits in shared memory.
// All arithmetic is fp32; only the output is rounded to its dtype. The first, correct version: DeepSeek's
// shapes (latent 512 + rope 64) take the tensor-core kernel in cuda_mla.cu; this one serves every other shape
// (the tiny fixture models) and DEEPSERVE_MLA=legacy.
#include <math_constants.h>

#include "backend/cuda/cuda_common.cuh"

namespace ds::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kKeyChunk = 64;

__global__ void __launch_bounds__(kThreads) mla_attention_kernel(MlaKernelParams p) {
  extern __shared__ float smem[];
  float* q_nope = smem;                 // [nope]
  float* q_rope = q_nope + p.nope;      // [rope]
  float* q_latent = q_rope + p.rope;    // [lora]
  float* o_latent = q_latent + p.lora;  // [lora], unnormalized sum_j exp(s_j - max) c_j
  __shared__ float scores[kKeyChunk];
  __shared__ float probs[kKeyChunk];
  __shared__ int64_t slots[kKeyChunk];

  const int64_t t = blockIdx.x, h = blockIdx.y;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t q_col = h * (p.nope + p.rope);
  for (int64_t i = threadIdx.x; i < p.nope; i += kThreads) q_nope[i] = load_at(p.q, t, q_col + i);
  for (int64_t i = threadIdx.x; i < p.rope; i += kThreads) q_rope[i] = load_at(p.q, t, q_col + p.nope + i);
  for (int64_t c = threadIdx.x; c < p.lora; c += kThreads) o_latent[c] = 0.0f;
  __syncthreads();

  // Absorb W_UK into the query: rows [h * (nope + v), + nope) of kv_b_proj.
  const int64_t w_row = h * (p.nope + p.v);
  for (int64_t c = threadIdx.x; c < p.lora; c += kThreads) {
    float acc = 0.0f;
    for (int64_t d = 0; d < p.nope; ++d) acc += q_nope[d] * weight_at(p.kv_b_proj, w_row + d, c);
    q_latent[c] = acc;
  }
  __syncthreads();

  const int32_t* blocks = p.block_table + int64_t{p.seq_of_token[t]} * p.max_blocks_per_seq;
  const int64_t num_keys = int64_t{p.positions[t]} + 1;  // causal: keys 0..position of this sequence
  float running_max = -CUDART_INF_F, denom = 0.0f;       // identical in every thread
  for (int64_t k0 = 0; k0 < num_keys; k0 += kKeyChunk) {
    const int n = static_cast<int>(num_keys - k0 < kKeyChunk ? num_keys - k0 : kKeyChunk);
    for (int j = warp; j < n; j += kWarps) {
      const int64_t key = k0 + j;
      const int64_t slot = int64_t{blocks[key / p.block_size]} * p.block_size + key % p.block_size;
      float dot = 0.0f;
      for (int64_t c = lane; c < p.lora; c += 32) dot += q_latent[c] * load_at(p.kv_cache, slot, c);
      for (int64_t r = lane; r < p.rope; r += 32) dot += q_rope[r] * load_at(p.kv_cache, slot, p.lora + r);
      dot = warp_sum(dot);
      if (lane == 0) {
        scores[j] = dot * p.softmax_scale;
        slots[j] = slot;
      }
    }
    __syncthreads();
    float chunk_max = -CUDART_INF_F;
    for (int j = 0; j < n; ++j) chunk_max = fmaxf(chunk_max, scores[j]);
    const float new_max = fmaxf(running_max, chunk_max);
    const float correction = expf(running_max - new_max);  // 0 on the first chunk
    if (threadIdx.x < n) probs[threadIdx.x] = expf(scores[threadIdx.x] - new_max);
    __syncthreads();
    float chunk_sum = 0.0f;
    for (int j = 0; j < n; ++j) chunk_sum += probs[j];
    denom = denom * correction + chunk_sum;
    running_max = new_max;
    for (int64_t c = threadIdx.x; c < p.lora; c += kThreads) {
      float o = o_latent[c] * correction;
      for (int j = 0; j < n; ++j) o += probs[j] * load_at(p.kv_cache, slots[j], c);
      o_latent[c] = o;
    }
    __syncthreads();  // scores, probs and slots are rewritten by the next chunk
  }

  // Up-project through W_UV: rows [h * (nope + v) + nope, + v) of kv_b_proj.
  const float inv_denom = 1.0f / denom;
  for (int64_t e = warp; e < p.v; e += kWarps) {
    float acc = 0.0f;
    for (int64_t c = lane; c < p.lora; c += 32)
      acc += weight_at(p.kv_b_proj, w_row + p.nope + e, c) * o_latent[c];
    acc = warp_sum(acc);
    if (lane == 0) store_at(p.out, t, h * p.v + e, acc * inv_denom);
  }
}

}  // namespace

void launch_mla_attention(const MlaKernelParams& p, cudaStream_t stream) {
  if (p.q.rows == 0 || p.num_heads == 0) return;
  const size_t smem = static_cast<size_t>(p.nope + p.rope + 2 * p.lora) * sizeof(float);
  const dim3 grid(static_cast<unsigned int>(p.q.rows), static_cast<unsigned int>(p.num_heads));
  mla_attention_kernel<<<grid, kThreads, smem, stream>>>(p);
}

}  // namespace ds::cuda
