// The MLA decode op alone (CudaBackend::mla_attention) on FlashMLA's benchmark shapes: one query token per
// sequence, s_k cached tokens, latent 576 = 512 + 64 rope, bf16, pages of 64. Bytes and FLOPs are counted as
// FlashMLA's own benchmark counts them, so the numbers compare with its published ones:
//   bytes = (b * s_k * 576 + b * h * 576 + b * h * 512) * 2,   FLOPs = b * h * s_k * (576 + 512) * 2.
// Our op also absorbs W_UK / W_UV per head (FlashMLA takes the query already absorbed and returns the
// latent), which adds b * h * 4 * 128 * 512 FLOPs and reads kv_b_proj: uncounted here, small beside the
// cache.
#pragma once

#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "gpu/ceilings.h"

namespace ds::bench {

struct MlaShape {
  int64_t batch = 0, s_k = 0, heads = 0;
  double flashmla_us = 0;    // FlashMLA on this H100 as issue 6 records it (0: none published)
  double flashmla_gbps = 0;  // likewise (0: none published)
};

// One attention kernel to time: a backend built with its CudaBackendOptions::mla_decode.
struct MlaVariant {
  std::string name;
  CudaBackend* backend = nullptr;
};

struct MlaVariantResult {
  std::string name;
  Timing op;      // mla_attention: GEMMs, plan, attention kernel, combine
  Timing kernel;  // the attention kernel and its split-KV combine alone (FlashMLA's figure is its kernel)
  double difference = 0;  // normalized difference of the output from the first variant's (0 for the first)
};

struct MlaResult {
  MlaShape shape;
  std::vector<MlaVariantResult> variants;
  double bytes = 0, flops = 0;
};

// Every shape on every variant, the same inputs for each.
[[nodiscard]] std::vector<MlaResult> bench_mla_decode(const std::vector<MlaVariant>& variants,
                                                      const std::vector<MlaShape>& shapes, int warmup,
                                                      int iters);

}  // namespace ds::bench
