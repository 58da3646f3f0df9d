// A Backend that forwards every op to another one and watches the MoE router: it records the experts each
// moe_gate call chose and, when given a recording, replaces them with it.
//
// Why: a bf16 forward pass and the fp32 reference see router scores that differ by rounding, and where two
// experts' scores are that close the choice flips. A flip swaps a whole expert's output for that token (a
// change of order one, not of order bf16) and everything downstream of that token follows. So the end-to-end
// tests run the GPU with the reference's choices pinned, where the bf16 tolerance must hold everywhere, and
// free-running, where it must hold up to the first token whose choice differs.
#pragma once

#include <algorithm>
#include <vector>

#include "backend/backend.h"
#include "util/check.h"

namespace ds::testing {

struct RouterCall {
  std::vector<int32_t> topk_ids;    // [T, top_k]
  std::vector<float> topk_weights;  // [T, top_k]
  int64_t top_k = 0;
};

class RoutingProbe final : public Backend {
 public:
  explicit RoutingProbe(Backend& inner) : inner_(inner) {}

  std::vector<RouterCall> calls;                    // the inner backend's own choices, call by call
  const std::vector<RouterCall>* pinned = nullptr;  // when set: call i returns pinned[i] instead
  size_t next_pinned = 0;

  void prepare_weight(Weight& w) override { inner_.prepare_weight(w); }
  Tensor empty(std::vector<int64_t> shape) override { return inner_.empty(std::move(shape)); }
  DType activation_dtype() const override { return inner_.activation_dtype(); }
  Tensor empty_f32(std::vector<int64_t> shape) override { return inner_.empty_f32(std::move(shape)); }
  Tensor empty_host(std::vector<int64_t> shape) override { return inner_.empty_host(std::move(shape)); }
  Tensor empty_i32(std::vector<int64_t> shape) override { return inner_.empty_i32(std::move(shape)); }
  void copy_blocks(const Tensor& from, Tensor& to, std::span<const BlockMove> moves, int32_t block_size) override {
    inner_.copy_blocks(from, to, moves, block_size);
  }
  void fill_zero(Tensor& t) override { inner_.fill_zero(t); }
  void copy_to_host(const Tensor& t, std::span<float> out) override { inner_.copy_to_host(t, out); }
  void copy_from_host(std::span<const float> in, Tensor& t) override { inner_.copy_from_host(in, t); }
  void embedding(const Weight& table, std::span<const int32_t> ids, Tensor& out) override {
    inner_.embedding(table, ids, out);
  }
  void rms_norm(const Tensor& x, const Weight& weight, float eps, Tensor& out) override {
    inner_.rms_norm(x, weight, eps, out);
  }
  void rms_norm_cols(const Tensor& x, int64_t col_offset, const Weight& weight, float eps,
                     Tensor& out) override {
    inner_.rms_norm_cols(x, col_offset, weight, eps, out);
  }
  void linear(const Tensor& x, const Weight& w, Tensor& out) override { inner_.linear(x, w, out); }
  void add(Tensor& acc, const Tensor& x) override { inner_.add(acc, x); }
  void add_rms_norm(Tensor& residual, const Tensor& branch, const Weight& weight, float eps, Tensor& out) override {
    inner_.add_rms_norm(residual, branch, weight, eps, out);
  }
  void silu_mul(const Tensor& gate_up, Tensor& out) override { inner_.silu_mul(gate_up, out); }
  void rope(Tensor& x, std::span<const int32_t> positions, int64_t num_heads, int64_t head_dim,
            int64_t rope_offset, const RopeParams& rope) override {
    inner_.rope(x, positions, num_heads, head_dim, rope_offset, rope);
  }
  void store_kv(const Tensor& latent, const Tensor& k_rope_src, int64_t k_rope_col_offset,
                std::span<const int64_t> slot_mapping, Tensor& kv_cache) override {
    inner_.store_kv(latent, k_rope_src, k_rope_col_offset, slot_mapping, kv_cache);
  }
  void mla_attention(const MlaAttentionParams& p, const ForwardBatch& batch) override {
    inner_.mla_attention(p, batch);
  }
  void moe_gate(const Tensor& x, const MoeGateParams& p, Tensor& topk_ids, Tensor& topk_weights) override {
    inner_.moe_gate(x, p, topk_ids, topk_weights);
    std::vector<float> ids(static_cast<size_t>(topk_ids.numel()));
    RouterCall call;
    call.top_k = p.top_k;
    inner_.copy_to_host(topk_ids, ids);
    call.topk_ids.assign(ids.begin(), ids.end());
    call.topk_weights.resize(static_cast<size_t>(topk_weights.numel()));
    inner_.copy_to_host(topk_weights, call.topk_weights);
    calls.push_back(std::move(call));
    if (pinned == nullptr) return;
    DS_CHECK(next_pinned < pinned->size(), "router call {} has no pinned choice", next_pinned);
    const RouterCall& r = (*pinned)[next_pinned++];
    DS_CHECK(r.topk_ids.size() == ids.size(), "pinned router call of {} choices for {}", r.topk_ids.size(),
             ids.size());
    inner_.copy_from_host(std::vector<float>(r.topk_ids.begin(), r.topk_ids.end()), topk_ids);
    inner_.copy_from_host(r.topk_weights, topk_weights);
  }
  void moe_experts(const Tensor& x, std::span<const MlpWeights> experts, const Tensor& topk_ids,
                   const Tensor& topk_weights, Tensor& out) override {
    inner_.moe_experts(x, experts, topk_ids, topk_weights, out);
  }
  void mlp(const Tensor& x, const MlpWeights& w, Tensor& out) override { inner_.mlp(x, w, out); }
  void gather_rows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) override {
    inner_.gather_rows(x, rows, out);
  }

 private:
  Backend& inner_;
};

// The first token (row) whose set of chosen experts differs between two runs of the same calls, or `none`.
inline int64_t first_routing_difference(const std::vector<RouterCall>& a, const std::vector<RouterCall>& b,
                                        size_t first_call, size_t num_calls, int64_t none) {
  int64_t first = none;
  for (size_t c = first_call; c < first_call + num_calls && c < a.size() && c < b.size(); ++c) {
    const int64_t k = a[c].top_k, rows = static_cast<int64_t>(a[c].topk_ids.size()) / k;
    for (int64_t t = 0; t < rows && t < first; ++t) {
      std::vector<int32_t> x(a[c].topk_ids.begin() + t * k, a[c].topk_ids.begin() + (t + 1) * k);
      std::vector<int32_t> y(b[c].topk_ids.begin() + t * k, b[c].topk_ids.begin() + (t + 1) * k);
      std::sort(x.begin(), x.end());
      std::sort(y.begin(), y.end());
      if (x != y) first = t;
    }
  }
  return first;
}

}  // namespace ds::testing
