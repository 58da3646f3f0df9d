// Dense GEMMs through cuBLASLt: bf16 operands, fp32 accumulation, F32 or BF16 output.
#pragma once

#include "backend/cuda/cuda_context.h"

namespace ds::cuda {

// The cuBLASLt descriptors and the algorithm chosen for one shape; `supported` is false when cuBLASLt offers
// no algorithm (odd leading dimensions or alignments), and the fallback kernel runs instead.
struct GemmPlan {
  GemmPlan() = default;
  ~GemmPlan();
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;

  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t w_layout = nullptr, x_layout = nullptr, out_layout = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool supported = false;
};

// The largest power of two (up to 256) that divides the address: cuBLASLt picks kernels by alignment.
[[nodiscard]] int alignment_of(const void* p);

// out[T, N] = x[T, K] @ w[N, K]^T with x and w bf16 (row strides ldx, ldw), out F32 or BF16 (row stride
// out.ld).
void gemm_bf16(CudaContext& ctx, const void* x, int64_t ldx, const void* w, int64_t ldw, int64_t k,
               MatrixRef out);

// A strided-batched bf16 GEMM in cuBLASLt's column-major terms: for i < batch,
//   D_i [m, n] = op(A_i) [m, k] @ B_i [k, n],   A_i = a + i * stride_a (op(A) = A^T when trans_a, A stored
//   [k, m]), B_i = b + i * stride_b, D_i = d + i * stride_d; leading dimensions and strides in elements.
// fp32 accumulation, D in F32 or BF16. Throws if cuBLASLt has no algorithm for it (odd alignments).
struct BatchedGemm {
  int64_t m = 0, n = 0, k = 0, batch = 0;
  bool trans_a = false;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* d = nullptr;
  DType d_dtype = DType::kBF16;
  int64_t ldd = 0, stride_d = 0;
};
void gemm_bf16_batched(CudaContext& ctx, const BatchedGemm& g);
// The scale layouts cuBLASLt's block-scaled FP8 GEMM reads (checked against a host GEMM on the GPU by
// tests/gpu/fp8_gemm_test.cpp): the activation scales with the rows of one 128-column group side by side; the
// weight scales as the checkpoint stores weight_scale_inv, [N / 128, K / 128] row-major.
inline constexpr bool kFp8ActScalesRowContiguous = true;

// Rows up to which linear_into and CudaBackend::mlp take the streaming kernel (cuda_moe_gemm.cu without
// tiles) instead of cuBLASLt, when CudaContext::stream_gemm is kAlways (CudaBackendOptions::stream_gemm).
inline constexpr int64_t kStreamGemmMaxRows = 64;
// StreamGemm::kAuto's rule: FP8 weights at most 8 rows deep with K >= 3 N (where it measured faster).
[[nodiscard]] bool stream_gemm_auto_picks(const DeviceWeight& w, int64_t rows);
// out[T, N] = x[T, K] @ w[N, K]^T through the streaming kernel, or with `up` out = silu(x w^T) * (x up^T); x bf16
// at row stride ldx. Returns false, doing nothing, when it is off (or kAuto does not pick w at this many rows),
// or the shape, the dtypes or the row count do not fit it.
[[nodiscard]] bool stream_gemm(CudaContext& ctx, const void* x, int64_t ldx, const DeviceWeight& w,
                               const DeviceWeight* up, MatrixRef out);

// out[T, N] = (xq * x_scales)[T, K] @ (wq * w_scales)[N, K]^T on FP8 tensor cores, fp32 accumulation: xq e4m3
// [T, K] (row stride K) with 1x128 scales (launch_quantize_fp8_1x128), wq e4m3 [N, K] with 128x128 scales.
// K must be a multiple of 128; cuBLASLt needs T a multiple of 16, and K and N multiples of 256 for correct
// results (false otherwise).
// Returns false, doing nothing, when cuBLASLt has no algorithm for the shape.
[[nodiscard]] bool gemm_fp8_block_scaled(CudaContext& ctx, const void* xq, const float* x_scales, const void* wq,
                                         const float* w_scales, int64_t k, MatrixRef out);

}  // namespace ds::cuda
