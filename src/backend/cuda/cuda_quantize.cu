// Activation quantization for the block-scaled FP8 GEMM: each row's 128-column groups become e4m3 values
// with one fp32 scale per group (DeepSeek-V3's 1x128 activation scheme, as its inference/model.py act_quant
// does it): s = amax / 448, q = e4m3(x / s) rounded to nearest, so x ~= q * s with at most 2^-4 relative
// error per element (3 mantissa bits), 2^-9 * s absolute for the smallest values.
#include "backend/cuda/cuda_common.cuh"

namespace ds::cuda {
namespace {

constexpr int kGroup = 128;
constexpr int kWarpsPerBlock = 8;
constexpr float kE4m3Max = 448.0f;

// One warp per (row, 128-column group): 4 consecutive elements per lane.
__global__ void quantize_fp8_1x128_kernel(MatrixRef x, uint8_t* q, float* scales, bool scales_row_contiguous,
                                          int64_t scale_rows, int64_t groups) {
  const int64_t item = int64_t{blockIdx.x} * kWarpsPerBlock + threadIdx.x / 32;
  if (item >= x.rows * groups) return;
  const int lane = threadIdx.x % 32;
  const int64_t r = item / groups, g = item % groups;
  const int64_t c0 = g * kGroup + 4 * lane;
  float v[4];
  float amax = 0.0f;
  for (int i = 0; i < 4; ++i) {
    v[i] = load_at(x, r, c0 + i);
    amax = fmaxf(amax, fabsf(v[i]));
  }
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  // An all-zero group keeps scale 1 (its values quantize to 0 whatever the scale).
  const float scale = amax > 0.0f ? amax / kE4m3Max : 1.0f;
  const float inv = 1.0f / scale;
  uint32_t packed = 0;
  for (int i = 0; i < 4; ++i) {
    const __nv_fp8_storage_t b = __nv_cvt_float_to_fp8(v[i] * inv, __NV_SATFINITE, __NV_E4M3);
    packed |= static_cast<uint32_t>(b) << (8 * i);
  }
  *reinterpret_cast<uint32_t*>(q + r * x.cols + c0) = packed;
  if (lane == 0) scales[scales_row_contiguous ? g * scale_rows + r : r * groups + g] = scale;
}

}  // namespace

void launch_quantize_fp8_1x128(MatrixRef x, void* q, float* scales, bool scales_row_contiguous,
                               int64_t scale_rows, cudaStream_t stream) {
  if (x.rows == 0 || x.cols == 0) return;
  const int64_t groups = x.cols / kGroup;
  const int64_t items = x.rows * groups;
  quantize_fp8_1x128_kernel<<<blocks_for(items, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream>>>(
      x, static_cast<uint8_t*>(q), scales, scales_row_contiguous, scale_rows, groups);
}

}  // namespace ds::cuda
