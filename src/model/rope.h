// Rotary frequencies of DeepSeek's rope part, with YaRN (arXiv:2309.00071) when config.json asks for it.
#pragma once

#include "backend/backend.h"
#include "model/config.h"

namespace ds {

// inv_freq[i] for i < qk_rope_head_dim / 2 and the cos/sin scale (YaRN's mscale ratio), computed in fp32 the
// way HF transformers' `_compute_yarn_parameters` does (truncated correction range, linear ramp).
[[nodiscard]] RopeParams make_rope_params(const ModelConfig& config);

}  // namespace ds
