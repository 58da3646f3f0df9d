// The block-scaled FP8 GEMM through cuBLASLt (CUDA 12.9+ on Hopper): A = the weight, e4m3 with the
// checkpoint's 128x128 fp32 block scales (CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F); B = the activations,
// e4m3 with one fp32 scale per row and 128 columns (..._VEC128_32F), quantized just before the GEMM. The
// layout is cuBLASLt's "TN", as in cuda_gemm.cpp: out^T[N, T] = W^T(op T)[N, K] @ x^T[K, T].
#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_gemm.h"
#include "util/check.h"

namespace ds::cuda {
namespace {

std::unique_ptr<GemmPlan> make_fp8_plan(const CudaContext& ctx, int64_t t, int64_t n, int64_t k, int64_t ldo,
                                        DType out_dtype, int align_o) {
  auto plan = std::make_unique<GemmPlan>();
  DS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_w = CUBLAS_OP_T, trans_x = CUBLAS_OP_N;
  DS_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_w, sizeof(trans_w)));
  DS_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_x, sizeof(trans_x)));
  const int32_t w_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  const int32_t x_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  DS_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &w_mode, sizeof(w_mode)));
  DS_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &x_mode, sizeof(x_mode)));
  // Placeholder scale pointers for the heuristic; the real ones are set before each call.
  const void* dummy = ctx.workspace;
  DS_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dummy, sizeof(dummy)));
  DS_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dummy, sizeof(dummy)));
  const cudaDataType_t out_type = out_dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->w_layout, CUDA_R_8F_E4M3, static_cast<uint64_t>(k),
                                             static_cast<uint64_t>(n), k));
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->x_layout, CUDA_R_8F_E4M3, static_cast<uint64_t>(k),
                                             static_cast<uint64_t>(t), k));
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->out_layout, out_type, static_cast<uint64_t>(n),
                                             static_cast<uint64_t>(t), ldo));
  cublasLtMatmulPreference_t pref = nullptr;
  DS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t workspace = ctx.workspace_bytes;
  const auto a_o = static_cast<uint32_t>(align_o);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                       sizeof(workspace));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &a_o, sizeof(a_o));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &a_o, sizeof(a_o));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(ctx.lt, plan->desc, plan->w_layout, plan->x_layout, plan->out_layout,
                                     plan->out_layout, pref, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  if (status == CUBLAS_STATUS_SUCCESS && returned > 0) {
    plan->algo = result.algo;
    plan->supported = true;
  } else if (status != CUBLAS_STATUS_NOT_SUPPORTED && status != CUBLAS_STATUS_INVALID_VALUE) {
    DS_CUBLAS_CHECK(status);
  }
  return plan;
}

}  // namespace

bool gemm_fp8_block_scaled(CudaContext& ctx, const void* xq, const float* x_scales, const void* wq,
                           const float* w_scales, int64_t k, MatrixRef out) {
  const int64_t t = out.rows, n = out.cols;
  if (t == 0 || n == 0) return true;
  DS_CHECK(k > 0 && k % 128 == 0, "FP8 GEMM: inner dimension {} is not a multiple of 128", k);
  // cuBLASLt 13.0 offered algorithms for N = 576 and for [9, 128] @ [384, 128]^T whose results were wrong
  // (normalized error 0.3-0.5 on an H200, fp8_gemm_test); every shape tested with K and N multiples of 256 was
  // right. DeepSeek-V3/R1's GEMMs all are, but kv_a_proj_with_mqa (N = 576), which takes the bf16 path.
  if (n % 256 != 0 || k % 256 != 0) return false;
  const int align_o = alignment_of(out.data);
  // Keys apart from the bf16 plans' by a negative ldx.
  const auto key = std::make_tuple(t, n, k, int64_t{-1}, int64_t{-1}, out.ld, static_cast<int>(out.dtype), 0,
                                   0, align_o);
  auto it = ctx.gemm_plans.find(key);
  if (it == ctx.gemm_plans.end())
    it = ctx.gemm_plans.emplace(key, make_fp8_plan(ctx, t, n, k, out.ld, out.dtype, align_o)).first;
  const GemmPlan& plan = *it->second;
  if (!plan.supported) return false;
  DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scales,
                                                 sizeof(w_scales)));
  DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scales,
                                                 sizeof(x_scales)));
  const float alpha = 1.0f, beta = 0.0f;
  DS_CUBLAS_CHECK(cublasLtMatmul(ctx.lt, plan.desc, &alpha, wq, plan.w_layout, xq, plan.x_layout, &beta,
                                 out.data, plan.out_layout, out.data, plan.out_layout, &plan.algo,
                                 ctx.workspace, ctx.workspace_bytes, ctx.stream));
  return true;
}

}  // namespace ds::cuda
