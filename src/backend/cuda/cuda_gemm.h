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

}  // namespace ds::cuda
