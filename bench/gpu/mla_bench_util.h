// What the MLA op benchmarks (mla_op_bench: decode, mla_prefill_bench: prefill) share: DeepSeek's MLA shapes on
// FlashMLA's page size, random inputs, and a random bf16 kv_b_proj held on the host.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/tensor.h"

namespace ds::bench {

inline constexpr int64_t kMlaLora = 512, kMlaRope = 64, kMlaNope = 128, kMlaV = 128;
inline constexpr int32_t kMlaPage = 64;

// n normal values of standard deviation `scale`: a run of 1 << 20 repeated (drawing hundreds of millions would
// dominate the run).
[[nodiscard]] std::vector<float> random_floats(size_t n, uint32_t seed, float scale);

// kv_b_proj [heads * (nope + v), lora] in bf16, random with standard deviation 1 / sqrt(lora): W_UK then W_UV
// per head. The Weight views the host bytes, so the object stays where it is made.
struct HostKvB {
  std::vector<uint16_t> bytes;
  TensorView view;
  Weight weight;
};
[[nodiscard]] std::unique_ptr<HostKvB> random_kv_b_proj(int64_t heads, uint32_t seed, std::string name);

}  // namespace ds::bench
