// CudaBackend: device memory, weight upload, host<->device copies and the row-wise ops. Host-side arguments
// (ids, positions, slots, rows) are validated here, on the host, before any kernel can read out of bounds.
#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_context.h"
#include "backend/cuda/cuda_gemm.h"
#include "util/check.h"

namespace ds {

using cuda::col_slice;
using cuda::device_weight;
using cuda::matrix;

namespace {

// A debug switch of the environment (docs/gpu.md): nullopt when unset, else its value, which must be one of
// `values`; any other is a UserError listing them with what each does.
std::optional<std::string_view> env_switch(const char* name,
                                           std::initializer_list<std::pair<std::string_view, std::string_view>> values) {
  const char* v = std::getenv(name);
  if (v == nullptr) return std::nullopt;
  std::string choices;
  for (const auto& [value, meaning] : values) {
    if (value == v) return value;
    choices += fmt::format("{}{} ({})", choices.empty() ? "" : " or ", value, meaning);
  }
  throw UserError(fmt::format("{}={}: use {}", name, v, choices));
}

}  // namespace

CudaBackend::CudaBackend(CudaBackendOptions options) {
  const char* env = std::getenv("DEEPSERVE_CUDA_SYNC");
  const bool sync = options.sync_each_op || (env != nullptr && std::strcmp(env, "0") != 0 && *env != '\0');
  ctx_ = std::make_shared<cuda::CudaContext>(options.device, sync);
  const char* mla = std::getenv("DEEPSERVE_MLA");
  legacy_mla_ = options.legacy_mla || (mla != nullptr && std::strcmp(mla, "legacy") == 0);
  const auto fp8 = env_switch("DS_FP8_GEMM", {{"0", "FP8 weights expanded to bf16 for every GEMM"},
                                              {"1", "block-scaled FP8 GEMMs"}});
  ctx_->fp8_gemm = options.fp8_gemm && fp8.value_or("1") == "1";
  ctx_->stream_gemm = options.stream_gemm;
  if (const auto v = env_switch("DS_STREAM_GEMM", {{"0", "cuBLASLt for every linear"},
                                                   {"1", "the streaming kernel for every linear of at most 64 rows"}}))
    ctx_->stream_gemm = *v == "0" ? StreamGemm::kOff : StreamGemm::kAlways;
  mla_prefill_ = options.mla_prefill;
  if (env_switch("DS_MLA_PREFILL", {{"0", "weight-absorbed MLA for every token"}, {"1", "expanded prefill"}}) == "0")
    mla_prefill_ = MlaPrefillForm::kAbsorbed;
  mla_decode_ = options.mla_decode;
  if (const auto v = env_switch("DS_MLA_DECODE", {{"1", "the first tensor-core MLA kernel"}, {"2", "the second"}}))
    mla_decode_ = *v == "1" ? MlaDecodeKernel::kV1 : MlaDecodeKernel::kV2;
  const auto grouped = env_switch("DS_MOE_GROUPED", {{"0", "one cuBLASLt GEMM per expert, routing copied to the "
                                                          "host"}, {"1", "grouped expert GEMMs"}});
  grouped_experts_ = options.grouped_experts && grouped.value_or("1") == "1";
  DS_CHECK(options.moe_tile_rows == 0 || options.moe_tile_rows == cuda::kMoeTileRows ||
               options.moe_tile_rows == cuda::kMoeLargeTileRows,
           "moe_tile_rows {}: 0 (per call), {} or {}", options.moe_tile_rows, cuda::kMoeTileRows,
           cuda::kMoeLargeTileRows);
  moe_tile_rows_ = options.moe_tile_rows;
  exact_router_ = options.exact_router;
  if (env_switch("DS_ROUTER", {{"bf16", "the router GEMM on the input rounded to bf16"},
                               {"fp32", "the router GEMM exact on the fp32 input (two bf16 terms)"}}) == "bf16")
    exact_router_ = false;
  const auto tile = env_switch("DS_MOE_TILE_ROWS", {{"32", "32-row expert tiles"}, {"64", "64-row expert tiles"}});
  if (tile && moe_tile_rows_ == 0) moe_tile_rows_ = *tile == "32" ? cuda::kMoeTileRows : cuda::kMoeLargeTileRows;
}

CudaBackend::~CudaBackend() {
  cudaStreamSynchronize(ctx_->stream);
  for (void* p : weight_allocations_) cudaFree(p);
}

void CudaBackend::synchronize() {
  DS_CUDA_CHECK(cudaStreamSynchronize(ctx_->stream));
}

void* CudaBackend::stream_handle() const {
  return ctx_->stream;
}

std::string CudaBackend::device_name() const {
  cudaDeviceProp prop{};
  DS_CUDA_CHECK(cudaGetDeviceProperties(&prop, ctx_->device));
  return prop.name;
}

void* CudaBackend::allocate_weight(const Weight& w, size_t bytes) {
  void* data = nullptr;
  const cudaError_t allocated = cudaMalloc(&data, bytes > 0 ? bytes : 1);
  if (allocated == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear the sticky error state of this thread
    size_t free = 0, total = 0;
    DS_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    constexpr double kGiB = double(1 << 30);
    throw UserError(fmt::format(
        "out of GPU memory loading the weights: {:.2f} GiB are on GPU {} so far and '{}' needs {:.3f} GiB more, "
        "but only {:.2f} GiB of its {:.2f} GiB are free. The checkpoint does not fit this GPU: use one with "
        "more memory, or free what other processes hold (nvidia-smi)",
        double(weight_bytes_) / kGiB, ctx_->device, w.name(), double(bytes) / kGiB, double(free) / kGiB,
        double(total) / kGiB));
  }
  DS_CUDA_CHECK(allocated);
  weight_allocations_.push_back(data);
  weight_bytes_ += bytes;
  return data;
}

void CudaBackend::upload_scales(Weight& w) {
  if (w.scale_inv == nullptr) return;
  // Block scales go up as fp32 whatever their stored dtype, so kernels read one type.
  std::vector<float> scales(static_cast<size_t>(w.scale_inv->numel()));
  convert_to_f32(w.scale_inv->dtype, w.scale_inv->data, scales.data(), scales.size());
  float* on_device = nullptr;
  DS_CUDA_CHECK(cudaMalloc(&on_device, scales.size() * sizeof(float)));
  weight_allocations_.push_back(on_device);
  DS_CUDA_CHECK(cudaMemcpy(on_device, scales.data(), scales.size() * sizeof(float), cudaMemcpyHostToDevice));
  weight_bytes_ += scales.size() * sizeof(float);
  w.device_scale_inv = on_device;
}

namespace {

size_t checked_weight_bytes(const Weight& w) {
  const size_t bytes = w.tensor->nbytes;
  DS_CHECK(bytes == static_cast<size_t>(w.rows * w.cols) * dtype_size(w.tensor->dtype),
           "weight '{}': {} bytes for [{}, {}] {}", w.name(), bytes, w.rows, w.cols,
           dtype_name(w.tensor->dtype));
  return bytes;
}

}  // namespace

void CudaBackend::prepare_weight(Weight& w) {
  if (w.empty() || w.device_data != nullptr) return;
  const size_t bytes = checked_weight_bytes(w);
  void* data = allocate_weight(w, bytes);
  DS_CUDA_CHECK(cudaMemcpy(data, w.tensor->data, bytes, cudaMemcpyHostToDevice));
  upload_scales(w);
  w.device_data = data;
}

void CudaBackend::prepare_weights(std::span<Weight* const> weights) {
  std::vector<cuda::HostToDevice> copies;
  for (Weight* w : weights) {
    if (w->empty() || w->device_data != nullptr) continue;
    const size_t bytes = checked_weight_bytes(*w);
    void* data = allocate_weight(*w, bytes);
    upload_scales(*w);
    copies.push_back({w->tensor->data, data, bytes, w->tensor->fd, w->tensor->file_offset, &w->tensor->file});
    w->device_data = data;
  }
  // One reader per core up to 16 (the H100 hosts' PCIe and page cache keep up with that many), at least 4.
  const int readers = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 4u, 16u));
  constexpr size_t kChunk = size_t{32} << 20;
  const cuda::UploadStats stats = cuda::upload_parallel(copies, ctx_->device, readers, kChunk);
  upload_.threads = stats.threads;
  upload_.wall_s += stats.wall_s;
  upload_.read_s += stats.read_s;
  upload_.wait_s += stats.wait_s;
}

Tensor CudaBackend::allocate(std::vector<int64_t> shape, DType dtype) {
  Tensor t;
  t.shape = std::move(shape);
  t.dtype = dtype;
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(t.numel(), 1)) * dtype_size(dtype);
  void* p = nullptr;
  DS_CUDA_CHECK(cudaMallocAsync(&p, bytes, ctx_->stream));
  std::shared_ptr<cuda::CudaContext> ctx = ctx_;
  t.storage = std::shared_ptr<void>(p, [ctx](void* q) {
    const cudaError_t status = cudaFreeAsync(q, ctx->stream);
    // A tensor allocated in a capture that failed: the discarded graph owned it.
    if (status == cudaErrorStreamCaptureInvalidated) {
      (void)cudaGetLastError();
      return;
    }
    if (status != cudaSuccess)
      std::fprintf(stderr, "deepserve: cudaFreeAsync: %s\n", cudaGetErrorString(status));
  });
  t.data = p;
  return t;
}

std::optional<DeviceMemoryInfo> CudaBackend::device_memory() {
  size_t free = 0, total = 0;
  DS_CUDA_CHECK(cudaMemGetInfo(&free, &total));
  cudaMemPool_t pool = nullptr;
  DS_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, ctx_->device));
  uint64_t peak = 0;
  DS_CUDA_CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &peak));
  return DeviceMemoryInfo{static_cast<int64_t>(free), static_cast<int64_t>(total), ctx_->free_at_start,
                          static_cast<int64_t>(weight_bytes_), static_cast<int64_t>(peak), upload_};
}

void CudaBackend::reset_memory_peak() {
  DS_CUDA_CHECK(cudaStreamSynchronize(ctx_->stream));
  cudaMemPool_t pool = nullptr;
  DS_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, ctx_->device));
  DS_CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
  uint64_t zero = 0;  // "reset to the current value"
  DS_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &zero));
}

Tensor CudaBackend::empty(std::vector<int64_t> shape) {
  return allocate(std::move(shape), DType::kBF16);
}

Tensor CudaBackend::empty_f32(std::vector<int64_t> shape) {
  return allocate(std::move(shape), DType::kF32);
}

Tensor CudaBackend::empty_i32(std::vector<int64_t> shape) {
  return allocate(std::move(shape), DType::kI32);
}

Tensor CudaBackend::empty_host(std::vector<int64_t> shape) {
  Tensor t;
  t.shape = std::move(shape);
  t.dtype = DType::kBF16;
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(t.numel(), 1)) * dtype_size(t.dtype);
  void* p = nullptr;
  DS_CUDA_CHECK(cudaMallocHost(&p, bytes));
  std::shared_ptr<cuda::CudaContext> ctx = ctx_;
  t.storage = std::shared_ptr<void>(p, [ctx](void* q) {
    // Copies into or out of the pool may still be queued.
    (void)cudaStreamSynchronize(ctx->stream);
    const cudaError_t status = cudaFreeHost(q);
    if (status != cudaSuccess) std::fprintf(stderr, "deepserve: cudaFreeHost: %s\n", cudaGetErrorString(status));
  });
  t.data = p;
  return t;
}

void CudaBackend::copy_blocks(const Tensor& from, Tensor& to, std::span<const BlockMove> moves, int32_t block_size) {
  DS_CHECK(from.cols() == to.cols() && from.dtype == to.dtype, "copy_blocks between [{} x {}] and [{} x {}] caches",
           dtype_name(from.dtype), from.cols(), dtype_name(to.dtype), to.cols());
  const size_t block_bytes = static_cast<size_t>(int64_t{block_size} * from.cols()) * dtype_size(from.dtype);
  for (const BlockMove& m : moves) {
    DS_CHECK(m.src >= 0 && (m.src + 1) * int64_t{block_size} <= from.rows() && m.dst >= 0 &&
                 (m.dst + 1) * int64_t{block_size} <= to.rows(),
             "block move {} -> {} out of range", m.src, m.dst);
    // Unified addressing: pinned host and device pointers both work with cudaMemcpyDefault.
    DS_CUDA_CHECK(cudaMemcpyAsync(static_cast<std::byte*>(to.data) + m.dst * block_bytes,
                                  static_cast<const std::byte*>(from.data) + m.src * block_bytes, block_bytes,
                                  cudaMemcpyDefault, ctx_->stream));
  }
  ctx_->after_op("copy_blocks");
}

void CudaBackend::fill_zero(Tensor& t) {
  DS_CUDA_CHECK(
      cudaMemsetAsync(t.data, 0, static_cast<size_t>(t.numel()) * dtype_size(t.dtype), ctx_->stream));
  ctx_->after_op("fill_zero");
}

void CudaBackend::copy_to_host(const Tensor& t, std::span<float> out) {
  DS_CHECK(static_cast<int64_t>(out.size()) == t.numel(), "copy of {} elements into {}", t.numel(),
           out.size());
  if (t.dtype == DType::kF32) {
    DS_CUDA_CHECK(
        cudaMemcpyAsync(out.data(), t.data, out.size_bytes(), cudaMemcpyDeviceToHost, ctx_->stream));
    synchronize();
    return;
  }
  std::vector<std::byte> raw(out.size() * dtype_size(t.dtype));
  DS_CUDA_CHECK(cudaMemcpyAsync(raw.data(), t.data, raw.size(), cudaMemcpyDeviceToHost, ctx_->stream));
  synchronize();
  convert_to_f32(t.dtype, raw.data(), out.data(), out.size());
}

void CudaBackend::copy_from_host(std::span<const float> in, Tensor& t) {
  DS_CHECK(static_cast<int64_t>(in.size()) == t.numel(), "copy of {} elements into {}", in.size(), t.numel());
  if (t.dtype == DType::kF32) {
    DS_CUDA_CHECK(cudaMemcpyAsync(t.data, in.data(), in.size_bytes(), cudaMemcpyHostToDevice, ctx_->stream));
  } else if (t.dtype == DType::kI32) {
    std::vector<int32_t> ints(in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      DS_CHECK(in[i] == std::trunc(in[i]) && std::abs(in[i]) < 16777216.0f, "{} is not an int32 value", in[i]);
      ints[i] = static_cast<int32_t>(in[i]);
    }
    DS_CUDA_CHECK(
        cudaMemcpyAsync(t.data, ints.data(), ints.size() * 4, cudaMemcpyHostToDevice, ctx_->stream));
    synchronize();  // before `ints` goes
    return;
  } else {
    DS_CHECK(t.dtype == DType::kBF16, "copy_from_host into {}", dtype_name(t.dtype));
    std::vector<uint16_t> bits(in.size());
    for (size_t i = 0; i < in.size(); ++i) bits[i] = f32_to_bf16(in[i]);
    DS_CUDA_CHECK(
        cudaMemcpyAsync(t.data, bits.data(), bits.size() * 2, cudaMemcpyHostToDevice, ctx_->stream));
  }
  synchronize();
}

void CudaBackend::embedding(const Weight& table, std::span<const int32_t> ids, Tensor& out) {
  DS_CHECK(out.rows() == static_cast<int64_t>(ids.size()) && out.cols() == table.cols, "embedding out shape");
  for (int32_t id : ids)
    DS_CHECK(id >= 0 && id < table.rows, "token id {} outside the vocabulary [0, {})", id, table.rows);
  const cuda::DeviceArray d_ids = cuda::device_array(*ctx_, ids);
  cuda::launch_embedding(device_weight(table), d_ids.as<int32_t>(), matrix(out), ctx_->stream);
  ctx_->after_op("embedding");
}

void CudaBackend::rms_norm(const Tensor& x, const Weight& weight, float eps, Tensor& out) {
  rms_norm_cols(x, 0, weight, eps, out);
}

void CudaBackend::rms_norm_cols(const Tensor& x, int64_t col_offset, const Weight& weight, float eps,
                                Tensor& out) {
  const int64_t width = weight.rows * weight.cols;
  DS_CHECK(col_offset + width <= x.cols() && out.cols() == width && out.rows() == x.rows(),
           "rms_norm shapes: x [{}, {}], offset {}, weight {}, out [{}, {}]", x.rows(), x.cols(), col_offset,
           width, out.rows(), out.cols());
  cuda::DeviceWeight w = device_weight(weight);
  w.cols = width;  // a [width] vector, whatever its stored rows/cols split
  w.rows = 1;
  cuda::launch_rms_norm(col_slice(matrix(x), col_offset, width), w, eps, matrix(out), ctx_->stream);
  ctx_->after_op("rms_norm");
}

void CudaBackend::add_rms_norm(Tensor& residual, const Tensor& branch, const Weight& weight, float eps,
                               Tensor& out) {
  const int64_t width = weight.rows * weight.cols;
  DS_CHECK(residual.rows() == branch.rows() && residual.cols() == branch.cols() && residual.cols() == width &&
               out.rows() == residual.rows() && out.cols() == width,
           "add_rms_norm shapes: residual [{}, {}], branch [{}, {}], weight {}, out [{}, {}]", residual.rows(),
           residual.cols(), branch.rows(), branch.cols(), width, out.rows(), out.cols());
  cuda::DeviceWeight w = device_weight(weight);
  w.cols = width;
  w.rows = 1;
  cuda::launch_add_rms_norm(matrix(residual), matrix(branch), w, eps, matrix(out), ctx_->stream);
  ctx_->after_op("add_rms_norm");
}

void CudaBackend::linear(const Tensor& x, const Weight& w, Tensor& out) {
  cuda::linear_into(*ctx_, matrix(x), w, matrix(out));
  ctx_->after_op("linear");
}

void CudaBackend::add(Tensor& acc, const Tensor& x) {
  DS_CHECK(acc.numel() == x.numel(), "add of {} and {} elements", acc.numel(), x.numel());
  // Both as one row: like the CPU, add goes element by element whatever the shapes' split.
  cuda::launch_add(cuda::flat(acc), cuda::flat(x), ctx_->stream);
  ctx_->after_op("add");
}

void CudaBackend::silu_mul(const Tensor& gate_up, Tensor& out) {
  const int64_t inter = out.cols();
  DS_CHECK(gate_up.cols() == 2 * inter && gate_up.rows() == out.rows(), "silu_mul shapes");
  const cuda::MatrixRef gu = matrix(gate_up);
  cuda::launch_silu_mul(col_slice(gu, 0, inter), col_slice(gu, inter, inter), matrix(out), ctx_->stream);
  ctx_->after_op("silu_mul");
}

void CudaBackend::rope(Tensor& x, std::span<const int32_t> positions, int64_t num_heads, int64_t head_dim,
                       int64_t rope_offset, const RopeParams& rope) {
  const int64_t half = static_cast<int64_t>(rope.inv_freq.size());
  DS_CHECK(x.rows() == static_cast<int64_t>(positions.size()) && x.cols() == num_heads * head_dim &&
               rope_offset + 2 * half <= head_dim,
           "rope shapes: x [{}, {}], heads {}, head_dim {}, offset {}", x.rows(), x.cols(), num_heads,
           head_dim, rope_offset);
  const cuda::DeviceArray d_pos = cuda::device_array(*ctx_, positions);
  const float* d_freq = cuda::rope_table(*ctx_, rope.inv_freq);
  cuda::launch_rope(matrix(x), d_pos.as<int32_t>(), num_heads, head_dim, rope_offset, d_freq, half,
                    rope.attention_factor, ctx_->stream);
  ctx_->after_op("rope");
}

void CudaBackend::store_kv(const Tensor& latent, const Tensor& k_rope_src, int64_t k_rope_col_offset,
                           std::span<const int64_t> slot_mapping, Tensor& kv_cache) {
  const int64_t lora = latent.cols();
  const int64_t rope = kv_cache.cols() - lora;
  DS_CHECK(latent.rows() == static_cast<int64_t>(slot_mapping.size()) && k_rope_src.rows() == latent.rows() &&
               rope >= 0 && k_rope_col_offset + rope <= k_rope_src.cols(),
           "store_kv shapes");
  for (int64_t slot : slot_mapping)
    DS_CHECK(slot >= -1 && slot < kv_cache.rows(), "KV slot {} outside the cache ({} slots)", slot,
             kv_cache.rows());
  const cuda::DeviceArray d_slots = cuda::device_array(*ctx_, slot_mapping);
  cuda::launch_store_kv(matrix(latent), col_slice(matrix(k_rope_src), k_rope_col_offset, rope),
                        d_slots.as<int64_t>(), matrix(kv_cache), ctx_->stream);
  ctx_->after_op("store_kv");
}

void CudaBackend::gather_rows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) {
  DS_CHECK(out.rows() == static_cast<int64_t>(rows.size()) && out.cols() == x.cols(), "gather_rows shapes");
  for (int32_t r : rows) DS_CHECK(r >= 0 && r < x.rows(), "row {} out of range", r);
  const cuda::DeviceArray d_rows = cuda::device_array(*ctx_, rows);
  cuda::launch_gather_rows(matrix(x), d_rows.as<int32_t>(), matrix(out), ctx_->stream);
  ctx_->after_op("gather_rows");
}

void CudaBackend::mlp(const Tensor& x, const MlpWeights& w, Tensor& out) {
  const int64_t t = x.rows(), inter = w.gate_proj.rows;
  DS_CHECK(w.up_proj.rows == inter && w.down_proj.cols == inter, "mlp {}: intermediate sizes differ",
           w.gate_proj.name());
  if (x.dtype == DType::kBF16 && x.cols() == w.gate_proj.cols) {
    // Decode-sized: gate and up with SiLU-and-mul in one streaming pass, then down.
    Tensor act = empty({t, inter});  // [T, I]
    const cuda::DeviceWeight gate = device_weight(w.gate_proj), up = device_weight(w.up_proj);
    if (cuda::stream_gemm(*ctx_, x.data, x.cols(), gate, &up, matrix(act))) {
      cuda::linear_into(*ctx_, matrix(act), w.down_proj, matrix(out));
      ctx_->after_op("mlp");
      return;
    }
  }
  Tensor gate = empty({t, inter});  // [T, I]
  Tensor up = empty({t, inter});    // [T, I]
  cuda::linear_into(*ctx_, matrix(x), w.gate_proj, matrix(gate));
  cuda::linear_into(*ctx_, matrix(x), w.up_proj, matrix(up));
  cuda::launch_silu_mul(matrix(gate), matrix(up), matrix(gate), ctx_->stream);  // in place: gate = act
  DS_CUDA_CHECK_LAUNCH();
  cuda::linear_into(*ctx_, matrix(gate), w.down_proj, matrix(out));
  ctx_->after_op("mlp");
}

}  // namespace ds
