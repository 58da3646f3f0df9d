// CUDA-event timing the benchmarks share.
#pragma once

#include <cuda_runtime.h>

#include <functional>

#include "gpu/ceilings.h"

namespace ds::bench {

// Throws (DS_CHECK) naming `what` and the CUDA error when status is not cudaSuccess.
void check_cuda(cudaError_t status, const char* what);

// Times `call` on `stream` with an event on each side of it: `warmup` calls (at least one, whose time sets the
// pace), then as many as fit budget_ms, at least 3 and at most `iters`, waiting for each.
[[nodiscard]] Timing time_calls(cudaStream_t stream, int warmup, int iters, double budget_ms,
                                const std::function<void()>& call);

}  // namespace ds::bench
