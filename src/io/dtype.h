// Storage dtypes of checkpoint tensors and their conversion to fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace ds {

// kI32 is not a checkpoint dtype (parse_safetensors_dtype refuses it): backends use it for the router's expert ids.
enum class DType : uint8_t { kF32, kF16, kBF16, kF8E4M3, kI32 };

[[nodiscard]] size_t dtype_size(DType dtype);
// The safetensors spelling: "F32", "F16", "BF16", "F8_E4M3" (and "I32").
[[nodiscard]] std::string_view dtype_name(DType dtype);
[[nodiscard]] std::optional<DType> parse_safetensors_dtype(std::string_view name);

[[nodiscard]] inline float bf16_to_f32(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest even, NaN stays NaN (as torch does).
[[nodiscard]] uint16_t f32_to_bf16(float value);
[[nodiscard]] float f16_to_f32(uint16_t bits);
// float8_e4m3fn (OCP FN variant: no infinities, 0x7f/0xff are NaN, max 448).
[[nodiscard]] float fp8_e4m3_to_f32(uint8_t bits);

// Converts n elements stored as dtype at src into fp32 at dst.
void convert_to_f32(DType dtype, const void* src, float* dst, size_t n);

}  // namespace ds
