// The two ceilings every roofline in bench_model is drawn against, measured on the card in the same run:
// device memory bandwidth (a large device-to-device copy, bytes read + bytes written) and the dense matrix
// rate (one cuBLASLt bf16 GEMM of 8192^3, fp32 accumulation, random operands).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ds::bench {

struct Timing {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  int iters = 0;
};

// Median / min / max of the samples (ms).
[[nodiscard]] Timing summarize(std::vector<double> samples);

struct Ceilings {
  double copy_bytes = 0;  // bytes read + written by one copy
  Timing copy;
  double copy_gbps = 0;  // GB/s (1e9), read + written
  int64_t gemm_n = 0;
  Timing gemm;
  double gemm_tflops = 0;
};

// `copy_bytes`: size of the copied buffer (read once, written once); `gemm_n`: M = N = K.
[[nodiscard]] Ceilings measure_ceilings(size_t copy_bytes, int64_t gemm_n, int warmup, int iters);

}  // namespace ds::bench
