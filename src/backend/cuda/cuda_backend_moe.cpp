// CudaBackend's MoE: the router (gate GEMM in fp32 output, then the router kernel, choices copied back to the
// host as the interface asks) and the routed experts: tokens gathered into expert order, each expert's
// gate/up/down GEMMs over its contiguous rows, then one weighted combine per token (no atomics, so the sum
// is deterministic).
#include <algorithm>
#include <numeric>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_context.h"
#include "util/check.h"

namespace ds {

namespace {

cuda::GateMethod gate_method(TopkMethod m) {
  switch (m) {
    case TopkMethod::kGreedy:
      return cuda::GateMethod::kGreedy;
    case TopkMethod::kGroupLimitedGreedy:
      return cuda::GateMethod::kGroupLimitedGreedy;
    case TopkMethod::kNoauxTc:
      return cuda::GateMethod::kNoauxTc;
  }
  DS_CHECK(false, "unknown topk method");
  return cuda::GateMethod::kGreedy;
}

}  // namespace

void CudaBackend::moe_gate(const Tensor& x, const MoeGateParams& p, std::vector<int32_t>& topk_ids,
                           std::vector<float>& topk_weights) {
  const int64_t t_count = x.rows(), e_count = p.gate->rows;
  DS_CHECK(p.top_k >= 1 && p.top_k <= 32 && p.top_k <= e_count, "top_k {} of {} experts (at most 32)",
           p.top_k, e_count);
  DS_CHECK(p.n_group >= 1 && p.n_group <= 64 && e_count % p.n_group == 0 && p.topk_group >= 1 &&
               p.topk_group <= p.n_group,
           "{} experts in {} groups, {} kept (at most 64 groups)", e_count, p.n_group, p.topk_group);
  Tensor logits = empty_f32({t_count, e_count});  // [T, E], fp32 as HF computes the router
  cuda::linear_into(*ctx_, cuda::matrix(x), *p.gate, cuda::matrix(logits));
  const cuda::DeviceBuffer scores(ctx_->stream, static_cast<size_t>(t_count * e_count) * sizeof(float));
  const cuda::DeviceBuffer choice(ctx_->stream, static_cast<size_t>(t_count * e_count) * sizeof(float));
  const cuda::DeviceBuffer ids(ctx_->stream, static_cast<size_t>(t_count * p.top_k) * sizeof(int32_t));
  const cuda::DeviceBuffer weights(ctx_->stream, static_cast<size_t>(t_count * p.top_k) * sizeof(float));
  cuda::DeviceWeight bias;
  const bool has_bias = p.e_score_correction_bias != nullptr && !p.e_score_correction_bias->empty();
  if (has_bias) {
    bias = cuda::device_weight(*p.e_score_correction_bias);
    DS_CHECK(bias.rows * bias.cols == e_count, "correction bias of {} for {} experts", bias.rows * bias.cols,
             e_count);
    bias.cols = e_count;
    bias.rows = 1;
  }
  cuda::MoeGateKernelParams k;
  k.logits = static_cast<const float*>(logits.data);
  k.bias = has_bias ? &bias : nullptr;
  k.scores = scores.as<float>();
  k.choice = choice.as<float>();
  k.topk_ids = ids.as<int32_t>();
  k.topk_weights = weights.as<float>();
  k.num_tokens = t_count;
  k.num_experts = e_count;
  k.top_k = p.top_k;
  k.n_group = p.n_group;
  k.topk_group = p.topk_group;
  k.method = gate_method(p.topk_method);
  k.sigmoid = p.scoring_func == ScoringFunc::kSigmoid;
  k.norm_topk_prob = p.norm_topk_prob;
  k.routed_scaling_factor = p.routed_scaling_factor;
  cuda::launch_moe_gate(k, ctx_->stream);
  ctx_->after_op("moe_gate");
  topk_ids.assign(static_cast<size_t>(t_count * p.top_k), 0);
  topk_weights.assign(static_cast<size_t>(t_count * p.top_k), 0.0f);
  DS_CUDA_CHECK(cudaMemcpyAsync(topk_ids.data(), ids.as<int32_t>(), topk_ids.size() * sizeof(int32_t),
                                cudaMemcpyDeviceToHost, ctx_->stream));
  DS_CUDA_CHECK(cudaMemcpyAsync(topk_weights.data(), weights.as<float>(), topk_weights.size() * sizeof(float),
                                cudaMemcpyDeviceToHost, ctx_->stream));
  synchronize();
}

void CudaBackend::moe_experts(const Tensor& x, std::span<const MlpWeights> experts,
                              std::span<const int32_t> topk_ids, std::span<const float> topk_weights,
                              int64_t top_k, Tensor& out) {
  const int64_t t_count = x.rows(), hidden = x.cols();
  const int64_t pairs = t_count * top_k;
  DS_CHECK(static_cast<int64_t>(topk_ids.size()) == pairs &&
               static_cast<int64_t>(topk_weights.size()) == pairs && out.rows() == t_count &&
               out.cols() == hidden,
           "moe_experts shapes");
  if (pairs == 0) return;
  // Counting sort of the (token, k) pairs by expert; within an expert, in pair order.
  std::vector<int64_t> offsets(experts.size() + 1, 0);
  for (int32_t e : topk_ids) {
    DS_CHECK(e >= 0 && e < static_cast<int32_t>(experts.size()), "expert id {} out of range", e);
    ++offsets[static_cast<size_t>(e) + 1];
  }
  std::partial_sum(offsets.begin(), offsets.end(), offsets.begin());
  std::vector<int32_t> token_of_row(static_cast<size_t>(pairs));  // [pairs] source token of each permuted row
  std::vector<int32_t> row_of_pair(static_cast<size_t>(pairs));   // [T, top_k] permuted row of each pair
  std::vector<int64_t> next(offsets.begin(), offsets.end() - 1);
  for (int64_t i = 0; i < pairs; ++i) {
    const int64_t row = next[static_cast<size_t>(topk_ids[static_cast<size_t>(i)])]++;
    token_of_row[static_cast<size_t>(row)] = static_cast<int32_t>(i / top_k);
    row_of_pair[static_cast<size_t>(i)] = static_cast<int32_t>(row);
  }
  int64_t inter = 0;
  for (const MlpWeights& e : experts) inter = std::max(inter, e.gate_proj.rows);

  const cuda::DeviceBuffer d_tokens = cuda::upload(*ctx_, std::span<const int32_t>(token_of_row));
  const cuda::DeviceBuffer d_rows = cuda::upload(*ctx_, std::span<const int32_t>(row_of_pair));
  const cuda::DeviceBuffer d_weights = cuda::upload(*ctx_, topk_weights);
  Tensor xin = empty({pairs, hidden});    // [pairs, hidden] x in expert order
  Tensor gate = empty({pairs, inter});    // [pairs, I]
  Tensor up = empty({pairs, inter});      // [pairs, I]
  Tensor y = empty_f32({pairs, hidden});  // [pairs, hidden] each pair's expert output, before its weight
  cuda::launch_gather_rows(cuda::matrix(x), d_tokens.as<int32_t>(), cuda::matrix(xin), ctx_->stream);
  DS_CUDA_CHECK_LAUNCH();
  for (size_t e = 0; e < experts.size(); ++e) {
    const int64_t begin = offsets[e], n = offsets[e + 1] - offsets[e];
    if (n == 0) continue;
    const MlpWeights& w = experts[e];
    const int64_t ei = w.gate_proj.rows;
    const cuda::MatrixRef xs = cuda::row_slice(cuda::matrix(xin), begin, n);
    const cuda::MatrixRef gs = cuda::col_slice(cuda::row_slice(cuda::matrix(gate), begin, n), 0, ei);
    const cuda::MatrixRef us = cuda::col_slice(cuda::row_slice(cuda::matrix(up), begin, n), 0, ei);
    cuda::linear_into(*ctx_, xs, w.gate_proj, gs);
    cuda::linear_into(*ctx_, xs, w.up_proj, us);
    cuda::launch_silu_mul(gs, us, gs, ctx_->stream);
    DS_CUDA_CHECK_LAUNCH();
    cuda::linear_into(*ctx_, gs, w.down_proj, cuda::row_slice(cuda::matrix(y), begin, n));
  }
  cuda::launch_moe_combine(cuda::matrix(y), d_rows.as<int32_t>(), d_weights.as<float>(), top_k,
                           cuda::matrix(out), ctx_->stream);
  ctx_->after_op("moe_experts");
}

}  // namespace ds
