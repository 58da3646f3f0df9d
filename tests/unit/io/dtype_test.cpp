#include "io/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace ds {
namespace {

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

TEST(DType, SizesAndSafetensorsNames) {
  EXPECT_EQ(dtype_size(DType::kF32), 4u);
  EXPECT_EQ(dtype_size(DType::kF16), 2u);
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF8E4M3), 1u);
  EXPECT_EQ(dtype_name(DType::kF8E4M3), "F8_E4M3");
  EXPECT_EQ(parse_safetensors_dtype("F32"), DType::kF32);
  EXPECT_EQ(parse_safetensors_dtype("F16"), DType::kF16);
  EXPECT_EQ(parse_safetensors_dtype("BF16"), DType::kBF16);
  EXPECT_EQ(parse_safetensors_dtype("F8_E4M3"), DType::kF8E4M3);
  EXPECT_EQ(parse_safetensors_dtype("F8_E5M2"), std::nullopt);
  EXPECT_EQ(parse_safetensors_dtype("bf16"), std::nullopt);
  EXPECT_EQ(parse_safetensors_dtype(""), std::nullopt);
}

TEST(DType, Bf16ToF32) {
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(bf16_to_f32(0x3f00), 0.5f);
  EXPECT_EQ(bf16_to_f32(0x7f80), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(bf16_to_f32(0x7fc0)));
}

TEST(DType, F32ToBf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(-2.0f), 0xc000);
  // bf16 keeps 7 mantissa bits: next to 1.0 (0x3f80) is 1 + 2^-7 (0x3f81).
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);      // half-way, even neighbour is 0x3f80
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);  // half-way, even neighbour is 0x3f82
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3f81);  // just above half
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8) - std::ldexp(1.0f, -20)), 0x3f80);  // just below half
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(f32_to_bf16(from_bits(0x7f7fffff)), 0x7f80);  // FLT_MAX rounds up to infinity
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()), 0x7fc0);
  // A NaN whose payload sits only in the dropped bits must not turn into infinity.
  EXPECT_EQ(f32_to_bf16(from_bits(0x7f800001)), 0x7fc0);
}

TEST(DType, F16ToF32) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);               // 1365/4096
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);                      // largest finite
  EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));         // smallest normal
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));         // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x03ff), 1023 * std::ldexp(1.0f, -24));  // largest subnormal
  EXPECT_EQ(f16_to_f32(0x0000), 0.0f);
  EXPECT_TRUE(std::signbit(f16_to_f32(0x8000)));
  EXPECT_EQ(f16_to_f32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f16_to_f32(0xfc00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7e00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7c01)));
}

TEST(DType, Fp8E4M3ToF32) {
  EXPECT_EQ(fp8_e4m3_to_f32(0x38), 1.0f);    // 0.0111.000: 2^(7-7)
  EXPECT_EQ(fp8_e4m3_to_f32(0x3c), 1.5f);    // 0.0111.100
  EXPECT_EQ(fp8_e4m3_to_f32(0x40), 2.0f);    // 0.1000.000
  EXPECT_EQ(fp8_e4m3_to_f32(0xc0), -2.0f);   // sign bit
  EXPECT_EQ(fp8_e4m3_to_f32(0x77), 240.0f);  // 0.1110.111: 1.875 * 2^7
  EXPECT_EQ(fp8_e4m3_to_f32(0x78), 256.0f);  // 0.1111.000 is a number in the FN variant, not infinity
  EXPECT_EQ(fp8_e4m3_to_f32(0x7e), 448.0f);  // largest finite
  EXPECT_EQ(fp8_e4m3_to_f32(0xfe), -448.0f);
  EXPECT_EQ(fp8_e4m3_to_f32(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(fp8_e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(fp8_e4m3_to_f32(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8_e4m3_to_f32(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(fp8_e4m3_to_f32(0x80)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0xff)));
  int nans = 0;
  int infs = 0;
  for (int i = 0; i < 256; ++i) {
    const float f = fp8_e4m3_to_f32(static_cast<uint8_t>(i));
    nans += std::isnan(f) ? 1 : 0;
    infs += std::isinf(f) ? 1 : 0;
  }
  EXPECT_EQ(nans, 2);
  EXPECT_EQ(infs, 0);
}

TEST(DType, Fp8E4M3PositiveCodesIncreaseStrictly) {
  // Codes 0x00..0x7e are the non-negative numbers in increasing order, so no code is decoded out of place.
  for (int i = 1; i <= 0x7e; ++i) {
    EXPECT_LT(fp8_e4m3_to_f32(static_cast<uint8_t>(i - 1)), fp8_e4m3_to_f32(static_cast<uint8_t>(i))) << i;
    EXPECT_EQ(fp8_e4m3_to_f32(static_cast<uint8_t>(i | 0x80)), -fp8_e4m3_to_f32(static_cast<uint8_t>(i)))
        << i;
  }
}

TEST(DType, ConvertToF32EachDtype) {
  std::vector<float> out(4);

  const uint8_t fp8[] = {0x38, 0x7e, 0x01, 0xc0};
  convert_to_f32(DType::kF8E4M3, fp8, out.data(), 4);
  EXPECT_EQ(out, (std::vector<float>{1.0f, 448.0f, std::ldexp(1.0f, -9), -2.0f}));

  const uint16_t bf16[] = {0x3f80, 0xc000, 0x3f00, 0x0000};
  convert_to_f32(DType::kBF16, bf16, out.data(), 4);
  EXPECT_EQ(out, (std::vector<float>{1.0f, -2.0f, 0.5f, 0.0f}));

  const uint16_t f16[] = {0x3c00, 0x7bff, 0x0001, 0xc000};
  convert_to_f32(DType::kF16, f16, out.data(), 4);
  EXPECT_EQ(out, (std::vector<float>{1.0f, 65504.0f, std::ldexp(1.0f, -24), -2.0f}));

  // Checkpoint data need not be aligned: read f32 from an odd address.
  const float f32[] = {1.5f, -3.0f, 0.25f, 1e30f};
  std::vector<uint8_t> unaligned(sizeof f32 + 1);
  std::memcpy(unaligned.data() + 1, f32, sizeof f32);
  convert_to_f32(DType::kF32, unaligned.data() + 1, out.data(), 4);
  EXPECT_EQ(out, (std::vector<float>{1.5f, -3.0f, 0.25f, 1e30f}));

  std::vector<uint8_t> unaligned_bf16 = {0x00, 0x80, 0x3f, 0x00, 0xc0};  // 0x3f80, 0xc000 at offset 1
  convert_to_f32(DType::kBF16, unaligned_bf16.data() + 1, out.data(), 2);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);

  const uint8_t fp8_nan[] = {0x7f, 0xff};
  convert_to_f32(DType::kF8E4M3, fp8_nan, out.data(), 2);
  EXPECT_TRUE(std::isnan(out[0]));
  EXPECT_TRUE(std::isnan(out[1]));
}

}  // namespace
}  // namespace ds
