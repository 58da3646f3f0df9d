// Running one op on the CPU reference and on the CUDA backend with the same inputs, and comparing.
//
// Inputs are drawn at random and rounded to bf16 first, so both backends see identical values and the error
// measured is the op's own arithmetic (and the rounding of its output), not the rounding of its inputs.
// Errors are normalized: ||gpu - cpu|| / ||cpu|| over all elements; NaN anywhere fails.
// Outputs on the GPU are poisoned with NaN before the op, so an element the op forgot to write fails too.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "io/dtype.h"

namespace ds::testing {

// Tolerances, as normalized L2 error against the fp32 CPU reference.
// An output rounded once to bf16 carries at most 2^-9 relative error per element (about 1.1e-3 as an RMS).
constexpr double kExact = 0.0;     // copies: embedding, gather, store_kv
constexpr double kF32Tol = 2e-5;   // fp32 output from the same (bf16-valued) operands: summation order only
constexpr double kBf16Tol = 4e-3;  // one rounding of the output to bf16
constexpr double kFp8WeightTol = 6e-3;  // + the FP8 weight (fp8 * scale) rounded to bf16 for the GEMM
constexpr double kChainTol = 1e-2;      // ops that round intermediates to bf16 too (mlp, moe_experts)

inline float round_bf16(float v) {
  return bf16_to_f32(f32_to_bf16(v));
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  // n normal values with the given stddev, rounded to bf16.
  std::vector<float> normal(int64_t n, float stddev = 1.0f) {
    std::normal_distribution<float> d(0.0f, stddev);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = round_bf16(d(gen_));
    return v;
  }
  int32_t uniform_int(int32_t lo, int32_t hi) { return std::uniform_int_distribution<int32_t>(lo, hi)(gen_); }
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(gen_); }
  std::mt19937_64& gen() { return gen_; }

 private:
  std::mt19937_64 gen_;
};

// A weight living in host memory the way a mapped checkpoint tensor does (stable address: hold it by
// pointer).
struct HostWeight {
  std::vector<std::byte> bytes, scale_bytes;
  TensorView view, scale_view;
  Weight weight;
};

// rows x cols in dtype (F32, BF16 or F8_E4M3 with 128x128 block scales), values of about `stddev`.
inline std::unique_ptr<HostWeight> make_weight(Rng& rng, int64_t rows, int64_t cols, DType dtype,
                                               float stddev = 1.0f, const std::string& name = "w") {
  auto h = std::make_unique<HostWeight>();
  const size_t n = static_cast<size_t>(rows * cols);
  h->bytes.resize(n * dtype_size(dtype));
  if (dtype == DType::kF8E4M3) {
    // e4m3 with exponent field 4..10: magnitudes 2^-3..2^3 times 1.m, both signs, never NaN.
    auto* b = reinterpret_cast<uint8_t*>(h->bytes.data());
    for (size_t i = 0; i < n; ++i)
      b[i] = static_cast<uint8_t>((rng.uniform_int(0, 1) << 7) | (rng.uniform_int(4, 10) << 3) |
                                  rng.uniform_int(0, 7));
    const int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
    std::vector<float> scales(static_cast<size_t>(sr * sc));
    for (auto& s : scales) s = stddev * rng.uniform(0.05f, 0.3f);
    h->scale_bytes.resize(scales.size() * sizeof(float));
    std::memcpy(h->scale_bytes.data(), scales.data(), h->scale_bytes.size());
    h->scale_view = TensorView{name + "_scale_inv",   DType::kF32,           {sr, sc},
                               h->scale_bytes.data(), h->scale_bytes.size(), "test"};
  } else {
    const std::vector<float> v = rng.normal(static_cast<int64_t>(n), stddev);
    for (size_t i = 0; i < n; ++i) {
      if (dtype == DType::kF32) {
        std::memcpy(h->bytes.data() + i * 4, &v[i], 4);
      } else {
        const uint16_t bits = f32_to_bf16(v[i]);
        std::memcpy(h->bytes.data() + i * 2, &bits, 2);
      }
    }
  }
  h->view = TensorView{name, dtype, {rows, cols}, h->bytes.data(), h->bytes.size(), "test"};
  h->weight = Weight{&h->view,
                     dtype == DType::kF8E4M3 ? &h->scale_view : nullptr,
                     rows,
                     cols,
                     dtype == DType::kF8E4M3 ? 128 : 0,
                     dtype == DType::kF8E4M3 ? 128 : 0};
  return h;
}

// A norm weight [n] (rows == 1), bf16, around 1.
inline std::unique_ptr<HostWeight> make_norm_weight(Rng& rng, int64_t n) {
  auto h = make_weight(rng, 1, n, DType::kBF16, 0.2f, "norm");
  auto* bits = reinterpret_cast<uint16_t*>(h->bytes.data());
  for (int64_t i = 0; i < n; ++i) bits[i] = f32_to_bf16(1.0f + bf16_to_f32(bits[i]));
  h->view.shape = {n};
  return h;
}

// The pair of backends under test. A fresh CudaBackend per test: weight uploads are keyed by TensorView
// address.
class OpTest : public ::testing::Test {
 protected:
  // FP8 weights expanded to bf16 (HF numerics); the FP8 GEMM path has its own test, fp8_gemm_test.cpp.
  OpTest() : OpTest(CudaBackendOptions{.device = 0, .sync_each_op = true, .fp8_gemm = false}) {}
  explicit OpTest(const CudaBackendOptions& options) : gpu_{options} {}

  CpuBackend cpu_{0};
  CudaBackend gpu_;

  // The same values on both backends; `f32` picks empty_f32 on the GPU (the CPU is always f32).
  std::pair<Tensor, Tensor> pair(const std::vector<int64_t>& shape, const std::vector<float>& values,
                                 bool f32 = false) {
    Tensor c = cpu_.empty(shape);
    cpu_.copy_from_host(values, c);
    Tensor g = f32 ? gpu_.empty_f32(shape) : gpu_.empty(shape);
    gpu_.copy_from_host(values, g);
    return {std::move(c), std::move(g)};
  }
  // Outputs: CPU uninitialized, GPU filled with NaN.
  std::pair<Tensor, Tensor> outputs(const std::vector<int64_t>& shape, bool f32 = false) {
    Tensor c = cpu_.empty(shape);
    Tensor g = f32 ? gpu_.empty_f32(shape) : gpu_.empty(shape);
    std::vector<float> nan(static_cast<size_t>(g.numel()), std::nanf(""));
    gpu_.copy_from_host(nan, g);
    return {std::move(c), std::move(g)};
  }
  std::vector<float> host(Backend& b, const Tensor& t) {
    std::vector<float> v(static_cast<size_t>(t.numel()));
    b.copy_to_host(t, v);
    return v;
  }
  // ||gpu - cpu|| / ||cpu||; infinity if any GPU value is NaN or Inf. Also kept for the test's summary line.
  double error(const Tensor& cpu, const Tensor& gpu) {
    const std::vector<float> c = host(cpu_, cpu), g = host(gpu_, gpu);
    EXPECT_EQ(c.size(), g.size());
    double diff = 0, norm = 0, e = 0;
    for (size_t i = 0; i < c.size() && std::isfinite(e); ++i) {
      if (!std::isfinite(g[i])) e = INFINITY;
      diff += (double(g[i]) - c[i]) * (double(g[i]) - c[i]);
      norm += double(c[i]) * c[i];
    }
    if (std::isfinite(e)) e = norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
    double& worst = gpu.dtype == DType::kF32 ? worst_f32_ : worst_bf16_;
    worst = std::max(worst, e);
    return e;
  }
  // One line per test with the worst normalized error seen, by the GPU output's dtype.
  void TearDown() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::printf("SUMMARY op %s.%s: worst normalized error, F32 outputs %.1e, BF16 outputs %.1e\n",
                info->test_suite_name(), info->name(), worst_f32_, worst_bf16_);
  }
  double worst_f32_ = 0, worst_bf16_ = 0;
  void prepare(HostWeight& w) { gpu_.prepare_weight(w.weight); }
};

}  // namespace ds::testing
