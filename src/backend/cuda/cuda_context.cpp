#include "backend/cuda/cuda_context.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

#include "backend/cuda/cuda_gemm.h"
#include "util/check.h"

namespace ds::cuda {

void cuda_failed(cudaError_t status, const char* call, const char* file, int line) {
  throw InternalError(fmt::format("{}:{}: CUDA error {} ({}) from {}", file, line, cudaGetErrorName(status),
                                  cudaGetErrorString(status), call));
}

void cublas_failed(cublasStatus_t status, const char* call, const char* file, int line) {
  throw InternalError(fmt::format("{}:{}: cuBLASLt error {} ({}) from {}", file, line,
                                  cublasLtGetStatusName(status), cublasLtGetStatusString(status), call));
}

namespace {

// Destructors must not throw: report and carry on (the next checked call will raise the sticky error).
void report_in_destructor(cudaError_t status, const char* what) {
  if (status == cudaErrorStreamCaptureInvalidated) {
    // Freeing what a failed graph capture allocated: the discarded graph owned it (CudaBackend::end_capture).
    (void)cudaGetLastError();
    return;
  }
  if (status != cudaSuccess)
    std::fprintf(stderr, "deepserve: CUDA error %s (%s) in %s\n", cudaGetErrorName(status),
                 cudaGetErrorString(status), what);
}

}  // namespace

void* Scratch::get(cudaStream_t stream, size_t bytes) {
  if (bytes > bytes_) {
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    DS_CUDA_CHECK(cudaStreamIsCapturing(stream, &capturing));
    DS_CHECK(capturing == cudaStreamCaptureStatusNone,
             "a scratch buffer of {} bytes had to grow to {} while a graph was captured: run the same step "
             "before capturing it",
             bytes_, bytes);
    if (keep_ && ptr_ != nullptr) {
      kept_.push_back(ptr_);  // a graph may still read it
    } else if (ptr_ != nullptr) {
      report_in_destructor(cudaFreeAsync(ptr_, stream), "Scratch::get");
    }
    ptr_ = nullptr;
    bytes_ = 0;
    DS_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream));
    bytes_ = bytes;
  }
  return ptr_;
}

void Scratch::release(cudaStream_t stream) {
  if (ptr_ != nullptr) report_in_destructor(cudaFreeAsync(ptr_, stream), "Scratch::release");
  for (void* p : kept_) report_in_destructor(cudaFreeAsync(p, stream), "Scratch::release");
  kept_.clear();
  ptr_ = nullptr;
  bytes_ = 0;
}

CudaContext::CudaContext(int device_index, bool sync) : device(device_index), sync_each_op(sync) {
  // No GPU (or no driver) is the machine's state, not our bug: say so in words a user can act on.
  int count = 0;
  const cudaError_t found = cudaGetDeviceCount(&count);
  DS_REQUIRE(found == cudaSuccess && count > 0, UserError,
             "no CUDA device is usable here ({}); use --device cpu",
             found == cudaSuccess ? "none found" : cudaGetErrorString(found));
  DS_REQUIRE(device >= 0 && device < count, UserError, "CUDA device {} requested, {} present", device, count);
  DS_CUDA_CHECK(cudaSetDevice(device));
  DS_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  DS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  size_t free = 0, total = 0;
  DS_CUDA_CHECK(cudaMemGetInfo(&free, &total));  // the context exists now: what is free before our allocations
  free_at_start = static_cast<int64_t>(free);
  // Keep freed stream-ordered memory in the pool instead of returning it to the driver at every sync.
  cudaMemPool_t pool = nullptr;
  DS_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t threshold = UINT64_MAX;
  DS_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  DS_CUBLAS_CHECK(cublasLtCreate(&lt));
  workspace_bytes = size_t{32} << 20;  // cuBLASLt's recommendation for Hopper
  DS_CUDA_CHECK(cudaMalloc(&workspace, workspace_bytes));
}

CudaContext::~CudaContext() {
  report_in_destructor(cudaStreamSynchronize(stream), "~CudaContext (pending work)");
  for (cudaGraphExec_t g : graphs)
    if (g != nullptr) report_in_destructor(cudaGraphExecDestroy(g), "~CudaContext (graph)");
  graphs.clear();
  gemm_plans.clear();
  batched_plans.clear();
  for (Scratch* s : scratches()) s->release(stream);
  for (auto& [values, table] : rope_tables) report_in_destructor(cudaFreeAsync(table, stream), "~CudaContext (rope)");
  step.release(stream);
  report_in_destructor(cudaStreamSynchronize(stream), "~CudaContext (scratch)");
  report_in_destructor(cudaFree(workspace), "~CudaContext (workspace)");
  if (lt != nullptr) cublasLtDestroy(lt);
  report_in_destructor(cudaStreamDestroy(stream), "~CudaContext (stream)");
}

void CudaContext::after_op(const char* op) {
  const cudaError_t launch = cudaGetLastError();
  if (launch != cudaSuccess) cuda_failed(launch, op, __FILE__, __LINE__);
  if (!sync_each_op) return;
  const cudaError_t done = cudaStreamSynchronize(stream);
  if (done != cudaSuccess) cuda_failed(done, op, __FILE__, __LINE__);
}

DeviceBuffer::DeviceBuffer(cudaStream_t stream, size_t bytes) : stream_(stream) {
  DS_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes > 0 ? bytes : 1, stream));
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ != nullptr) report_in_destructor(cudaFreeAsync(ptr_, stream_), "~DeviceBuffer");
}

const float* rope_table(CudaContext& ctx, std::span<const float> inv_freq) {
  for (const auto& [values, table] : ctx.rope_tables)
    if (std::equal(values.begin(), values.end(), inv_freq.begin(), inv_freq.end()))
      return static_cast<const float*>(table);
  void* table = nullptr;
  DS_CUDA_CHECK(cudaMallocAsync(&table, std::max<size_t>(inv_freq.size_bytes(), 1), ctx.stream));
  ctx.rope_tables.emplace_back(std::vector<float>(inv_freq.begin(), inv_freq.end()), table);
  // From the copy kept in rope_tables, which outlives the asynchronous copy.
  const std::vector<float>& kept = ctx.rope_tables.back().first;
  if (!kept.empty())
    DS_CUDA_CHECK(cudaMemcpyAsync(table, kept.data(), kept.size() * sizeof(float), cudaMemcpyHostToDevice, ctx.stream));
  return static_cast<const float*>(table);
}

DeviceWeight device_weight(const Weight& w) {
  DS_CHECK(!w.empty(), "an empty weight reached a CUDA op");
  DS_CHECK(w.device_data != nullptr,
           "weight '{}' is not on the GPU: call Backend::prepare_weight on it first", w.name());
  DeviceWeight d;
  d.data = w.device_data;
  d.dtype = w.tensor->dtype;
  d.rows = w.rows;
  d.cols = w.cols;
  if (w.scale_inv != nullptr) {
    DS_CHECK(w.device_scale_inv != nullptr, "weight '{}': block scales not on the GPU", w.name());
    d.scale_inv = w.device_scale_inv;
    d.block_rows = w.block_rows;
    d.block_cols = w.block_cols;
    d.scale_cols = (w.cols + w.block_cols - 1) / w.block_cols;
  }
  return d;
}

MatrixRef matrix(const Tensor& t) {
  DS_CHECK(t.dtype == DType::kF32 || t.dtype == DType::kBF16, "CUDA activations are F32 or BF16, not {}",
           dtype_name(t.dtype));
  DS_CHECK(!t.shape.empty(), "a scalar tensor reached a CUDA op");
  return MatrixRef{t.data, t.dtype, t.rows(), t.cols(), t.cols()};
}

MatrixRef flat(const Tensor& t) {
  MatrixRef m = matrix(t);
  m.cols = m.ld = t.numel();
  m.rows = 1;
  return m;
}

MatrixRef row_slice(MatrixRef m, int64_t begin, int64_t n) {
  DS_CHECK(begin >= 0 && n >= 0 && begin + n <= m.rows, "rows [{}, {}) of {}", begin, begin + n, m.rows);
  m.data = static_cast<std::byte*>(m.data) + static_cast<size_t>(begin * m.ld) * dtype_size(m.dtype);
  m.rows = n;
  return m;
}

MatrixRef col_slice(MatrixRef m, int64_t begin, int64_t n) {
  DS_CHECK(begin >= 0 && n >= 0 && begin + n <= m.cols, "columns [{}, {}) of {}", begin, begin + n, m.cols);
  m.data = static_cast<std::byte*>(m.data) + static_cast<size_t>(begin) * dtype_size(m.dtype);
  m.cols = n;
  return m;
}

}  // namespace ds::cuda
