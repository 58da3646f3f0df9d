// What every CUDA op shares: the device, one stream, the cuBLASLt handle and its workspace, scratch buffers
// and GEMM plans; plus stream-ordered device buffers and the views the kernels take (cuda_kernels.h).
// Internal to src/backend/cuda: it includes CUDA headers, which nothing outside this folder may.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <tuple>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/cuda_step.h"

namespace ds::cuda {

struct GemmPlan;
// gemm_bf16_batched's plans by (m, n, k, batch, trans_a, lda, stride_a, ldb, stride_b, d dtype, ldd,
// stride_d, alignments of a, b, d).
using BatchedPlanKey = std::array<int64_t, 15>;

// A device buffer that grows on demand and is reused op after op; stream order makes the reuse safe.
// Growing while a graph is being captured is an error (the warm-up before a capture grows it); once graphs
// hold its address (keep_addresses), a buffer outgrown later stays allocated until release.
class Scratch {
 public:
  void* get(cudaStream_t stream, size_t bytes);
  void release(cudaStream_t stream);
  void keep_addresses() { keep_ = true; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  bool keep_ = false;
  std::vector<void*> kept_;
};

struct CudaContext {
  CudaContext(int device, bool sync_each_op);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  // Checks the launches of an op; with sync_each_op also waits for it, so a fault names the op that made it.
  void after_op(const char* op);

  int device = 0;
  bool sync_each_op = false;
  bool fp8_gemm = true;      // CudaBackendOptions::fp8_gemm
  StreamGemm stream_gemm = StreamGemm::kOff;  // CudaBackendOptions::stream_gemm
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  Scratch input_bf16;   // activations converted to bf16 for a GEMM
  Scratch weight_bf16;  // non-bf16 weights (FP8 + scales, f16, f32) dequantized to bf16 for a GEMM
  Scratch mla_q;        // mla_attention: q_latent [tokens, heads, 512] bf16 (and the query in bf16)
  Scratch mla_o;        // mla_attention: o_latent [tokens, heads, 512] bf16
  Scratch mla_partial;  // mla_attention: split-KV partials, fp32
  Scratch input_fp8, input_fp8_scales;  // activations quantized to e4m3 per 1x128 for an FP8 GEMM
  Scratch output_fp8_padded;            // an FP8 GEMM's output with its rows padded to a multiple of 16
  Scratch mla_plan;                     // mla_attention: the decode plan the device writes (tiles, segments)
  Scratch stream_partial;               // stream_gemm: fp32 partial sums of a split K dimension
  Scratch mla_expand_latent;  // mla_attention, expanded prefill: the context's cache rows [keys, 576] bf16
  Scratch mla_expand_kv;      // mla_attention, expanded prefill: k_nope | v per head [keys, heads * 256] bf16
  StepBuffers step;                     // Backend::stage_step's arrays
  // RoPE inverse frequencies on the device, by value (a model's table is uploaded once; graphs keep its
  // address).
  std::vector<std::pair<std::vector<float>, void*>> rope_tables;
  std::vector<cudaGraphExec_t> graphs;  // captured by CudaBackend::end_capture; null once cleared
  // Every Scratch, for keep_addresses and release.
  [[nodiscard]] std::array<Scratch*, 12> scratches() {
    return {&input_bf16,     &weight_bf16,       &mla_q,            &mla_o,
            &mla_partial,    &input_fp8,         &input_fp8_scales, &output_fp8_padded,
            &mla_plan,       &stream_partial,    &mla_expand_latent, &mla_expand_kv};
  }
  // GEMM plans by (t, n, k, ldx, ldw, ldo, out dtype, pointer alignments).
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int, int>,
           std::unique_ptr<GemmPlan>>
      gemm_plans;
  std::map<BatchedPlanKey, std::unique_ptr<GemmPlan>> batched_plans;
  int sm_count = 0;
  int64_t free_at_start = 0;  // the driver's free bytes once the context existed, before our allocations
};

// A stream-ordered device allocation: cudaMallocAsync on creation, cudaFreeAsync on destruction, so it may go
// out of scope while kernels that use it are still queued.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(cudaStream_t stream, size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : stream_(o.stream_), ptr_(o.ptr_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&&) = delete;
  DeviceBuffer(const DeviceBuffer&) = delete;

  template <class T>
  [[nodiscard]] T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  cudaStream_t stream_ = nullptr;
  void* ptr_ = nullptr;
};

// Copies a small host array (ids, positions, slots, tables) to a new device buffer on the stream. The host
// data may be freed on return (pageable copies are staged before cudaMemcpyAsync returns).
template <class T>
DeviceBuffer upload(const CudaContext& ctx, std::span<const T> host) {
  DeviceBuffer buf(ctx.stream, host.size_bytes());
  if (!host.empty())
    DS_CUDA_CHECK(
        cudaMemcpyAsync(buf.as<T>(), host.data(), host.size_bytes(), cudaMemcpyHostToDevice, ctx.stream));
  return buf;
}

// A host array's device copy for one op: the step's own (Backend::stage_step) when `host` is one of its
// arrays, else a new upload that lives as long as this object.
struct DeviceArray {
  const void* data = nullptr;
  std::unique_ptr<DeviceBuffer> owned;
  template <class T>
  [[nodiscard]] const T* as() const {
    return static_cast<const T*>(data);
  }
};
template <class T>
DeviceArray device_array(const CudaContext& ctx, std::span<const T> host) {
  if (const void* staged = ctx.step.find(host.data(), host.size_bytes())) return DeviceArray{staged, nullptr};
  auto buf = std::make_unique<DeviceBuffer>(upload(ctx, host));
  const void* data = buf->template as<T>();
  return DeviceArray{data, std::move(buf)};
}

// The RoPE table's device copy (uploaded the first time these values are seen).
[[nodiscard]] const float* rope_table(CudaContext& ctx, std::span<const float> inv_freq);

// One host-to-device copy for upload_parallel: from a file (fd >= 0: pread at file_offset) or from host memory.
struct HostToDevice {
  const void* src = nullptr;  // pageable host memory (the mapped checkpoint), read when fd < 0
  void* dst = nullptr;
  size_t bytes = 0;
  int fd = -1;  // the same bytes in a file: read with pread, which skips the map's page faults
  uint64_t file_offset = 0;
  const std::filesystem::path* file = nullptr;  // for error messages
};
// Where upload_parallel's time went: read and wait are summed over its reader threads.
using UploadStats = WeightUploadStats;
// Runs the copies with up to max_threads reader threads, each staging chunk_bytes at a time through two pinned
// buffers and its own stream; returns when every byte is on the device. Rethrows the first error.
UploadStats upload_parallel(std::span<const HostToDevice> copies, int device, int max_threads, size_t chunk_bytes);

// The kernels' view of a prepared weight; throws if Backend::prepare_weight was not called on it.
[[nodiscard]] DeviceWeight device_weight(const Weight& w);
// The kernels' view of a tensor as [rows, cols] (F32 or BF16 only).
[[nodiscard]] MatrixRef matrix(const Tensor& t);
// The tensor's elements as one row [1, numel].
[[nodiscard]] MatrixRef flat(const Tensor& t);
// Rows [begin, begin + n) of m.
[[nodiscard]] MatrixRef row_slice(MatrixRef m, int64_t begin, int64_t n);
// Columns [begin, begin + n) of m.
[[nodiscard]] MatrixRef col_slice(MatrixRef m, int64_t begin, int64_t n);

// out[T, N] = x[T, K] @ w[N, K]^T: cuBLASLt with bf16 operands and fp32 accumulation, out in F32 or BF16.
// x is converted to bf16 if it is F32; w is used in place if bf16, else dequantized to bf16 first.
void linear_into(CudaContext& ctx, MatrixRef x, const Weight& w, MatrixRef out);

}  // namespace ds::cuda
