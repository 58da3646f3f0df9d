// The CUDA kernels' launchers: plain structs of device pointers and sizes, no ds::Tensor, no fmt, so that
// nvcc compiles only kernels and the backend (host C++) does every check before it launches.
// Every launcher enqueues on `stream` and returns at once; the caller checks cudaGetLastError().
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "io/dtype.h"

namespace ds::cuda {

// A weight in device memory as the checkpoint stores it: w[r][c] = data[r][c] (* scale_inv[r/br][c/bc]).
struct DeviceWeight {
  const void* data = nullptr;
  DType dtype = DType::kBF16;
  const float* scale_inv = nullptr;  // fp32 block scales, or null
  int64_t rows = 0, cols = 0;
  int64_t block_rows = 1, block_cols = 1, scale_cols = 0;
};

// A row-major activation matrix in device memory (F32 or BF16) with row stride ld, in elements.
// `data` is non-const for brevity; launchers never write to their inputs.
struct MatrixRef {
  void* data = nullptr;
  DType dtype = DType::kBF16;
  int64_t rows = 0, cols = 0, ld = 0;
};

// out[t, :] = table[ids[t], :]
void launch_embedding(const DeviceWeight& table, const int32_t* ids, MatrixRef out, cudaStream_t stream);
// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight   (x may be a column window of a wider matrix)
void launch_rms_norm(MatrixRef x, const DeviceWeight& weight, float eps, MatrixRef out, cudaStream_t stream);
// acc += x, elementwise over [rows, cols]
void launch_add(MatrixRef acc, MatrixRef x, cudaStream_t stream);
// out = silu(gate) * up, elementwise over [rows, cols]
void launch_silu_mul(MatrixRef gate, MatrixRef up, MatrixRef out, cudaStream_t stream);
// In place: the interleaved pairs x[t, h*head_dim + rope_offset + 2i, +1] rotate by positions[t] *
// inv_freq[i].
void launch_rope(MatrixRef x, const int32_t* positions, int64_t num_heads, int64_t head_dim,
                 int64_t rope_offset, const float* inv_freq, int64_t half, float attention_factor,
                 cudaStream_t stream);
// cache[slots[t], :] = latent[t, :] | k_rope[t, :]
void launch_store_kv(MatrixRef latent, MatrixRef k_rope, const int64_t* slots, MatrixRef cache,
                     cudaStream_t stream);
// out[i, :] = x[rows[i], :]
void launch_gather_rows(MatrixRef x, const int32_t* rows, MatrixRef out, cudaStream_t stream);
// out = x with dtype conversion, over [rows, cols]
void launch_convert(MatrixRef x, MatrixRef out, cudaStream_t stream);
// out [rows, cols] bf16 (dense) = the weight in fp32 (fp8 * block scale, or f16/f32) rounded to bf16.
void launch_weight_to_bf16(const DeviceWeight& w, void* out, cudaStream_t stream);
// x [rows, cols] (F32 or BF16, cols a multiple of 128) -> q [rows, cols] e4m3 (row stride cols) and one fp32
// scale per row and 128-column group, x ~= q * scale: scales[g * scale_rows + r] when scales_row_contiguous
// (the rows of one group side by side; scale_rows >= rows), else scales[r * (cols / 128) + g].
void launch_quantize_fp8_1x128(MatrixRef x, void* q, float* scales, bool scales_row_contiguous,
                               int64_t scale_rows, cudaStream_t stream);
// out[T, N] = x[T, K] @ w[N, K]^T with bf16 operands and fp32 accumulation; a plain tiled kernel, used where
// cuBLASLt has no algorithm for the shape or alignment.
void launch_gemm_bf16_fallback(const void* x, int64_t ldx, const void* w, int64_t ldw, int64_t k,
                               MatrixRef out, cudaStream_t stream);

// Weight-absorbed MLA over the paged latent cache, one (token, head) per thread block, online softmax.
struct MlaKernelParams {
  MatrixRef q;             // [num_tokens, num_heads * (nope + rope)], per head: nope | rope (rotated)
  MatrixRef kv_cache;      // [num_slots, lora + rope]: latent | rope key
  DeviceWeight kv_b_proj;  // [num_heads * (nope + v), lora]: per head W_UK [nope, lora] then W_UV [v, lora]
  MatrixRef out;           // [num_tokens, num_heads * v]
  const int32_t* positions = nullptr;     // [num_tokens]; token t attends to keys 0..positions[t]
  const int32_t* seq_of_token = nullptr;  // [num_tokens]
  const int32_t* block_table = nullptr;   // [num_seqs, max_blocks_per_seq]
  int32_t max_blocks_per_seq = 0;
  int32_t block_size = 0;
  int64_t num_heads = 0, nope = 0, rope = 0, v = 0, lora = 0;
  float softmax_scale = 0.0f;
};
void launch_mla_attention(const MlaKernelParams& p, cudaStream_t stream);

// The MoE router after the gate GEMM, one token per thread (the same steps, in the same order, as the CPU).
enum class GateMethod : int { kGreedy = 0, kGroupLimitedGreedy = 1, kNoauxTc = 2 };
struct MoeGateKernelParams {
  const float* logits = nullptr;       // [num_tokens, num_experts]
  const DeviceWeight* bias = nullptr;  // host pointer to a descriptor of [num_experts], or null
  float* scores = nullptr;             // scratch [num_tokens, num_experts]
  float* choice = nullptr;             // scratch [num_tokens, num_experts]
  int32_t* topk_ids = nullptr;         // [num_tokens, top_k]
  float* topk_weights = nullptr;       // [num_tokens, top_k]
  int64_t num_tokens = 0, num_experts = 0, top_k = 0, n_group = 1, topk_group = 1;
  GateMethod method = GateMethod::kGreedy;
  bool sigmoid = false;
  bool norm_topk_prob = false;
  float routed_scaling_factor = 1.0f;
};
void launch_moe_gate(const MoeGateKernelParams& p, cudaStream_t stream);

// out[t, :] += sum_k weights[t, k] * y[rows[t, k], :]   (y: the routed experts' outputs, permuted by expert)
void launch_moe_combine(MatrixRef y, const int32_t* rows, const float* weights, int64_t top_k, MatrixRef out,
                        cudaStream_t stream);

}  // namespace ds::cuda
