#include "gpu/moe_op_bench.h"

#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <vector>

#include "gpu/event_timing.h"
#include "io/dtype.h"
#include "io/safetensors.h"
#include "util/check.h"

namespace ds::bench {
namespace {

// Device allocations of one bench section, freed when it ends.
class DeviceArena {
 public:
  DeviceArena() = default;
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;
  ~DeviceArena() {
    for (void* p : ptrs_) cudaFree(p);
  }
  void* alloc(size_t bytes) {
    void* p = nullptr;
    check_cuda(cudaMalloc(&p, bytes), "cudaMalloc");
    ptrs_.push_back(p);
    return p;
  }

 private:
  std::vector<void*> ptrs_;
};

// A weight in device memory as Backend::prepare_weight leaves it (bytes as stored, fp32 block scales), with
// the views that name it; held by pointer (Weight points at the views).
struct BenchWeight {
  TensorView view, scale_view;
  Weight weight;
};

// Random weight bytes [rows, cols]: bf16 of stddev 1/sqrt(cols), or e4m3 of magnitude 2^-3..2^3 (never NaN).
std::vector<uint8_t> random_bytes(int64_t rows, int64_t cols, DType dtype, uint32_t seed) {
  std::mt19937 rng(seed);
  const auto n = static_cast<size_t>(rows * cols);
  std::vector<uint8_t> bytes(n * dtype_size(dtype));
  if (dtype == DType::kF8E4M3) {
    std::uniform_int_distribution<int> sign(0, 1), exponent(4, 10), mantissa(0, 7);
    for (auto& b : bytes) b = static_cast<uint8_t>((sign(rng) << 7) | (exponent(rng) << 3) | mantissa(rng));
  } else {
    std::normal_distribution<float> d(0.0f, 1.0f / std::sqrt(static_cast<float>(cols)));
    for (size_t i = 0; i < n; ++i) {
      const uint16_t bits = f32_to_bf16(d(rng));
      std::memcpy(bytes.data() + 2 * i, &bits, 2);
    }
  }
  return bytes;
}

// `count` weights [rows, cols], each in its own device memory (so that none is served from another's L2
// lines): two distinct random ones uploaded, the rest device-to-device copies of them. FP8 weights share one
// array of block scales of about 1 / (2 sqrt(cols)).
std::vector<std::unique_ptr<BenchWeight>> make_weights(DeviceArena& arena, int64_t rows, int64_t cols,
                                                       DType dtype, int64_t count, const std::string& name,
                                                       uint32_t seed) {
  const bool fp8 = dtype == DType::kF8E4M3;
  const size_t bytes = static_cast<size_t>(rows * cols) * dtype_size(dtype);
  const float* scales = nullptr;
  const int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
  if (fp8) {
    const std::vector<float> host(static_cast<size_t>(sr * sc), 0.5f / std::sqrt(static_cast<float>(cols)));
    auto* d = static_cast<float*>(arena.alloc(host.size() * sizeof(float)));
    check_cuda(cudaMemcpy(d, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice),
               "upload scales");
    scales = d;
  }
  std::vector<std::unique_ptr<BenchWeight>> out;
  for (int64_t i = 0; i < count; ++i) {
    void* data = arena.alloc(bytes);
    if (i < 2) {
      const std::vector<uint8_t> host = random_bytes(rows, cols, dtype, seed + static_cast<uint32_t>(i));
      check_cuda(cudaMemcpy(data, host.data(), bytes, cudaMemcpyHostToDevice), "upload weight");
    } else {
      check_cuda(cudaMemcpy(data, out[static_cast<size_t>(i % 2)]->weight.device_data, bytes,
                            cudaMemcpyDeviceToDevice),
                 "copy weight");
    }
    auto w = std::make_unique<BenchWeight>();
    w->view = TensorView{fmt::format("bench.{}.{}", name, i), dtype, {rows, cols}, nullptr, bytes, "bench"};
    w->scale_view = TensorView{w->view.name + "_scale_inv", DType::kF32, {sr, sc}, nullptr, 0, "bench"};
    w->weight.tensor = &w->view;
    w->weight.scale_inv = fp8 ? &w->scale_view : nullptr;
    w->weight.rows = rows;
    w->weight.cols = cols;
    w->weight.block_rows = fp8 ? 128 : 0;
    w->weight.block_cols = fp8 ? 128 : 0;
    w->weight.device_data = data;
    w->weight.device_scale_inv = scales;
    out.push_back(std::move(w));
  }
  return out;
}

double weight_bytes(int64_t rows, int64_t cols, DType dtype) {
  const double scales = dtype == DType::kF8E4M3 ? 4.0 * ((rows + 127) / 128) * ((cols + 127) / 128) : 0.0;
  return static_cast<double>(rows * cols) * static_cast<double>(dtype_size(dtype)) + scales;
}

std::vector<float> random_floats(int64_t n, uint32_t seed, float stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

// The device time of op() alone: see the header.
class OpTimer {
 public:
  OpTimer(DeviceArena& arena, int warmup, int iters) : warmup_(warmup), iters_(iters) {
    flush_ = arena.alloc(kFlushBytes);
  }
  Timing time(CudaBackend& backend, const std::function<void()>& op) {
    const auto stream = static_cast<cudaStream_t>(backend.stream_handle());
    for (int i = 0; i < warmup_; ++i) op();
    std::vector<cudaEvent_t> start(static_cast<size_t>(iters_)), stop(start.size());
    for (size_t i = 0; i < start.size(); ++i) {
      check_cuda(cudaEventCreate(&start[i]), "cudaEventCreate");
      check_cuda(cudaEventCreate(&stop[i]), "cudaEventCreate");
      check_cuda(cudaMemsetAsync(flush_, static_cast<int>(i), kFlushBytes, stream), "cudaMemsetAsync");
      check_cuda(cudaEventRecord(start[i], stream), "cudaEventRecord");
      op();
      check_cuda(cudaEventRecord(stop[i], stream), "cudaEventRecord");
    }
    backend.synchronize();
    std::vector<double> samples;
    for (size_t i = 0; i < start.size(); ++i) {
      float ms = 0;
      check_cuda(cudaEventElapsedTime(&ms, start[i], stop[i]), "cudaEventElapsedTime");
      samples.push_back(ms);
      check_cuda(cudaEventDestroy(start[i]), "cudaEventDestroy");
      check_cuda(cudaEventDestroy(stop[i]), "cudaEventDestroy");
    }
    return summarize(std::move(samples));
  }

 private:
  static constexpr size_t kFlushBytes = size_t{256} << 20;
  void* flush_ = nullptr;
  int warmup_ = 0, iters_ = 0;
};

double floor_ms(double bytes, double flops, const Ceilings& ceil) {
  return std::max(bytes / (ceil.copy_gbps * 1e9), flops / (ceil.gemm_tflops * 1e12)) * 1e3;
}

struct ModelShape {
  const char* label;
  DType dtype;
  int64_t hidden, inter, experts, top_k, shared_inter;
  std::vector<std::tuple<const char*, int64_t, int64_t>> linears;  // name, rows (out), cols (in)
};

const std::vector<ModelShape>& model_shapes() {
  static const std::vector<ModelShape> shapes = {
      {"V2-Lite (bf16)",
       DType::kBF16,
       2048,
       1408,
       64,
       6,
       2 * 1408,
       {{"q_proj", 16 * 192, 2048}, {"kv_a_proj_with_mqa", 576, 2048}, {"o_proj", 2048, 16 * 128}}},
      {"V3 slice (block-FP8)",
       DType::kF8E4M3,
       7168,
       2048,
       256,
       8,
       2048,
       {{"q_a_proj", 1536, 7168},
        {"q_b_proj", 128 * 192, 1536},
        {"kv_a_proj_with_mqa", 576, 7168},
        {"o_proj", 7168, 128 * 128}}},
  };
  return shapes;
}

// Backends of the comparisons; they share the device, so one weight in device memory serves them all.
struct Backends {
  CudaBackend per_call{CudaBackendOptions{.stream_gemm = StreamGemm::kOff}};
  CudaBackend tiles32{CudaBackendOptions{.moe_tile_rows = 32}};
  CudaBackend tiles64{CudaBackendOptions{.moe_tile_rows = 64}};
  CudaBackend streaming{CudaBackendOptions{.stream_gemm = StreamGemm::kAlways}};
};

std::string moe_rows(Backends& b, OpTimer& timer, const ModelShape& s, DeviceArena& arena,
                     const Ceilings& ceil) {
  const auto gate = make_weights(arena, s.inter, s.hidden, s.dtype, s.experts, "gate", 100);
  const auto up = make_weights(arena, s.inter, s.hidden, s.dtype, s.experts, "up", 200);
  const auto down = make_weights(arena, s.hidden, s.inter, s.dtype, s.experts, "down", 300);
  std::vector<MlpWeights> experts;
  for (size_t e = 0; e < gate.size(); ++e)
    experts.push_back({gate[e]->weight, up[e]->weight, down[e]->weight});
  const double expert_bytes =
      2 * weight_bytes(s.inter, s.hidden, s.dtype) + weight_bytes(s.hidden, s.inter, s.dtype);
  std::ostringstream out;
  for (const int64_t tokens : {1, 8, 256, 1024}) {
    // Distinct experts per token, uniform at random.
    std::mt19937 rng(static_cast<uint32_t>(tokens));
    std::vector<float> ids, weights;
    std::vector<int32_t> all(static_cast<size_t>(s.experts));
    std::vector<bool> touched(all.size(), false);
    std::uniform_real_distribution<float> w(0.1f, 1.0f);
    for (int64_t t = 0; t < tokens; ++t) {
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      for (int64_t k = 0; k < s.top_k; ++k) {
        ids.push_back(static_cast<float>(all[static_cast<size_t>(k)]));
        weights.push_back(w(rng));
        touched[static_cast<size_t>(all[static_cast<size_t>(k)])] = true;
      }
    }
    const auto n_touched = static_cast<double>(std::count(touched.begin(), touched.end(), true));
    const double pairs = static_cast<double>(tokens * s.top_k);
    const double bytes = n_touched * expert_bytes + static_cast<double>(tokens * s.hidden) * (2 + 4 + 4);
    const double flops = pairs * 2.0 * 3.0 * static_cast<double>(s.hidden * s.inter);
    const double fl = floor_ms(bytes, flops, ceil);
    const std::vector<float> x = random_floats(tokens * s.hidden, 7, 1.0f);
    const std::pair<const char*, CudaBackend*> variants[] = {
        {"per call", &b.per_call}, {"32-row tiles", &b.tiles32}, {"64-row tiles", &b.tiles64}};
    for (const auto& [name, backend] : variants) {
      Tensor xt = backend->empty({tokens, s.hidden}), o = backend->empty_f32({tokens, s.hidden});
      Tensor idt = backend->empty_i32({tokens, s.top_k}), wt = backend->empty_f32({tokens, s.top_k});
      backend->copy_from_host(x, xt);
      backend->copy_from_host(ids, idt);
      backend->copy_from_host(weights, wt);
      backend->fill_zero(o);
      const Timing t = timer.time(*backend, [&] { backend->moe_experts(xt, experts, idt, wt, o); });
      std::vector<float> result(static_cast<size_t>(o.numel()));
      backend->copy_to_host(o, result);
      const bool finite = std::all_of(result.begin(), result.end(), [](float v) { return std::isfinite(v); });
      out << fmt::format(
          "| {} | {} | {:.0f} | {:.0f} | {} | {:.3f} | {}–{}, {} | {:.1f} MB | {:.3f} T | {:.3f} | {:.1f}% | "
          "{:.0f} "
          "| {:.0f} |{}\n",
          s.label, tokens, pairs / s.experts, n_touched, name, t.median_ms, fmt::format("{:.3f}", t.min_ms),
          fmt::format("{:.3f}", t.max_ms), t.iters, bytes / 1e6, flops / 1e12, fl, 100.0 * fl / t.median_ms,
          bytes / (t.median_ms * 1e-3) / 1e9, flops / (t.median_ms * 1e-3) / 1e12,
          finite ? "" : " OUTPUT NOT FINITE |");
    }
  }
  return out.str();
}

std::string linear_rows(Backends& b, OpTimer& timer, const ModelShape& s, DeviceArena& arena,
                        const Ceilings& ceil) {
  std::ostringstream out;
  auto row = [&](const std::string& op, int64_t rows, double bytes, double flops, const Timing& lt,
                 const Timing& st) {
    const double fl = floor_ms(bytes, flops, ceil);
    out << fmt::format("| {} | {} | {} | {:.1f} | {:.1f} | {:.1f} | {:.1f}% | {:.1f}% | {:.2f}× |\n", s.label,
                       op, rows, lt.median_ms * 1e3, st.median_ms * 1e3, fl * 1e3, 100.0 * fl / lt.median_ms,
                       100.0 * fl / st.median_ms, lt.median_ms / st.median_ms);
  };
  for (const auto& [name, n, k] : s.linears) {
    const auto w = make_weights(arena, n, k, s.dtype, 1, name, 400);
    for (const int64_t rows : {1, 8, 64}) {
      const std::vector<float> x = random_floats(rows * k, 8, 1.0f);
      Timing times[2];
      CudaBackend* backends[2] = {&b.per_call, &b.streaming};
      for (int i = 0; i < 2; ++i) {
        CudaBackend& be = *backends[i];
        Tensor xt = be.empty({rows, k}), o = be.empty({rows, n});
        be.copy_from_host(x, xt);
        times[i] = timer.time(be, [&] { be.linear(xt, w[0]->weight, o); });
      }
      row(name, rows, weight_bytes(n, k, s.dtype) + static_cast<double>(rows * (k + n)) * 2,
          2.0 * static_cast<double>(rows * n * k), times[0], times[1]);
    }
  }
  const auto gate = make_weights(arena, s.shared_inter, s.hidden, s.dtype, 1, "shared.gate", 500);
  const auto up = make_weights(arena, s.shared_inter, s.hidden, s.dtype, 1, "shared.up", 600);
  const auto down = make_weights(arena, s.hidden, s.shared_inter, s.dtype, 1, "shared.down", 700);
  const MlpWeights mlp{gate[0]->weight, up[0]->weight, down[0]->weight};
  for (const int64_t rows : {1, 8, 64}) {
    const std::vector<float> x = random_floats(rows * s.hidden, 9, 1.0f);
    Timing times[2];
    CudaBackend* backends[2] = {&b.per_call, &b.streaming};
    for (int i = 0; i < 2; ++i) {
      CudaBackend& be = *backends[i];
      Tensor xt = be.empty({rows, s.hidden}), o = be.empty({rows, s.hidden});
      be.copy_from_host(x, xt);
      times[i] = timer.time(be, [&] { be.mlp(xt, mlp, o); });
    }
    const double wb =
        2 * weight_bytes(s.shared_inter, s.hidden, s.dtype) + weight_bytes(s.hidden, s.shared_inter, s.dtype);
    row("mlp (shared experts)", rows, wb + static_cast<double>(rows * s.hidden) * 4,
        6.0 * static_cast<double>(rows * s.hidden * s.shared_inter), times[0], times[1]);
  }
  return out.str();
}

}  // namespace

std::string bench_moe_ops(const Ceilings& ceil, int warmup, int iters) {
  Backends b;
  std::ostringstream s;
  // Each model shape's rows in a device arena of their own, freed before the next shape's.
  auto per_shape = [&](auto rows) {
    for (const ModelShape& m : model_shapes()) {
      DeviceArena arena;
      OpTimer timer(arena, warmup, iters);
      s << rows(b, timer, m, arena, ceil);
    }
  };
  s << "\n### moe_experts alone (CudaBackend::moe_experts, one layer, random weights and routing; "
       "device time per call after an L2 flush)\n\n"
    << "| model | tokens | rows per expert | experts touched | tiles | ms (median) | min–max, n | bytes | FLOPs "
       "| floor ms | of floor | GB/s | TFLOP/s |\n"
    << "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  per_shape(moe_rows);
  s << "\n### Decode linears and the shared-expert MLP: cuBLASLt against the streaming kernel "
       "(CudaBackendOptions::stream_gemm; device time per call after an L2 flush)\n\n"
    << "| model | op | rows | cuBLASLt µs | streaming µs | floor µs | cuBLASLt of floor | streaming of floor "
       "| streaming speed-up |\n"
    << "|---|---|---|---|---|---|---|---|---|\n";
  per_shape(linear_rows);
  return s.str();
}

}  // namespace ds::bench
