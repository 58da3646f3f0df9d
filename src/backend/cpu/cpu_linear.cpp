// Linear layers on the CPU: weights stay in their stored dtype (bf16, fp8 + block scales) and are dequantized a
// tile of rows at a time, so an FP8 checkpoint never exists in fp32 in full.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace ds {
namespace {

constexpr int64_t kRowTile = 16;

float dot(const float* a, const float* b, int64_t n) {
  // Four partial sums: vectorizes, and keeps fp32 rounding error well below the tolerances we hold.
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

}  // namespace

void CpuBackend::linear_f32(const float* x, int64_t num_rows, int64_t ldx, const Weight& w, float* out,
                            int64_t ldo) {
  const int64_t n = w.rows, k = w.cols;
  const int64_t tiles = (n + kRowTile - 1) / kRowTile;
  pool_.parallel_for(tiles, 1, [&](int64_t tb, int64_t te) {
    std::vector<float> wt(static_cast<size_t>(kRowTile * k));
    for (int64_t tile = tb; tile < te; ++tile) {
      const int64_t r0 = tile * kRowTile, r1 = std::min(n, r0 + kRowTile);
      dequantize_rows(w, r0, r1, wt.data());
      for (int64_t t = 0; t < num_rows; ++t) {
        const float* xr = x + t * ldx;
        for (int64_t r = r0; r < r1; ++r) out[t * ldo + r] = dot(xr, wt.data() + (r - r0) * k, k);
      }
    }
  });
}

void CpuBackend::linear(const Tensor& x, const Weight& w, Tensor& out) {
  DS_CHECK(x.cols() == w.cols && out.cols() == w.rows && out.rows() == x.rows(),
           "linear {}: x [{}, {}] @ w [{}, {}]^T -> out [{}, {}]", w.name(), x.rows(), x.cols(), w.rows, w.cols,
           out.rows(), out.cols());
  linear_f32(x.f32(), x.rows(), x.cols(), w, out.f32(), out.cols());
}

void CpuBackend::mlp(const Tensor& x, const MlpWeights& w, Tensor& out) {
  const int64_t t = x.rows(), inter = w.gate_proj.rows;
  Tensor gate_up = empty({t, 2 * inter});  // [T, 2I]: gate | up
  linear_f32(x.f32(), t, x.cols(), w.gate_proj, gate_up.f32(), 2 * inter);
  linear_f32(x.f32(), t, x.cols(), w.up_proj, gate_up.f32() + inter, 2 * inter);
  Tensor act = empty({t, inter});
  silu_mul(gate_up, act);
  linear(act, w.down_proj, out);
}

}  // namespace ds
