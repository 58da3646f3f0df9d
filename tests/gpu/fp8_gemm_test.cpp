// The block-scaled FP8 GEMM (cuBLASLt, 128x128 weight scales, 1x128 activation scales) and the activation
// quantizer in front of it, against host arithmetic.
//
// Accuracy: quantizing an activation to e4m3 moves it by at most 2^-4 of its magnitude (3 mantissa bits;
// 2^-10 of the group's scale for the smallest values). Over a dot product of independent errors that is a
// normalized output error of about 2-3% against the bf16 GEMM HF runs: kFp8ActTol below. Given the quantized
// activations themselves, the GEMM should be exact up to summation order, but Hopper's FP8 tensor cores
// accumulate with fewer bits than fp32 (DeepSeek-V3 report, section 3.3.2): measured 1.7e-4 on an H200, held
// to kExactGivenQuantized.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "backend/cuda/cuda_context.h"
#include "backend/cuda/cuda_gemm.h"
#include "op_test_util.h"

namespace ds::testing {
namespace {

constexpr double kExactGivenQuantized = 1e-3;
constexpr double kFp8ActTol = 4e-2;

template <class T>
struct Device {
  explicit Device(size_t n) { EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess); }
  ~Device() { cudaFree(p); }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  void put(const std::vector<T>& v) {
    ASSERT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<T> get(size_t n) const {
    std::vector<T> v(n);
    EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
  T* p = nullptr;
};

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = f32_to_bf16(v[i]);
  return b;
}

double normalized(const std::vector<double>& got, const std::vector<double>& ref) {
  double d = 0, n = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    d += (got[i] - ref[i]) * (got[i] - ref[i]);
    n += ref[i] * ref[i];
  }
  return std::sqrt(d / n);
}

// x [t, k]: normal values, each 128-column group scaled by its own power of two (so a scale read from the
// wrong group shows), one group all zero.
std::vector<float> activations(Rng& rng, int64_t t, int64_t k) {
  std::vector<float> x = rng.normal(t * k);
  for (int64_t r = 0; r < t; ++r)
    for (int64_t c = 0; c < k; ++c) {
      const int64_t g = c / 128;
      x[r * k + c] = round_bf16(x[r * k + c] * std::ldexp(1.0f, static_cast<int>((r + 3 * g) % 7) - 3));
      if (r == 0 && g == 1) x[r * k + c] = 0.0f;
    }
  return x;
}

TEST(Fp8Quantize, EveryValueWithinE4m3RoundingOfItsGroupScale) {
  Rng rng(21);
  cuda::CudaContext ctx(0, true);
  const int64_t t = 5, k = 384, groups = k / 128;
  const std::vector<float> x = activations(rng, t, k);
  Device<uint16_t> xd(x.size());
  xd.put(to_bf16(x));
  for (bool row_contiguous : {true, false}) {
    Device<uint8_t> q(x.size());
    Device<float> s(static_cast<size_t>(t * groups));
    cuda::launch_quantize_fp8_1x128(cuda::MatrixRef{xd.p, DType::kBF16, t, k, k}, q.p, s.p, row_contiguous, t,
                                    ctx.stream);
    ASSERT_EQ(cudaStreamSynchronize(ctx.stream), cudaSuccess);
    const auto qh = q.get(x.size());
    const auto sh = s.get(static_cast<size_t>(t * groups));
    for (int64_t r = 0; r < t; ++r)
      for (int64_t g = 0; g < groups; ++g) {
        const float scale = sh[row_contiguous ? g * t + r : r * groups + g];
        float amax = 0;
        for (int64_t c = g * 128; c < (g + 1) * 128; ++c) amax = std::max(amax, std::fabs(x[r * k + c]));
        EXPECT_NEAR(scale, amax > 0 ? amax / 448.0f : 1.0f, 1e-6 * scale) << r << "," << g;
        for (int64_t c = g * 128; c < (g + 1) * 128; ++c) {
          const float back = fp8_e4m3_to_f32(qh[r * k + c]) * scale;
          const float v = x[r * k + c];
          EXPECT_LE(std::fabs(back - v), std::max(std::ldexp(std::fabs(v), -4), std::ldexp(scale, -10)) * 1.0001f)
              << "row " << r << " col " << c << ": " << v << " -> " << back;
        }
      }
  }
}

// Which layout of each scale tensor cuBLASLt reads, found by running every combination against the host GEMM
// of the same quantized values: activation scales row-contiguous or group-contiguous, weight scales as the
// checkpoint stores them or transposed. The one cuda_gemm.h names must be exact; the others are printed.
TEST(Fp8Gemm, ScaleLayoutsMatchTheHostGemmOfTheSameQuantizedValues) {
  Rng rng(22);
  cuda::CudaContext ctx(0, true);
  struct Shape {
    int64_t t, n, k;
  };
  for (const Shape sh : {Shape{48, 512, 512}, Shape{64, 256, 1024}, Shape{16, 1536, 7168}}) {
    const int64_t t = sh.t, n = sh.n, k = sh.k, groups = k / 128, nb = (n + 127) / 128;
    auto w = make_weight(rng, n, k, DType::kF8E4M3, 1.0f / std::sqrt(static_cast<float>(k)));
    // Weight scales that differ by powers of two from block to block.
    auto* ws = reinterpret_cast<float*>(w->scale_bytes.data());
    for (int64_t i = 0; i < nb * groups; ++i) ws[i] *= std::ldexp(1.0f, static_cast<int>(i % 5) - 2);
    std::vector<float> ws_t(static_cast<size_t>(nb * groups));
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t g = 0; g < groups; ++g) ws_t[g * nb + b] = ws[b * groups + g];
    const std::vector<float> x = activations(rng, t, k);

    Device<uint16_t> xd(x.size());
    xd.put(to_bf16(x));
    Device<uint8_t> wq(static_cast<size_t>(n * k));
    wq.put(std::vector<uint8_t>(reinterpret_cast<uint8_t*>(w->bytes.data()),
                                reinterpret_cast<uint8_t*>(w->bytes.data()) + n * k));
    Device<float> ws_as_stored(ws_t.size()), ws_transposed(ws_t.size());
    ws_as_stored.put(std::vector<float>(ws, ws + nb * groups));
    ws_transposed.put(ws_t);
    Device<float> out(static_cast<size_t>(t * n));
    const cuda::MatrixRef out_ref{out.p, DType::kF32, t, n, n};

    for (bool row_contiguous : {true, false}) {
      Device<uint8_t> q(x.size());
      Device<float> s(static_cast<size_t>(t * groups));
      cuda::launch_quantize_fp8_1x128(cuda::MatrixRef{xd.p, DType::kBF16, t, k, k}, q.p, s.p, row_contiguous, t,
                                      ctx.stream);
      ASSERT_EQ(cudaStreamSynchronize(ctx.stream), cudaSuccess);
      const auto qh = q.get(x.size());
      const auto sh_host = s.get(static_cast<size_t>(t * groups));
      // The host GEMM of the dequantized operands, in double.
      std::vector<double> ref(static_cast<size_t>(t * n), 0.0);
      std::vector<double> xdeq(static_cast<size_t>(t * k));
      for (int64_t r = 0; r < t; ++r)
        for (int64_t c = 0; c < k; ++c)
          xdeq[r * k + c] = double(fp8_e4m3_to_f32(qh[r * k + c])) *
                            sh_host[row_contiguous ? (c / 128) * t + r : r * groups + c / 128];
      std::vector<double> wdeq(static_cast<size_t>(n * k));
      const auto* wb = reinterpret_cast<const uint8_t*>(w->bytes.data());
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < k; ++c)
          wdeq[r * k + c] = double(fp8_e4m3_to_f32(wb[r * k + c])) * ws[(r / 128) * groups + c / 128];
      std::vector<double> exact(static_cast<size_t>(t * n), 0.0);
      for (int64_t r = 0; r < t; ++r)
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0, acc_x = 0;
          for (int64_t c = 0; c < k; ++c) {
            acc += xdeq[r * k + c] * wdeq[j * k + c];
            acc_x += double(x[r * k + c]) * wdeq[j * k + c];
          }
          ref[r * n + j] = acc;
          exact[r * n + j] = acc_x;
        }
      for (bool transposed : {false, true}) {
        ASSERT_EQ(cudaMemset(out.p, 0xff, static_cast<size_t>(t * n) * sizeof(float)), cudaSuccess);  // NaN
        const bool ran = cuda::gemm_fp8_block_scaled(ctx, q.p, s.p, wq.p,
                                                     transposed ? ws_transposed.p : ws_as_stored.p, k, out_ref);
        ASSERT_EQ(cudaStreamSynchronize(ctx.stream), cudaSuccess);
        ASSERT_TRUE(ran) << "cuBLASLt has no block-scaled FP8 algorithm for [" << t << ", " << k << "] @ [" << n
                         << ", " << k << "]^T";
        const auto got_f = out.get(static_cast<size_t>(t * n));
        const std::vector<double> got(got_f.begin(), got_f.end());
        const double e = normalized(got, ref), e_unquantized = normalized(got, exact);
        const bool production = row_contiguous == cuda::kFp8ActScalesRowContiguous && !transposed;
        std::printf(
            "FP8 GEMM [%lld, %lld] @ [%lld, %lld]^T, act scales %s, weight scales %s: error vs same quantized "
            "values %.2e, vs unquantized activations %.2e%s\n",
            (long long)t, (long long)k, (long long)n, (long long)k, row_contiguous ? "row-contiguous" : "group-contiguous",
            transposed ? "transposed" : "as stored", e, e_unquantized, production ? " (the layout we use)" : "");
        if (production) {
          EXPECT_LT(e, kExactGivenQuantized);
          EXPECT_LT(e_unquantized, kFp8ActTol);
        }
      }
    }
  }
}

// Through the backend: CudaBackend::linear with FP8 weights takes the FP8 path when K and N are multiples of
// 256 (any row count: decode's few rows are padded to 16) and stays within kFp8ActTol of the CPU reference
// (which dequantizes the weight exactly); elsewhere, and with fp8_gemm = false, the bf16 path's accuracy.
TEST(Fp8Gemm, BackendLinearWithAndWithoutTheFp8Path) {
  Rng rng(23);
  CpuBackend cpu(0);
  for (bool fp8 : {true, false}) {
    CudaBackend gpu(CudaBackendOptions{.device = 0, .sync_each_op = true, .fp8_gemm = fp8});
    for (const auto& [t, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 1536, 7168}, {9, 384, 128},
                                  {80, 2048, 512}, {5, 576, 256}, {5, 256, 192}, {3, 3072, 1536}, {40, 256, 384},
                                  {17, 7168, 2048}, {130, 1536, 7168}}) {
      auto w = make_weight(rng, n, k, DType::kF8E4M3, 1.0f / std::sqrt(static_cast<float>(k)));
      gpu.prepare_weight(w->weight);
      const auto x = rng.normal(t * k);
      Tensor xc = cpu.empty({t, k}), xg = gpu.empty({t, k});
      cpu.copy_from_host(x, xc);
      gpu.copy_from_host(x, xg);
      Tensor c = cpu.empty({t, n}), g = gpu.empty_f32({t, n});
      cpu.linear(xc, w->weight, c);
      gpu.linear(xg, w->weight, g);
      std::vector<float> ch(static_cast<size_t>(t * n)), gh(ch.size());
      cpu.copy_to_host(c, ch);
      gpu.copy_to_host(g, gh);
      const double e = normalized(std::vector<double>(gh.begin(), gh.end()), std::vector<double>(ch.begin(), ch.end()));
      const bool fp8_path = fp8 && k % 256 == 0 && n % 256 == 0;
      std::printf("linear [%lld, %lld] @ FP8 [%lld, %lld]^T, %s: normalized error vs CPU %.2e\n", (long long)t,
                  (long long)k, (long long)n, (long long)k, fp8_path ? "FP8 GEMM" : "bf16 GEMM", e);
      EXPECT_LT(e, fp8_path ? kFp8ActTol : kBf16Tol);
    }
  }
}

}  // namespace
}  // namespace ds::testing
