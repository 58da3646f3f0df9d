// CudaBackend's MoE: the router (gate GEMM in fp32 output, then the router kernel; the choices stay on the
// device) and the routed experts. Experts of bf16 or block-FP8 weights run as two grouped GEMMs over rows put
// in expert order on the device (cuda_moe_gemm.cu): nothing goes to the host and nothing waits. Other
// weight types (F32/F16 test checkpoints) copy the choices to the host and run each expert's GEMMs through
// cuBLASLt. Both end with one weighted combine per token in k order (no atomics: the sum is deterministic).
#include <algorithm>
#include <cstddef>
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

void CudaBackend::moe_gate(const Tensor& x, const MoeGateParams& p, Tensor& topk_ids, Tensor& topk_weights) {
  const int64_t t_count = x.rows(), e_count = p.gate->rows;
  DS_CHECK(topk_ids.dtype == DType::kI32 && topk_weights.dtype == DType::kF32 && topk_ids.rows() == t_count &&
               topk_ids.cols() == p.top_k && topk_weights.rows() == t_count && topk_weights.cols() == p.top_k,
           "moe_gate outputs must be [{}, {}] I32 and F32", t_count, p.top_k);
  DS_CHECK(p.top_k >= 1 && p.top_k <= 32 && p.top_k <= e_count && e_count <= 1024,
           "top_k {} of {} experts (at most 32 of at most 1024)", p.top_k, e_count);
  DS_CHECK(p.n_group >= 1 && p.n_group <= 64 && e_count % p.n_group == 0 && p.topk_group >= 1 &&
               p.topk_group <= p.n_group,
           "{} experts in {} groups, {} kept (at most 64 groups)", e_count, p.n_group, p.topk_group);
  // [T, E] fp32 logits, as HF computes the router. An F32 input goes in exactly: as hi and lo bf16 terms
  // stacked [2T, hidden] through one GEMM ([2T, E]: rows T.. hold the lo term's logits, added in the kernel).
  const bool split = x.dtype == DType::kF32 && exact_router_;
  Tensor logits = empty_f32({split ? 2 * t_count : t_count, e_count});
  if (split) {
    Tensor terms = empty({2 * t_count, x.cols()});  // [2T, hidden] bf16: hi rows, then lo rows
    const cuda::MatrixRef all = cuda::matrix(terms);
    const cuda::MatrixRef hi{all.data, all.dtype, t_count, all.cols, all.ld};
    const cuda::MatrixRef lo{static_cast<std::byte*>(all.data) + static_cast<size_t>(t_count * all.ld) * 2,
                             all.dtype, t_count, all.cols, all.ld};
    cuda::launch_split_bf16(cuda::matrix(x), hi, lo, ctx_->stream);
    DS_CUDA_CHECK_LAUNCH();
    cuda::linear_into(*ctx_, all, *p.gate, cuda::matrix(logits));
  } else {
    cuda::linear_into(*ctx_, cuda::matrix(x), *p.gate, cuda::matrix(logits));
  }
  const cuda::DeviceBuffer scores(ctx_->stream, static_cast<size_t>(t_count * e_count) * sizeof(float));
  const cuda::DeviceBuffer choice(ctx_->stream, static_cast<size_t>(t_count * e_count) * sizeof(float));
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
  k.logits_lo = split ? k.logits + t_count * e_count : nullptr;
  k.bias = has_bias ? &bias : nullptr;
  k.scores = scores.as<float>();
  k.choice = choice.as<float>();
  k.topk_ids = static_cast<int32_t*>(topk_ids.data);
  k.topk_weights = topk_weights.f32();
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
  DS_CUDA_CHECK_LAUNCH();
  ctx_->after_op("moe_gate");
}

const CudaBackend::ExpertTable& CudaBackend::expert_table(std::span<const MlpWeights> experts) {
  auto it = expert_tables_.find(experts.data());
  if (it != expert_tables_.end() && it->second.count == static_cast<int64_t>(experts.size())) return it->second;
  ExpertTable table;
  table.count = static_cast<int64_t>(experts.size());
  const MlpWeights& first = experts.front();
  table.inter = first.gate_proj.rows;
  table.hidden = first.gate_proj.cols;
  const DType dtype = first.gate_proj.tensor->dtype;
  table.fp8 = dtype == DType::kF8E4M3;
  const int64_t align = table.fp8 ? 16 : 8;  // elements per 16-byte chunk of a row
  bool grouped = (dtype == DType::kBF16 || table.fp8) && table.hidden % align == 0 && table.inter % align == 0 &&
                 table.count <= 1024;
  for (const MlpWeights& e : experts) {
    DS_CHECK(!e.gate_proj.empty(), "an empty expert (expert parallel) on the CUDA backend, which holds every expert");
    for (const Weight* w : {&e.gate_proj, &e.up_proj, &e.down_proj}) {
      grouped = grouped && w->tensor->dtype == dtype && w->device_data != nullptr;
      if (table.fp8)
        grouped = grouped && w->device_scale_inv != nullptr && w->block_rows == 128 && w->block_cols == 128;
    }
    grouped = grouped && e.gate_proj.rows == table.inter && e.up_proj.rows == table.inter &&
              e.gate_proj.cols == table.hidden && e.up_proj.cols == table.hidden &&
              e.down_proj.rows == table.hidden && e.down_proj.cols == table.inter;
  }
  table.grouped = grouped;
  if (grouped) {
    // [6][experts]: gate, up, down weights, then their block scales (null for bf16).
    std::vector<const void*> pointers;
    for (int part = 0; part < 6; ++part) {
      for (const MlpWeights& e : experts) {
        const Weight& w = part % 3 == 0 ? e.gate_proj : part % 3 == 1 ? e.up_proj : e.down_proj;
        pointers.push_back(part < 3 ? w.device_data : static_cast<const void*>(w.device_scale_inv));
      }
    }
    void* device = nullptr;
    DS_CUDA_CHECK(cudaMalloc(&device, pointers.size() * sizeof(void*)));
    weight_allocations_.push_back(device);
    DS_CUDA_CHECK(cudaMemcpy(device, pointers.data(), pointers.size() * sizeof(void*), cudaMemcpyHostToDevice));
    table.pointers = static_cast<const void* const*>(device);
  }
  return expert_tables_[experts.data()] = table;
}

void CudaBackend::moe_experts(const Tensor& x, std::span<const MlpWeights> experts, const Tensor& topk_ids,
                              const Tensor& topk_weights, Tensor& out) {
  const int64_t t_count = x.rows(), hidden = x.cols(), top_k = topk_ids.cols();
  const int64_t pairs = t_count * top_k;
  DS_CHECK(topk_ids.dtype == DType::kI32 && topk_weights.dtype == DType::kF32 && topk_ids.rows() == t_count &&
               topk_weights.rows() == t_count && topk_weights.cols() == top_k && out.rows() == t_count &&
               out.cols() == hidden && !experts.empty(),
           "moe_experts shapes");
  if (pairs == 0) return;
  const ExpertTable& table = expert_table(experts);
  if (!table.grouped || !grouped_experts_ || x.dtype != DType::kBF16 || table.hidden != hidden) {
    moe_experts_on_host_routing(x, experts, topk_ids, topk_weights, out);
    return;
  }
  const auto e_count = static_cast<int64_t>(experts.size());
  // Prefill (about a hundred rows per expert) runs the 64-row tiles of the 8-warp kernel, decode the 32-row
  // ones.
  const int64_t tile_rows = moe_tile_rows_ != 0                       ? moe_tile_rows_
                            : pairs >= kMoeLargeTileMinRows * e_count ? cuda::kMoeLargeTileRows
                                                                      : cuda::kMoeTileRows;
  const int64_t max_tiles = std::min(pairs, (pairs + tile_rows - 1) / tile_rows + std::min(e_count, pairs));
  // One scratch allocation: tiles (int4, first for alignment), token_of_row, row_of_pair, num_tiles.
  const cuda::DeviceBuffer scratch(ctx_->stream,
                                   static_cast<size_t>(max_tiles) * 16 + static_cast<size_t>(2 * pairs + 1) * 4);
  cuda::MoePermuteParams perm;
  perm.topk_ids = static_cast<const int32_t*>(topk_ids.data);
  perm.pairs = pairs;
  perm.top_k = static_cast<int32_t>(top_k);
  perm.num_experts = static_cast<int32_t>(e_count);
  perm.tiles = scratch.as<int4>();
  perm.token_of_row = reinterpret_cast<int32_t*>(perm.tiles + max_tiles);
  perm.row_of_pair = perm.token_of_row + pairs;
  perm.num_tiles = perm.row_of_pair + pairs;
  perm.max_tiles = static_cast<int32_t>(max_tiles);
  perm.tile_rows = static_cast<int32_t>(tile_rows);
  cuda::launch_moe_permute(perm, ctx_->stream);
  DS_CUDA_CHECK_LAUNCH();

  const int64_t inter = table.inter;
  const auto* ptrs = table.pointers;
  Tensor act = empty({pairs, inter});     // [pairs, I] silu(x W_gate^T) * (x W_up^T), rows in expert order
  Tensor y = empty_f32({pairs, hidden});  // [pairs, hidden] each pair's expert output, before its weight
  cuda::MoeGemmParams g;
  g.fp8 = table.fp8;
  g.tiles = perm.tiles;
  g.num_tiles = perm.num_tiles;
  g.max_tiles = perm.max_tiles;
  g.tile_rows = perm.tile_rows;
  g.x = static_cast<const __nv_bfloat16*>(x.data);
  g.ldx = hidden;
  g.x_rows = perm.token_of_row;
  g.w = ptrs;
  g.w_up = ptrs + e_count;
  g.w_scale = table.fp8 ? reinterpret_cast<const float* const*>(ptrs + 3 * e_count) : nullptr;
  g.w_up_scale = table.fp8 ? reinterpret_cast<const float* const*>(ptrs + 4 * e_count) : nullptr;
  g.n = inter;
  g.k = hidden;
  g.out = act.data;
  g.out_dtype = DType::kBF16;
  g.ldo = inter;
  cuda::launch_moe_gemm(g, ctx_->stream);
  DS_CUDA_CHECK_LAUNCH();

  cuda::MoeGemmParams d = g;
  d.x = static_cast<const __nv_bfloat16*>(act.data);
  d.ldx = inter;
  d.x_rows = nullptr;
  d.w = ptrs + 2 * e_count;
  d.w_up = nullptr;
  d.w_scale = table.fp8 ? reinterpret_cast<const float* const*>(ptrs + 5 * e_count) : nullptr;
  d.w_up_scale = nullptr;
  d.n = hidden;
  d.k = inter;
  d.out = y.data;
  d.out_dtype = DType::kF32;
  d.ldo = hidden;
  cuda::launch_moe_gemm(d, ctx_->stream);
  DS_CUDA_CHECK_LAUNCH();
  cuda::launch_moe_combine(cuda::matrix(y), perm.row_of_pair, topk_weights.f32(), top_k, cuda::matrix(out),
                           ctx_->stream);
  DS_CUDA_CHECK_LAUNCH();
  ctx_->after_op("moe_experts");
}

void CudaBackend::moe_experts_on_host_routing(const Tensor& x, std::span<const MlpWeights> experts,
                                              const Tensor& topk_ids_t, const Tensor& topk_weights_t, Tensor& out) {
  const int64_t t_count = x.rows(), hidden = x.cols(), top_k = topk_ids_t.cols();
  const int64_t pairs = t_count * top_k;
  std::vector<int32_t> topk_ids(static_cast<size_t>(pairs));
  std::vector<float> topk_weights(static_cast<size_t>(pairs));
  DS_CUDA_CHECK(cudaMemcpyAsync(topk_ids.data(), topk_ids_t.data, topk_ids.size() * sizeof(int32_t),
                                cudaMemcpyDeviceToHost, ctx_->stream));
  DS_CUDA_CHECK(cudaMemcpyAsync(topk_weights.data(), topk_weights_t.data, topk_weights.size() * sizeof(float),
                                cudaMemcpyDeviceToHost, ctx_->stream));
  synchronize();
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
  const cuda::DeviceBuffer d_weights = cuda::upload(*ctx_, std::span<const float>(topk_weights));
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
