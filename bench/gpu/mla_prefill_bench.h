// The MLA op alone on a prefill: one prompt of `tokens` new tokens from position 0 (latent 512 + rope 64,
// nope 128, v 128, bf16 kv_b_proj and cache, pages of 64), through CudaBackend::mla_attention in each form:
// the weight-absorbed one (MlaPrefillForm::kAbsorbed) and the expanded one (kExpanded). FLOPs are each form's
// own, per head, for n tokens and A = n (n + 1) / 2 causal (query, key) pairs:
//   absorbed: n * 2 * 2 * 128 * 512 (W_UK, W_UV) + A * 2 * (576 + 512)
//   expanded: n * 2 * 256 * 512 (kv_b_proj over the n keys) + A * 2 * (192 + 128)
#pragma once

#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "gpu/ceilings.h"

namespace ds::bench {

struct MlaPrefillShape {
  int64_t tokens = 0, heads = 0;
};

struct MlaPrefillResult {
  MlaPrefillShape shape;
  Timing absorbed, expanded;
  double absorbed_flops = 0, expanded_flops = 0;
  double difference = 0;  // ||expanded - absorbed|| / ||absorbed|| over the outputs
};

// Runs every shape in both forms (a backend of each form, made here, on the default device).
[[nodiscard]] std::vector<MlaPrefillResult> bench_mla_prefill(const std::vector<MlaPrefillShape>& shapes,
                                                              int warmup, int iters);

}  // namespace ds::bench
