// MLA prefill in the expanded (non-absorbed) form on the CUDA backend: which sequences take it, and running
// it. Internal to src/backend/cuda (CudaBackend::mla_attention dispatches; cuda_backend_attention.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_context.h"

namespace ds::cuda {

// Device memory one pass of the expanded form may use for its keys: the gathered cache rows (576 bf16 each)
// plus k_nope | v of every head (256 bf16 per head). Sequences are processed in groups that fit; a sequence
// whose context alone needs more (above 57,000 keys at 16 heads, 8,050 at 128) takes the absorbed form.
inline constexpr size_t kMlaExpandMaxBytes = size_t{512} << 20;
// New tokens from which kAuto considers the expanded form: a tile of the kernel is 64 query tokens per head,
// so fewer leave most of its rows idle while the expansion GEMM still costs the whole context.
inline constexpr int64_t kMlaExpandMinTokens = 64;

// Bytes one key of the context costs the expanded form (see kMlaExpandMaxBytes).
[[nodiscard]] size_t mla_expanded_bytes_per_key(const MlaAttentionParams& p);

// The sequences of the batch that take the expanded form, in batch order; empty when the shape is not one the
// kernel takes (nope 128, rope 64, v 128, latent 512) or the form is kAbsorbed. kAuto takes a sequence of at
// least kMlaExpandMinTokens new tokens when the expanded form needs fewer FLOPs for it (per head, for n new
// tokens over a context of L keys and A (query, key) pairs):
//   absorbed: n * 2 * 2 * 128 * 512 (q_nope through W_UK, o through W_UV) + A * 2 * (576 + 512)
//   expanded: L * 2 * 256 * 512 (keys and values through kv_b_proj)       + A * 2 * (192 + 128)
// so a prompt from position 0 always qualifies, and a chunk after a long cached prefix needs about 170
// tokens.
[[nodiscard]] std::vector<int32_t> mla_expanded_sequences(const MlaAttentionParams& p,
                                                          const ForwardBatch& batch, MlaPrefillForm form);

// Runs the expanded form for `seqs` (checked against the cache by the caller), writing their rows of p.out
// and no other. q: the query in bf16; w_bf16: kv_b_proj in bf16, [heads * (128 + 128), 512] row-major.
void mla_expanded(CudaContext& ctx, const MlaAttentionParams& p, const ForwardBatch& batch, MatrixRef q,
                  const void* w_bf16, std::span<const int32_t> seqs);

}  // namespace ds::cuda
