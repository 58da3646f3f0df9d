// DeepSeekMoE on the CPU: the router (softmax or sigmoid scores, optional correction bias used for choosing
// experts only, group-limited top-k, normalization, routed scaling) and the routed experts.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace ds {
namespace {

// Indices of the k largest values; ties go to the lower index (torch.topk's order on CPU for equal values
// is not specified, and exact ties do not occur with real-valued scores).
std::vector<int32_t> top_k_indices(const std::vector<float>& v, int64_t k) {
  std::vector<int32_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    return v[static_cast<size_t>(a)] > v[static_cast<size_t>(b)] ||
           (v[static_cast<size_t>(a)] == v[static_cast<size_t>(b)] && a < b);
  });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

}  // namespace

void CpuBackend::moe_gate(const Tensor& x, const MoeGateParams& p, Tensor& topk_ids_out,
                          Tensor& topk_weights_out) {
  const int64_t t_count = x.rows(), e_count = p.gate->rows;
  DS_CHECK(topk_ids_out.dtype == DType::kI32 && topk_ids_out.rows() == t_count &&
               topk_ids_out.cols() == p.top_k && topk_weights_out.rows() == t_count &&
               topk_weights_out.cols() == p.top_k,
           "moe_gate outputs must be [{}, {}]", t_count, p.top_k);
  std::span<int32_t> topk_ids(static_cast<int32_t*>(topk_ids_out.data), static_cast<size_t>(t_count * p.top_k));
  std::span<float> topk_weights(topk_weights_out.f32(), static_cast<size_t>(t_count * p.top_k));
  Tensor logits = empty({t_count, e_count});
  linear(x, *p.gate, logits);
  std::vector<float> bias;
  if (p.e_score_correction_bias != nullptr && !p.e_score_correction_bias->empty()) {
    bias.resize(static_cast<size_t>(e_count));
    dequantize_rows(*p.e_score_correction_bias, 0, 1, bias.data());
  }
  const TopkMethod method = p.topk_method;
  for (int64_t t = 0; t < t_count; ++t) {
    const float* l = logits.f32() + t * e_count;
    std::vector<float> scores(static_cast<size_t>(e_count));
    if (p.scoring_func == ScoringFunc::kSoftmax) {
      const float mx = *std::max_element(l, l + e_count);
      double sum = 0;
      for (int64_t e = 0; e < e_count; ++e) sum += std::exp(static_cast<double>(l[e] - mx));
      for (int64_t e = 0; e < e_count; ++e) scores[e] = static_cast<float>(std::exp(double(l[e] - mx)) / sum);
    } else {
      for (int64_t e = 0; e < e_count; ++e) scores[e] = 1.0f / (1.0f + std::exp(-l[e]));
    }
    // The bias moves experts in or out of the selection; the weights come from the unbiased scores.
    std::vector<float> choice = scores;
    if (!bias.empty())
      for (int64_t e = 0; e < e_count; ++e) choice[e] += bias[static_cast<size_t>(e)];
    if (method != TopkMethod::kGreedy && p.n_group > 1) {
      const int64_t per_group = e_count / p.n_group;
      std::vector<float> group_score(static_cast<size_t>(p.n_group));
      for (int64_t g = 0; g < p.n_group; ++g) {
        std::vector<float> members(choice.begin() + g * per_group, choice.begin() + (g + 1) * per_group);
        std::sort(members.begin(), members.end(), std::greater<>());
        group_score[static_cast<size_t>(g)] =
            method == TopkMethod::kNoauxTc ? members[0] + members[1] : members[0];
      }
      const std::vector<int32_t> keep = top_k_indices(group_score, p.topk_group);
      std::vector<bool> kept(static_cast<size_t>(p.n_group), false);
      for (int32_t g : keep) kept[static_cast<size_t>(g)] = true;
      // Experts of dropped groups can never be chosen. (HF fills them with 0 rather than -inf, which differs
      // only if a kept expert's biased score is negative; DeepSeek's reference and vLLM use -inf.)
      for (int64_t e = 0; e < e_count; ++e)
        if (!kept[static_cast<size_t>(e / per_group)]) choice[e] = -std::numeric_limits<float>::infinity();
    }
    const std::vector<int32_t> chosen = top_k_indices(choice, p.top_k);
    float sum = 0.0f;
    for (int64_t k = 0; k < p.top_k; ++k) sum += scores[static_cast<size_t>(chosen[k])];
    for (int64_t k = 0; k < p.top_k; ++k) {
      float w = scores[static_cast<size_t>(chosen[k])];
      if (p.norm_topk_prob) w /= (sum + 1e-20f);
      topk_ids[static_cast<size_t>(t * p.top_k + k)] = chosen[static_cast<size_t>(k)];
      topk_weights[static_cast<size_t>(t * p.top_k + k)] = w * p.routed_scaling_factor;
    }
  }
}

void CpuBackend::moe_experts(const Tensor& x, std::span<const MlpWeights> experts, const Tensor& topk_ids_in,
                             const Tensor& topk_weights_in, Tensor& out) {
  const int64_t t_count = x.rows(), hidden = x.cols(), top_k = topk_ids_in.cols();
  DS_CHECK(topk_ids_in.dtype == DType::kI32 && topk_ids_in.rows() == t_count && topk_weights_in.rows() == t_count &&
               topk_weights_in.cols() == top_k && out.rows() == t_count && out.cols() == hidden,
           "moe_experts shapes");
  const std::span<const int32_t> topk_ids(static_cast<const int32_t*>(topk_ids_in.data),
                                          static_cast<size_t>(t_count * top_k));
  const std::span<const float> topk_weights(topk_weights_in.f32(), static_cast<size_t>(t_count * top_k));
  // Group the (token, slot) pairs by expert and run each expert once over its tokens.
  std::vector<std::vector<int32_t>> assigned(experts.size());
  for (int64_t i = 0; i < t_count * top_k; ++i) {
    const int32_t e = topk_ids[static_cast<size_t>(i)];
    DS_CHECK(e >= 0 && e < static_cast<int32_t>(experts.size()), "expert id {} out of range", e);
    assigned[static_cast<size_t>(e)].push_back(static_cast<int32_t>(i));
  }
  for (size_t e = 0; e < experts.size(); ++e) {
    const auto& slots = assigned[e];
    if (slots.empty() || experts[e].gate_proj.empty()) continue;  // empty: another rank's expert (EP)
    const int64_t n = static_cast<int64_t>(slots.size());
    Tensor xin = empty({n, hidden});
    for (int64_t j = 0; j < n; ++j)
      std::copy_n(x.f32() + (slots[static_cast<size_t>(j)] / top_k) * hidden, hidden, xin.f32() + j * hidden);
    Tensor y = empty({n, hidden});
    mlp(xin, experts[e], y);
    for (int64_t j = 0; j < n; ++j) {
      const int32_t slot = slots[static_cast<size_t>(j)];
      const float w = topk_weights[static_cast<size_t>(slot)];
      float* o = out.f32() + (slot / top_k) * hidden;
      const float* yr = y.f32() + j * hidden;
      for (int64_t c = 0; c < hidden; ++c) o[c] += w * yr[c];
    }
  }
}

}  // namespace ds
