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

}  // namespace ds::cuda
