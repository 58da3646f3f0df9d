// Row-major out[T, N] = x[T, K] @ w[N, K]^T is, column-major, out^T[N, T] = W^T(op T)[N, K] @ x^T[K, T]:
// A = w as a column-major [K, N] matrix with transa = T, B = x as column-major [K, T], C = D = out as
// column-major [N, T]. That is cuBLASLt's "TN" layout, the one every Hopper kernel (and FP8) supports.
#include "backend/cuda/cuda_gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "util/check.h"

namespace ds::cuda {

int alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  int align = 256;
  while (align > 1 && a % static_cast<uintptr_t>(align) != 0) align /= 2;
  return align;
}

namespace {

std::unique_ptr<GemmPlan> make_plan(const CudaContext& ctx, int64_t t, int64_t n, int64_t k, int64_t ldx,
                                    int64_t ldw, int64_t ldo, DType out_dtype, int align_x, int align_w,
                                    int align_o) {
  auto plan = std::make_unique<GemmPlan>();
  DS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_w = CUBLAS_OP_T, trans_x = CUBLAS_OP_N;
  DS_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_w, sizeof(trans_w)));
  DS_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_x, sizeof(trans_x)));
  const cudaDataType_t out_type = out_dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->w_layout, CUDA_R_16BF, static_cast<uint64_t>(k),
                                             static_cast<uint64_t>(n), ldw));
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->x_layout, CUDA_R_16BF, static_cast<uint64_t>(k),
                                             static_cast<uint64_t>(t), ldx));
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->out_layout, out_type, static_cast<uint64_t>(n),
                                             static_cast<uint64_t>(t), ldo));

  cublasLtMatmulPreference_t pref = nullptr;
  DS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t workspace = ctx.workspace_bytes;
  const auto a_w = static_cast<uint32_t>(align_w), a_x = static_cast<uint32_t>(align_x),
             a_o = static_cast<uint32_t>(align_o);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                       sizeof(workspace));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a_w, sizeof(a_w));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &a_x, sizeof(a_x));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &a_o, sizeof(a_o));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &a_o, sizeof(a_o));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  // NOT_SUPPORTED here is an answer, not a failure: the fallback kernel takes the shape.
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(ctx.lt, plan->desc, plan->w_layout, plan->x_layout, plan->out_layout,
                                     plan->out_layout, pref, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  if (status == CUBLAS_STATUS_SUCCESS && returned > 0) {
    plan->algo = result.algo;
    plan->supported = true;
  } else if (status != CUBLAS_STATUS_NOT_SUPPORTED) {
    DS_CUBLAS_CHECK(status);
  }
  return plan;
}

}  // namespace

GemmPlan::~GemmPlan() {
  if (out_layout != nullptr) cublasLtMatrixLayoutDestroy(out_layout);
  if (x_layout != nullptr) cublasLtMatrixLayoutDestroy(x_layout);
  if (w_layout != nullptr) cublasLtMatrixLayoutDestroy(w_layout);
  if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
}

void gemm_bf16(CudaContext& ctx, const void* x, int64_t ldx, const void* w, int64_t ldw, int64_t k,
               MatrixRef out) {
  const int64_t t = out.rows, n = out.cols;
  if (t == 0 || n == 0) return;
  DS_CHECK(k > 0, "GEMM with an empty inner dimension");
  const int align_x = alignment_of(x), align_w = alignment_of(w), align_o = alignment_of(out.data);
  const auto key =
      std::make_tuple(t, n, k, ldx, ldw, out.ld, static_cast<int>(out.dtype), align_x, align_w, align_o);
  auto it = ctx.gemm_plans.find(key);
  if (it == ctx.gemm_plans.end())
    it = ctx.gemm_plans
             .emplace(key, make_plan(ctx, t, n, k, ldx, ldw, out.ld, out.dtype, align_x, align_w, align_o))
             .first;
  const GemmPlan& plan = *it->second;
  if (!plan.supported) {
    launch_gemm_bf16_fallback(x, ldx, w, ldw, k, out, ctx.stream);
    DS_CUDA_CHECK_LAUNCH();
    return;
  }
  const float alpha = 1.0f, beta = 0.0f;
  DS_CUBLAS_CHECK(cublasLtMatmul(ctx.lt, plan.desc, &alpha, w, plan.w_layout, x, plan.x_layout, &beta,
                                 out.data, plan.out_layout, out.data, plan.out_layout, &plan.algo,
                                 ctx.workspace, ctx.workspace_bytes, ctx.stream));
}

namespace {

void set_batch(cublasLtMatrixLayout_t layout, int64_t batch, int64_t stride) {
  const auto count = static_cast<int32_t>(batch);
  DS_CUBLAS_CHECK(
      cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                   &stride, sizeof(stride)));
}

std::unique_ptr<GemmPlan> make_batched_plan(const CudaContext& ctx, const BatchedGemm& g, int align_a,
                                            int align_b, int align_d) {
  auto plan = std::make_unique<GemmPlan>();
  DS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  DS_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  DS_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
  // w_layout holds A, x_layout B, out_layout D (the names of the plain GEMM's operands).
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->w_layout, CUDA_R_16BF, g.trans_a ? u(g.k) : u(g.m),
                                             g.trans_a ? u(g.m) : u(g.k), g.lda));
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->x_layout, CUDA_R_16BF, u(g.k), u(g.n), g.ldb));
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(
      &plan->out_layout, g.d_dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF, u(g.m), u(g.n), g.ldd));
  set_batch(plan->w_layout, g.batch, g.stride_a);
  set_batch(plan->x_layout, g.batch, g.stride_b);
  set_batch(plan->out_layout, g.batch, g.stride_d);

  cublasLtMatmulPreference_t pref = nullptr;
  DS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t workspace = ctx.workspace_bytes;
  const auto a_a = static_cast<uint32_t>(align_a), a_b = static_cast<uint32_t>(align_b),
             a_d = static_cast<uint32_t>(align_d);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                       sizeof(workspace));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a_a, sizeof(a_a));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &a_b, sizeof(a_b));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &a_d, sizeof(a_d));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &a_d, sizeof(a_d));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(ctx.lt, plan->desc, plan->w_layout, plan->x_layout, plan->out_layout,
                                     plan->out_layout, pref, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  if (status == CUBLAS_STATUS_SUCCESS && returned > 0) {
    plan->algo = result.algo;
    plan->supported = true;
  } else if (status != CUBLAS_STATUS_NOT_SUPPORTED) {
    DS_CUBLAS_CHECK(status);
  }
  return plan;
}

// out = x @ w^T through the FP8 GEMM; false (nothing written) when cuBLASLt has no algorithm.
bool linear_fp8(CudaContext& ctx, MatrixRef x, const DeviceWeight& w, MatrixRef out) {
  constexpr int64_t kRowMultiple = 16;
  const int64_t t = x.rows, k = w.cols, n = w.rows, groups = k / 128;
  const int64_t tp = (t + kRowMultiple - 1) / kRowMultiple * kRowMultiple;
  auto* xq = static_cast<uint8_t*>(ctx.input_fp8.get(ctx.stream, static_cast<size_t>(tp * k)));
  auto* scales = static_cast<float*>(
      ctx.input_fp8_scales.get(ctx.stream, static_cast<size_t>(tp * groups) * sizeof(float)));
  if (tp != t) {
    DS_CUDA_CHECK(cudaMemsetAsync(xq + t * k, 0, static_cast<size_t>((tp - t) * k), ctx.stream));
    DS_CUDA_CHECK(cudaMemsetAsync(scales, 0, static_cast<size_t>(tp * groups) * sizeof(float), ctx.stream));
  }
  launch_quantize_fp8_1x128(x, xq, scales, kFp8ActScalesRowContiguous, tp, ctx.stream);
  DS_CUDA_CHECK_LAUNCH();
  if (tp == t) return gemm_fp8_block_scaled(ctx, xq, scales, w.data, w.scale_inv, k, out);
  const size_t elem = out.dtype == DType::kF32 ? 4 : 2;
  const MatrixRef padded{ctx.output_fp8_padded.get(ctx.stream, static_cast<size_t>(tp * n) * elem), out.dtype,
                         tp, n, n};
  if (!gemm_fp8_block_scaled(ctx, xq, scales, w.data, w.scale_inv, k, padded)) return false;
  DS_CUDA_CHECK(cudaMemcpy2DAsync(out.data, static_cast<size_t>(out.ld) * elem, padded.data,
                                  static_cast<size_t>(n) * elem, static_cast<size_t>(n) * elem,
                                  static_cast<size_t>(t), cudaMemcpyDeviceToDevice, ctx.stream));
  return true;
}

}  // namespace

void gemm_bf16_batched(CudaContext& ctx, const BatchedGemm& g) {
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  DS_CHECK(g.k > 0, "batched GEMM with an empty inner dimension");
  const int align_a = alignment_of(g.a), align_b = alignment_of(g.b), align_d = alignment_of(g.d);
  const BatchedPlanKey key = {g.m,   g.n,        g.k,     g.batch,    g.trans_a ? 1 : 0,
                              g.lda, g.stride_a, g.ldb,   g.stride_b, static_cast<int64_t>(g.d_dtype),
                              g.ldd, g.stride_d, align_a, align_b,    align_d};
  auto it = ctx.batched_plans.find(key);
  if (it == ctx.batched_plans.end())
    it = ctx.batched_plans.emplace(key, make_batched_plan(ctx, g, align_a, align_b, align_d)).first;
  const GemmPlan& plan = *it->second;
  DS_CHECK(plan.supported,
           "cuBLASLt has no batched bf16 GEMM for m {} n {} k {} batch {} (alignments {} {} {})", g.m, g.n,
           g.k, g.batch, align_a, align_b, align_d);
  const float alpha = 1.0f, beta = 0.0f;
  DS_CUBLAS_CHECK(cublasLtMatmul(ctx.lt, plan.desc, &alpha, g.a, plan.w_layout, g.b, plan.x_layout, &beta,
                                 g.d, plan.out_layout, g.d, plan.out_layout, &plan.algo, ctx.workspace,
                                 ctx.workspace_bytes, ctx.stream));
}

bool stream_gemm_auto_picks(const DeviceWeight& w, int64_t rows) {
  return w.dtype == DType::kF8E4M3 && rows >= 1 && rows <= 8 && w.cols >= 3 * w.rows;
}

namespace {

// A weight the streaming kernel reads: bf16, or FP8 with 128x128 block scales, rows of 16-byte chunks.
bool streamable(const DeviceWeight& w) {
  if (w.dtype == DType::kBF16 && w.scale_inv == nullptr) return w.cols % 8 == 0;
  return w.dtype == DType::kF8E4M3 && w.scale_inv != nullptr && w.block_rows == 128 && w.block_cols == 128 &&
         w.cols % 16 == 0;
}

}  // namespace

bool stream_gemm(CudaContext& ctx, const void* x, int64_t ldx, const DeviceWeight& w, const DeviceWeight* up,
                 MatrixRef out) {
  if (ctx.stream_gemm == StreamGemm::kOff ||
      (ctx.stream_gemm == StreamGemm::kAuto && !stream_gemm_auto_picks(w, out.rows)))
    return false;
  if (out.rows == 0 || out.rows > kStreamGemmMaxRows || !streamable(w) || ldx % 8 != 0 || alignment_of(x) < 16)
    return false;
  if (up != nullptr && (up->dtype != w.dtype || up->rows != w.rows || up->cols != w.cols || !streamable(*up)))
    return false;
  MoeGemmParams p;
  p.x = static_cast<const __nv_bfloat16*>(x);
  p.ldx = ldx;
  p.fp8 = w.dtype == DType::kF8E4M3;
  p.w_one = w.data;
  p.w_scale_one = w.scale_inv;
  if (up != nullptr) {
    p.w_up_one = up->data;
    p.w_up_scale_one = up->scale_inv;
  }
  p.n = w.rows;
  p.k = w.cols;
  p.dense_rows = static_cast<int32_t>(out.rows);
  p.max_tiles = static_cast<int32_t>((out.rows + kMoeTileRows - 1) / kMoeTileRows);
  p.out = out.data;
  p.out_dtype = out.dtype;
  p.ldo = out.ld;
  // Two CTAs per SM at least: a narrow weight (few 64-column tiles) cuts K into pieces of at least two 64-wide
  // steps, whose fp32 partial sums a second kernel adds up in a fixed order.
  constexpr int64_t kStep = 64;
  const int64_t ctas = p.max_tiles * ((p.n + 63) / 64), steps = (p.k + kStep - 1) / kStep;
  const int64_t want = std::max<int64_t>(1, (2 * std::max(ctx.sm_count, 1) + ctas - 1) / ctas);
  const int64_t pieces = std::min(want, std::max<int64_t>(1, steps / 2));
  if (pieces > 1) {
    p.k_split = (steps + pieces - 1) / pieces * kStep;
    p.k_pieces = static_cast<int32_t>((p.k + p.k_split - 1) / p.k_split);
    const size_t bytes = static_cast<size_t>(p.k_pieces) * (up != nullptr ? 2 : 1) *
                         static_cast<size_t>(out.rows * p.n) * sizeof(float);
    p.partial = static_cast<float*>(ctx.stream_partial.get(ctx.stream, bytes));
  }
  launch_moe_gemm(p, ctx.stream);
  DS_CUDA_CHECK_LAUNCH();
  if (p.partial != nullptr) {
    launch_stream_gemm_reduce(p, ctx.stream);
    DS_CUDA_CHECK_LAUNCH();
  }
  return true;
}

void linear_into(CudaContext& ctx, MatrixRef x, const Weight& w, MatrixRef out) {
  DS_CHECK(x.cols == w.cols && out.cols == w.rows && out.rows == x.rows,
           "linear {}: x [{}, {}] @ w [{}, {}]^T -> out [{}, {}]", w.name(), x.rows, x.cols, w.rows, w.cols,
           out.rows, out.cols);
  if (x.rows == 0) return;
  const DeviceWeight dw = device_weight(w);
  const void* x_bf16 = x.data;
  int64_t ldx = x.ld;
  if (x.dtype != DType::kBF16) {
    void* buf = ctx.input_bf16.get(ctx.stream, static_cast<size_t>(x.rows * x.cols) * 2);
    launch_convert(x, MatrixRef{buf, DType::kBF16, x.rows, x.cols, x.cols}, ctx.stream);
    DS_CUDA_CHECK_LAUNCH();
    x_bf16 = buf;
    ldx = x.cols;
  }
  // Decode-sized batches: the streaming kernel reads the weight once at close to the memory bandwidth (bf16
  // activations, FP8 weights scaled in fp32).
  if (stream_gemm(ctx, x_bf16, ldx, dw, nullptr, out)) return;
  // FP8 weights with the checkpoint's 128x128 block scales: quantize the activations per 1x128 and run the
  // GEMM on FP8 tensor cores (DeepSeek-V3's own inference scheme). Activations lose precision to e4m3 (3
  // mantissa bits): the output's normalized error against the bf16 GEMM is about 2.5% (fp8_gemm_test).
  // cuBLASLt (CUDA 13, Hopper) offers no algorithm for a row count that is not a multiple of 16, so the rows
  // are padded with zeros (decode batches). K and N must be multiples of 256: see gemm_fp8_block_scaled.
  if (dw.dtype == DType::kF8E4M3 && dw.scale_inv != nullptr && dw.block_rows == 128 && dw.block_cols == 128 &&
      w.cols % 256 == 0 && w.rows % 256 == 0 && ctx.fp8_gemm && linear_fp8(ctx, x, dw, out))
    return;
  const void* w_bf16 = dw.data;
  if (dw.dtype != DType::kBF16 || dw.scale_inv != nullptr) {
    // Correctness first: FP8 (and f16/f32) weights are expanded to bf16 for each GEMM. Rounding fp8 * scale
    // to bf16 costs at most 2^-9 relative per weight; the block-scaled FP8 GEMM replaces this in the next
    // step.
    void* buf = ctx.weight_bf16.get(ctx.stream, static_cast<size_t>(w.rows * w.cols) * 2);
    launch_weight_to_bf16(dw, buf, ctx.stream);
    DS_CUDA_CHECK_LAUNCH();
    w_bf16 = buf;
  }
  gemm_bf16(ctx, x_bf16, ldx, w_bf16, w.cols, w.cols, out);
}

}  // namespace ds::cuda
