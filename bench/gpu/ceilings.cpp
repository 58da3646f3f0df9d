#include "gpu/ceilings.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <random>
#include <vector>

#include "io/dtype.h"
#include "util/check.h"

#define CEIL_CUDA_CHECK(call)                                                       \
  do {                                                                              \
    const cudaError_t status_ = (call);                                             \
    DS_CHECK(status_ == cudaSuccess, "{}: {}", #call, cudaGetErrorString(status_)); \
  } while (0)
#define CEIL_CUBLAS_CHECK(call)                                                                    \
  do {                                                                                             \
    const cublasStatus_t status_ = (call);                                                         \
    DS_CHECK(status_ == CUBLAS_STATUS_SUCCESS, "{}: {}", #call, cublasLtGetStatusString(status_)); \
  } while (0)

namespace ds::bench {

Timing summarize(std::vector<double> samples) {
  Timing t;
  if (samples.empty()) return t;
  std::sort(samples.begin(), samples.end());
  const size_t n = samples.size();
  t.median_ms = n % 2 == 1 ? samples[n / 2] : 0.5 * (samples[n / 2 - 1] + samples[n / 2]);
  t.min_ms = samples.front();
  t.max_ms = samples.back();
  t.iters = static_cast<int>(n);
  return t;
}

namespace {

// Fills `bytes` of device memory with random bf16 values in [-1, 1) (never zeros: they can run faster).
void fill_random_bf16(void* dst, size_t bytes, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<uint16_t> chunk(size_t{8} << 20);  // 16 MiB of bf16
  for (uint16_t& v : chunk) v = f32_to_bf16(dist(rng));
  const size_t chunk_bytes = chunk.size() * sizeof(uint16_t);
  for (size_t off = 0; off < bytes; off += chunk_bytes)
    CEIL_CUDA_CHECK(cudaMemcpy(static_cast<char*>(dst) + off, chunk.data(),
                               std::min(chunk_bytes, bytes - off), cudaMemcpyHostToDevice));
}

template <class Fn>
Timing time_events(cudaStream_t stream, int warmup, int iters, Fn&& fn) {
  cudaEvent_t start = nullptr, stop = nullptr;
  CEIL_CUDA_CHECK(cudaEventCreate(&start));
  CEIL_CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < warmup; ++i) fn();
  CEIL_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> samples;
  for (int i = 0; i < iters; ++i) {
    CEIL_CUDA_CHECK(cudaEventRecord(start, stream));
    fn();
    CEIL_CUDA_CHECK(cudaEventRecord(stop, stream));
    CEIL_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CEIL_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    samples.push_back(ms);
  }
  CEIL_CUDA_CHECK(cudaEventDestroy(start));
  CEIL_CUDA_CHECK(cudaEventDestroy(stop));
  return summarize(std::move(samples));
}

}  // namespace

Ceilings measure_ceilings(size_t copy_bytes, int64_t gemm_n, int warmup, int iters) {
  Ceilings c;
  cudaStream_t stream = nullptr;
  CEIL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  // Copy bandwidth: src -> dst, both far larger than the 50 MB L2.
  void *src = nullptr, *dst = nullptr;
  CEIL_CUDA_CHECK(cudaMalloc(&src, copy_bytes));
  CEIL_CUDA_CHECK(cudaMalloc(&dst, copy_bytes));
  fill_random_bf16(src, copy_bytes, 1);
  fill_random_bf16(dst, copy_bytes, 2);
  c.copy = time_events(stream, warmup, iters, [&] {
    CEIL_CUDA_CHECK(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, stream));
  });
  c.copy_bytes = 2.0 * static_cast<double>(copy_bytes);
  c.copy_gbps = c.copy_bytes / (c.copy.median_ms * 1e-3) / 1e9;
  CEIL_CUDA_CHECK(cudaFree(src));
  CEIL_CUDA_CHECK(cudaFree(dst));

  // GEMM rate: D[n, n] = A^T B, bf16 operands, fp32 compute, bf16 out; cuBLASLt's first heuristic choice.
  const int64_t n = gemm_n;
  const size_t mat = static_cast<size_t>(n * n) * 2;
  void *a = nullptr, *b = nullptr, *d = nullptr, *workspace = nullptr;
  const size_t workspace_bytes = size_t{32} << 20;
  CEIL_CUDA_CHECK(cudaMalloc(&a, mat));
  CEIL_CUDA_CHECK(cudaMalloc(&b, mat));
  CEIL_CUDA_CHECK(cudaMalloc(&d, mat));
  CEIL_CUDA_CHECK(cudaMalloc(&workspace, workspace_bytes));
  fill_random_bf16(a, mat, 3);
  fill_random_bf16(b, mat, 4);
  cublasLtHandle_t lt = nullptr;
  CEIL_CUBLAS_CHECK(cublasLtCreate(&lt));
  cublasLtMatmulDesc_t desc = nullptr;
  CEIL_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  CEIL_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  CEIL_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  const auto un = static_cast<uint64_t>(n);
  CEIL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, un, un, n));
  CEIL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, un, un, n));
  CEIL_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, un, un, n));
  cublasLtMatmulPreference_t pref = nullptr;
  CEIL_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes;
  CEIL_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  CEIL_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 1, &result, &returned));
  DS_CHECK(returned > 0, "cuBLASLt offers no algorithm for a {}^3 bf16 GEMM", n);
  const float alpha = 1.0f, beta = 0.0f;
  c.gemm = time_events(stream, warmup, iters, [&] {
    CEIL_CUBLAS_CHECK(cublasLtMatmul(lt, desc, &alpha, a, la, b, lb, &beta, d, ld, d, ld, &result.algo,
                                     workspace, workspace_bytes, stream));
  });
  c.gemm_n = n;
  c.gemm_tflops = 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) /
                  (c.gemm.median_ms * 1e-3) / 1e12;
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(ld);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(lt);
  CEIL_CUDA_CHECK(cudaFree(a));
  CEIL_CUDA_CHECK(cudaFree(b));
  CEIL_CUDA_CHECK(cudaFree(d));
  CEIL_CUDA_CHECK(cudaFree(workspace));
  CEIL_CUDA_CHECK(cudaStreamDestroy(stream));
  return c;
}

}  // namespace ds::bench
