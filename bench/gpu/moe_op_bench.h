// The routed experts (CudaBackend::moe_experts) and the decode-sized dense linears alone, on random weights
// made for the purpose (no checkpoint): DeepSeek-V2-Lite's shapes in bf16 and the V3 slice's in block-FP8.
//
// moe_experts: 1,024 tokens (prefill) and 1 / 8 / 256 (decode), with each tile size of the grouped GEMMs
// forced (CudaBackendOptions::moe_tile_rows 32 and 64) and as picked per call; routing uniform at random
// (distinct experts per token), as a random checkpoint's router gives. Linears (q_proj or q_a / q_b, kv_a,
// o_proj) and the shared-expert MLP at 1, 8 and 64 rows, through cuBLASLt and through the streaming kernel
// (CudaBackendOptions::stream_gemm).
//
// Each call is timed alone with CUDA events, after a 256 MB memset on the same stream: the memset evicts the
// weights from L2 (as the model's other layers would) and keeps the GPU busy while the host enqueues the
// call, so the time is the device's, not the launch rate's. Floors: bytes that must be read (every touched
// expert's weights once, plus activations) over the measured copy bandwidth, and FLOPs over the measured GEMM
// rate.
#pragma once

#include <string>

#include "backend/cuda/cuda_backend.h"
#include "gpu/ceilings.h"

namespace ds::bench {

// Runs every row and returns the markdown tables.
[[nodiscard]] std::string bench_moe_ops(const Ceilings& ceil, int warmup, int iters);

}  // namespace ds::bench
