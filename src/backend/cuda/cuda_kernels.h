// The CUDA kernels' launchers: plain structs of device pointers and sizes, no ds::Tensor, no fmt, so that
// nvcc compiles only kernels and the backend (host C++) does every check before it launches.
// Every launcher enqueues on `stream` and returns at once; the caller checks cudaGetLastError().
#pragma once

#include <cuda_bf16.h>
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
// residual += branch, then out = rms_norm(residual) as launch_rms_norm, in one pass over each row.
void launch_add_rms_norm(MatrixRef residual, MatrixRef branch, const DeviceWeight& weight, float eps, MatrixRef out,
                         cudaStream_t stream);
// acc += x, elementwise over [rows, cols]
void launch_add(MatrixRef acc, MatrixRef x, cudaStream_t stream);
// out = silu(gate) * up, elementwise over [rows, cols]
void launch_silu_mul(MatrixRef gate, MatrixRef up, MatrixRef out, cudaStream_t stream);
// In place: the interleaved pairs x[t, h*head_dim + rope_offset + 2i, +1] rotate by positions[t] *
// inv_freq[i].
void launch_rope(MatrixRef x, const int32_t* positions, int64_t num_heads, int64_t head_dim,
                 int64_t rope_offset, const float* inv_freq, int64_t half, float attention_factor,
                 cudaStream_t stream);
// cache[slots[t], :] = latent[t, :] | k_rope[t, :]; rows with slot -1 are skipped
void launch_store_kv(MatrixRef latent, MatrixRef k_rope, const int64_t* slots, MatrixRef cache,
                     cudaStream_t stream);
// out[i, :] = x[rows[i], :]
void launch_gather_rows(MatrixRef x, const int32_t* rows, MatrixRef out, cudaStream_t stream);
// out = x with dtype conversion, over [rows, cols]
void launch_convert(MatrixRef x, MatrixRef out, cudaStream_t stream);
// hi = bf16(x), lo = bf16(x - hi), so hi + lo = x within 2^-16 relative: an fp32 matrix as two bf16 terms.
void launch_split_bf16(MatrixRef x, MatrixRef hi, MatrixRef lo, cudaStream_t stream);
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

// Weight-absorbed MLA on tensor cores for latent 512 + rope 64 (cuda_mla.cu): the attention between the
// absorption GEMMs. q_latent = q_nope through W_UK per head, computed before; o_latent goes through W_UV
// after.
constexpr int kMlaLatent = 512, kMlaRope = 64;
constexpr int kMlaTileRows = 64;   // query rows (token, head) per tile
constexpr int kMlaBlockKeys = 32;  // keys per step of the kernel; pieces are whole steps
// 64 rows of one sequence: ntok consecutive tokens from tok0, heads [head0, + nheads); ntok * nheads <= 64.
struct MlaTile {
  int32_t seq = 0, tok0 = 0, ntok = 0, head0 = 0, nheads = 0;
  int32_t kv_len = 0;      // keys [0, kv_len) may be read: the tile's largest position + 1
  int32_t num_pieces = 0;  // > 1: the pieces wrote partials [part_base, + num_pieces) for the combine
  int32_t part_base = 0;
};
// Key blocks [kb0, kb1) of a tile (keys kb * kMlaBlockKeys ...); part -1: the whole tile, normalized output.
struct MlaSegment {
  int32_t tile = 0, kb0 = 0, kb1 = 0, part = -1;
};
struct MlaDecodeParams {
  const __nv_bfloat16* q_latent = nullptr;  // [num_tokens, num_heads, 512]
  const __nv_bfloat16* q = nullptr;  // the query: rope part at q[t * q_ld + h * q_head_stride + offset]
  int64_t q_ld = 0, q_head_stride = 0, q_rope_offset = 0;
  const __nv_bfloat16* kv_cache = nullptr;  // [num_slots, kv_ld]: latent 512 | rope 64
  int64_t kv_ld = 0;
  const int32_t* positions = nullptr;    // [num_tokens]; a token sees keys 0..position
  const int32_t* block_table = nullptr;  // [num_seqs, max_blocks_per_seq]
  int32_t max_blocks_per_seq = 0, block_size = 0;
  int64_t num_heads = 0;
  float scale_log2 = 0.0f;  // softmax scale * log2(e)
  const MlaTile* tiles = nullptr;
  const MlaSegment* segments = nullptr;
  const int32_t* cta_seg_begin = nullptr;  // [num_ctas + 1]: CTA c runs segments [begin[c], begin[c + 1])
  int32_t num_ctas = 0;
  int32_t max_tile_rows = 0;             // the largest ntok * nheads of any tile (picks the warp layout)
  const int32_t* split_tiles = nullptr;  // [num_split_tiles]: tiles with num_pieces > 1
  int32_t num_split_tiles = 0;
  float* part_o = nullptr;            // [pieces, 64, 512] unnormalized
  float* part_ml = nullptr;           // [pieces, 64, 2]: running max (log2 domain), sum
  __nv_bfloat16* o_latent = nullptr;  // [num_tokens, num_heads, 512], normalized
  // 1: cuda_mla.cu's warp layout for every tile; 2: tiles of more than 16 rows through cuda_mla_v2.cu, tiles
  // of at most 16 rows through cuda_mla.cu as in 1 (CudaBackendOptions::mla_decode).
  int32_t kernel_version = 1;
};
void launch_mla_decode(const MlaDecodeParams& p, cudaStream_t stream);
// cuda_mla_v2.cu, called by launch_mla_decode (kernel_version 2, tiles of more than 16 rows); false when the
// kernel could not be configured (the error is left for the caller's launch check).
bool launch_mla_decode_v2_rows64(const MlaDecodeParams& p, bool capturing, cudaStream_t stream);
size_t mla_decode_smem_bytes();

// A decode batch's plan made on the device from its positions, with a grid fixed by the batch size (so a graph
// can replay it): every (sequence, 64-head group) tile's key blocks cut into `splits` equal pieces, one CTA
// each; pieces past a short context are empty and write only "no key" partials. Writes MlaDecodeParams'
// tiles [num_seqs * head_groups], segments and cta_seg_begin [num_ctas + 1] (num_ctas = tiles * splits),
// and split_tiles [tiles] when splits > 1.
struct MlaDecodePlanParams {
  const int32_t* positions = nullptr;  // [num_seqs]: each sequence's one new token
  int32_t num_seqs = 0, num_heads = 0, head_groups = 0, splits = 1;
};
struct MlaDecodePlanBuffers {
  int32_t* tiles = nullptr;     // MlaTile [tiles]
  int32_t* segments = nullptr;  // MlaSegment [num_ctas]
  int32_t* cta_seg_begin = nullptr;
  int32_t* split_tiles = nullptr;
};
void launch_mla_decode_plan(const MlaDecodePlanParams& p, const MlaDecodePlanBuffers& out, cudaStream_t stream);

// MLA prefill in the expanded form (cuda_mla_prefill.cu): causal flash attention over keys and values already
// expanded through kv_b_proj, for DeepSeek's head dimensions (nope 128, rope 64, v 128) only.
constexpr int kMlaPrefillNope = 128, kMlaPrefillRope = 64, kMlaPrefillV = 128;
constexpr int kMlaPrefillTileRows = 64;  // query tokens per tile (one CTA per tile and head)
// Tokens [tok0, tok0 + ntok) of one sequence; its keys are rows [key_base, key_base + kv_len) of the expanded
// buffers (row key_base + k holds the key at position k); kv_len = the tile's largest position + 1.
struct MlaPrefillTile {
  int32_t tok0 = 0, ntok = 0, key_base = 0, kv_len = 0;
};
struct MlaPrefillParams {
  const __nv_bfloat16* q = nullptr;  // [num_tokens, q_ld], per head 192: q_nope 128 | q_rope 64 (rotated)
  int64_t q_ld = 0;
  const __nv_bfloat16* kv = nullptr;  // [keys, kv_ld], per head 256: k_nope 128 | v 128
  int64_t kv_ld = 0;
  const __nv_bfloat16* k_rope = nullptr;  // [keys, k_rope_ld]: the rope key (64) at column 0, shared by heads
  int64_t k_rope_ld = 0;
  const int32_t* positions = nullptr;  // [num_tokens]; token t sees keys 0..positions[t] of its sequence
  const MlaPrefillTile* tiles = nullptr;
  int32_t num_tiles = 0, num_heads = 0;
  float scale_log2 = 0.0f;  // softmax scale * log2(e)
  void* out = nullptr;      // [num_tokens, out_ld], head h at columns [h * 128, + 128); F32 or BF16
  int64_t out_ld = 0;
  bool out_f32 = false;
};
void launch_mla_prefill(const MlaPrefillParams& p, cudaStream_t stream);

// The MoE router after the gate GEMM, one token per warp (the same steps, in the same order, as the CPU), at
// most 1024 experts in at most 64 groups, top_k at most 32.
enum class GateMethod : int { kGreedy = 0, kGroupLimitedGreedy = 1, kNoauxTc = 2 };
struct MoeGateKernelParams {
  const float* logits = nullptr;       // [num_tokens, num_experts]
  const float* logits_lo = nullptr;    // null, or [num_tokens, num_experts] added to logits (the lo term)
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

// The routed experts with the routing on the device (cuda_moe_gemm.cu).
inline constexpr int kMoeTileRows = 32;       // rows of one expert per tile of the expert GEMMs (decode)
inline constexpr int kMoeLargeTileRows = 64;  // the same for many rows per expert (prefill): 8-warp CTAs
// One CTA: counts the (token, k) pairs of topk_ids per expert, puts each expert's pairs in consecutive rows
// (row_of_pair[pair], token_of_row[row]; -1 for an id outside [0, num_experts)) and cuts every expert's rows
// into tiles of tile_rows (kMoeTileRows or kMoeLargeTileRows): tiles[i] = (expert, first row, end row, 0),
// *num_tiles of them.
struct MoePermuteParams {
  const int32_t* topk_ids = nullptr;  // [pairs]
  int64_t pairs = 0;
  int32_t top_k = 0, num_experts = 0, tile_rows = kMoeTileRows;
  int32_t* token_of_row = nullptr;  // [pairs]
  int32_t* row_of_pair = nullptr;   // [pairs]
  int4* tiles = nullptr;            // [max_tiles]
  int32_t* num_tiles = nullptr;     // [1]
  int32_t max_tiles = 0;            // at least min(pairs, ceil(pairs / tile_rows) + min(experts, pairs))
};
void launch_moe_permute(const MoePermuteParams& p, cudaStream_t stream);
// For every tile of moe_permute: out[rows, :n] = x[rows] @ W_expert[:n, :k]^T, bf16 or FP8 (128x128 block
// scales) weights, fp32 accumulation. With w_up set (the gate/up kernel) out = silu(x W^T) * (x U^T) instead.
// x is bf16 with rows of k at stride ldx, 16-byte aligned; k a multiple of 8 (bf16) or 16 (FP8).
struct MoeGemmParams {
  const __nv_bfloat16* x = nullptr;
  int64_t ldx = 0;
  const int32_t* x_rows = nullptr;           // permuted row -> row of x (the gather); null: the same row
  const void* const* w = nullptr;            // [experts] device pointers to [n, k] weights
  const void* const* w_up = nullptr;         // [experts] the up projections, or null
  const float* const* w_scale = nullptr;     // [experts] FP8 block scales [ceil(n/128), ceil(k/128)]
  const float* const* w_up_scale = nullptr;  // [experts]
  bool fp8 = false;
  int64_t n = 0, k = 0;
  const int4* tiles = nullptr;  // null: one weight (the *_one fields) over rows [0, dense_rows)
  const int32_t* num_tiles = nullptr;
  int32_t max_tiles = 0;  // without tiles: ceil(dense_rows / kMoeTileRows)
  // The permutation's tile_rows: kMoeLargeTileRows runs the 8-warp kernel (64 rows by 128 weight rows per
  // CTA), anything else the 4-warp one (32 by 64); without tiles, kMoeTileRows.
  int32_t tile_rows = kMoeTileRows;
  const void* w_one = nullptr;
  const void* w_up_one = nullptr;
  const float* w_scale_one = nullptr;
  const float* w_up_scale_one = nullptr;
  int32_t dense_rows = 0;
  // Without tiles the K dimension may be cut into gridDim.z pieces of k_split (a multiple of 64): each piece
  // writes fp32 partial sums to partial [pieces, 1 or 2 (gate/up), dense_rows, n], which
  // launch_stream_gemm_reduce adds up in piece order (deterministic) into out. k_split == 0: one piece.
  int64_t k_split = 0;
  int32_t k_pieces = 1;
  float* partial = nullptr;
  void* out = nullptr;  // [rows, n] at stride ldo
  DType out_dtype = DType::kBF16;
  int64_t ldo = 0;
};
void launch_moe_gemm(const MoeGemmParams& p, cudaStream_t stream);
// out = the sum over p.k_pieces of p.partial (silu(gate) * up for the gate/up form), as moe_gemm would write it.
void launch_stream_gemm_reduce(const MoeGemmParams& p, cudaStream_t stream);

// out[t, :] += sum_k weights[t, k] * y[rows[t, k], :]   (y: the routed experts' outputs, permuted by expert;
// a pair whose row is -1 is skipped)
void launch_moe_combine(MatrixRef y, const int32_t* rows, const float* weights, int64_t top_k, MatrixRef out,
                        cudaStream_t stream);

// ---- sampling (cuda_sample.cu; Backend::sample checks every field before the launch) ----

constexpr int kSampleMaxTop = 20;
// One request of launch_sample, as Backend::sample's SampleRequest with its token lists turned into entries.
struct SampleKernelRequest {
  int32_t row = 0;             // the logits row
  int32_t penalized_row = -1;  // the row of `penalized` its penalized logits go to, or -1 (no entries)
  int32_t greedy = 0;
  int32_t top_k = 0;           // 0 = off, else 0 < top_k < vocab
  int32_t num_top = 0;         // top logprobs wanted, [0, kSampleMaxTop]
  int32_t entry_begin = 0, entry_end = 0;  // its PenaltyEntry range
  int32_t allowed_only = 0;                // every token without an entry of allowed = 1 is masked
  float inv_temperature = 1.0f;
  float min_p = 0.0f;          // 0 = off
  double top_p = 1.0;          // 1 = off
  double repetition_penalty = 1.0, frequency_penalty = 0.0, presence_penalty = 0.0;
  double uniform = 0.0;
};
// One distinct token a request's logit_bias, penalties, allowed_token_ids or min_tokens mask touch.
struct PenaltyEntry {
  int32_t id = 0;
  int32_t output_count = 0;  // occurrences in the output (frequency / presence), 0 when those are off
  int32_t repeated = 0;      // in prompt or output, with the repetition penalty on
  int32_t masked = 0;        // set to -inf last
  int32_t has_bias = 0;      // bias is added first
  int32_t allowed = 0;       // in allowed_token_ids (read when the request's allowed_only is set)
  float bias = 0.0f;
};
// status: a SampleStatus: 0, or 1 = the raw row has NaN or no finite max, 2 = every token of the penalized
// row is masked.
struct SampleKernelResult {
  int32_t token = 0;
  float logprob = 0.0f;
  int32_t num_top = 0;
  int32_t status = 0;
  int32_t top_ids[kSampleMaxTop] = {};
  float top_logprobs[kSampleMaxTop] = {};
};
// Dynamic shared memory launch_sample needs for a vocabulary: one double per (1024-token chunk, lane of 8).
[[nodiscard]] size_t sample_shared_bytes(int64_t vocab);
// One thread block per request. logits [rows, vocab] F32 with row stride ld; penalized: scratch
// [number of requests with entries, vocab].
void launch_sample(const float* logits, int64_t ld, int64_t vocab, const SampleKernelRequest* requests,
                   int32_t num_requests, const PenaltyEntry* entries, float* penalized, SampleKernelResult* out,
                   cudaStream_t stream);

}  // namespace ds::cuda
