#include "gpu/event_timing.h"

#include <algorithm>
#include <vector>

#include "util/check.h"

namespace ds::bench {

void check_cuda(cudaError_t status, const char* what) {
  DS_CHECK(status == cudaSuccess, "{}: {}", what, cudaGetErrorString(status));
}

Timing time_calls(cudaStream_t stream, int warmup, int iters, double budget_ms, const std::function<void()>& call) {
  cudaEvent_t start = nullptr, stop = nullptr;
  check_cuda(cudaEventCreate(&start), "cudaEventCreate");
  check_cuda(cudaEventCreate(&stop), "cudaEventCreate");
  auto one = [&] {
    check_cuda(cudaEventRecord(start, stream), "cudaEventRecord");
    call();
    check_cuda(cudaEventRecord(stop, stream), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    return static_cast<double>(ms);
  };
  double warm_ms = 0;
  for (int i = 0; i < std::max(warmup, 1); ++i) warm_ms = one();
  const int n = std::max(3, std::min(iters, static_cast<int>(budget_ms / std::max(warm_ms, 1e-3))));
  std::vector<double> samples;
  for (int i = 0; i < n; ++i) samples.push_back(one());
  check_cuda(cudaEventDestroy(start), "cudaEventDestroy");
  check_cuda(cudaEventDestroy(stop), "cudaEventDestroy");
  return summarize(std::move(samples));
}

}  // namespace ds::bench
