#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace ds {
namespace {

double yarn_mscale(double factor, double mscale) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

// The rotary dimension index at which a wavelength makes num_rotations turns over the original context.
double correction_dim(double num_rotations, double dim, double base, double max_positions) {
  return dim * std::log(max_positions / (num_rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(base));
}

}  // namespace

RopeParams make_rope_params(const ModelConfig& c) {
  const int64_t dim = c.qk_rope_head_dim, half = dim / 2;
  RopeParams rope;
  rope.inv_freq.resize(static_cast<size_t>(half));
  const float base = static_cast<float>(c.rope_theta);
  std::vector<float> pos_freq(static_cast<size_t>(half)), extrapolation(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    pos_freq[static_cast<size_t>(i)] = std::pow(base, static_cast<float>(2 * i) / static_cast<float>(dim));
    extrapolation[static_cast<size_t>(i)] = 1.0f / pos_freq[static_cast<size_t>(i)];
  }
  if (!c.rope_scaling) {
    rope.inv_freq = extrapolation;
    return rope;
  }
  const YarnRopeScaling& y = *c.rope_scaling;
  const double orig = static_cast<double>(y.original_max_position_embeddings);
  double low = std::floor(correction_dim(y.beta_fast, static_cast<double>(dim), c.rope_theta, orig));
  double high = std::ceil(correction_dim(y.beta_slow, static_cast<double>(dim), c.rope_theta, orig));
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // avoid a zero-width ramp
  for (int64_t i = 0; i < half; ++i) {
    const float ramp = std::clamp(static_cast<float>((static_cast<double>(i) - low) / (high - low)), 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    const float interpolation = 1.0f / (static_cast<float>(y.factor) * pos_freq[static_cast<size_t>(i)]);
    rope.inv_freq[static_cast<size_t>(i)] = interpolation * (1.0f - extrapolation_factor) +
                                            extrapolation[static_cast<size_t>(i)] * extrapolation_factor;
  }
  if (y.mscale != 0.0 && y.mscale_all_dim != 0.0) {
    rope.attention_factor = static_cast<float>(yarn_mscale(y.factor, y.mscale) / yarn_mscale(y.factor, y.mscale_all_dim));
  } else {
    rope.attention_factor = static_cast<float>(yarn_mscale(y.factor, 1.0));
  }
  return rope;
}

}  // namespace ds
