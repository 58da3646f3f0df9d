#include "io/dtype.h"

#include <array>
#include <cmath>
#include <limits>

#include "util/check.h"

namespace ds {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kF8E4M3:
      return 1;
  }
  DS_CHECK(false, "unknown DType {}", static_cast<int>(dtype));
  return 0;
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kF8E4M3:
      return "F8_E4M3";
    case DType::kI32:
      return "I32";
  }
  DS_CHECK(false, "unknown DType {}", static_cast<int>(dtype));
  return {};
}

std::optional<DType> parse_safetensors_dtype(std::string_view name) {
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3}) {
    if (dtype_name(dtype) == name) return dtype;
  }
  return std::nullopt;
}

uint16_t f32_to_bf16(float value) {
  // torch returns the canonical quiet NaN, whatever the payload and sign.
  if (std::isnan(value)) return 0x7fc0;
  uint32_t u;
  std::memcpy(&u, &value, sizeof u);
  // Adding 0x7fff plus the lowest kept bit rounds half-way cases towards the even result; a carry out of
  // the mantissa bumps the exponent, which is the correct rounding (up to infinity past bf16's max).
  const uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t bits) {
  const float sign = (bits & 0x8000u) ? -1.0f : 1.0f;
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  if (exponent == 0x1f) {
    return mantissa == 0 ? sign * std::numeric_limits<float>::infinity()
                         : std::copysign(std::numeric_limits<float>::quiet_NaN(), sign);
  }
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -24);  // subnormal: m * 2^-24
  return sign * std::ldexp(static_cast<float>(mantissa + 1024), exponent - 25);    // (1 + m/2^10) * 2^(e-15)
}

float fp8_e4m3_to_f32(uint8_t bits) {
  const float sign = (bits & 0x80u) ? -1.0f : 1.0f;
  const int exponent = (bits >> 3) & 0xf;
  const int mantissa = bits & 0x7;
  // The FN variant spends no codes on infinity: only S.1111.111 is NaN, so S.1111.110 = 448 is the max.
  if (exponent == 0xf && mantissa == 0x7) return std::copysign(std::numeric_limits<float>::quiet_NaN(), sign);
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -9);  // subnormal: m * 2^-9
  return sign * std::ldexp(static_cast<float>(mantissa + 8), exponent - 10);      // (1 + m/8) * 2^(e-7)
}

namespace {

const std::array<float, 256>& fp8_e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[static_cast<size_t>(i)] = fp8_e4m3_to_f32(static_cast<uint8_t>(i));
    return t;
  }();
  return table;
}

// Checkpoint data sits at arbitrary byte offsets in the mapping, so elements are loaded with memcpy.
template <typename T>
T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

void convert_to_f32(DType dtype, const void* src, float* dst, size_t n) {
  const auto* in = static_cast<const std::byte*>(src);
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, in, n * sizeof(float));
      return;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load<uint16_t>(in + 2 * i));
      return;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load<uint16_t>(in + 2 * i));
      return;
    case DType::kF8E4M3: {
      const auto& table = fp8_e4m3_table();
      for (size_t i = 0; i < n; ++i) dst[i] = table[static_cast<uint8_t>(in[i])];
      return;
    }
    case DType::kI32:
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load<int32_t>(in + 4 * i));
      return;
  }
  DS_CHECK(false, "unknown DType {}", static_cast<int>(dtype));
}

}  // namespace ds
