// ProfilingBackend: a Backend that forwards every op to a CudaBackend and, per op, adds up what the op must
// move through device memory and compute — its own floor — and, when a step is timed, how long the op held
// the stream (CUDA events recorded before and after it on the backend's stream).
//
// What "must" means here (the roofline, not what today's kernels do):
//   bytes: every weight the op reads, once (FP8 weights at 1 byte + their fp32 block scales); of the routed
//          experts only those that received a token; the latent KV cache of every sequence once; plus the
//          op's activations in and out (per op only: the step's roofline counts weights + KV, see
//          step_bytes()).
//   FLOPs: 2 per multiply-add of each GEMM at the rows it really has (the routed experts at their token
//   count);
//          attention as the cheaper of MLA's two forms for each sequence: weight-absorbed (decode: query
//          through W_UK, scores and values over the 576-wide latent, out through W_UV) or expanded (prefill:
//          keys and values through kv_b_proj once, then plain causal attention over 192/128-wide heads).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_set>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"

namespace ds::bench {

struct OpStats {
  std::string name;
  int64_t calls = 0;
  double bytes = 0;  // what the op must move (weights + KV + its activations)
  double flops = 0;
  double ms = 0;  // stream time between the events around the op (timed steps only)
};

struct StepStats {
  std::vector<OpStats> ops;  // in order of first call
  double weight_bytes = 0;   // every weight touched once (activated experts only)
  double kv_bytes = 0;       // latent cache read (each sequence's context once) + written
  double flops = 0;
  double timed_ms = 0;  // first event to last event of a timed step
  int64_t moe_layers = 0;
  int64_t experts_touched = 0;  // routed experts with at least one token, summed over the MoE layers
};

class ProfilingBackend final : public Backend {
 public:
  explicit ProfilingBackend(CudaBackend& inner);
  ~ProfilingBackend() override;
  ProfilingBackend(const ProfilingBackend&) = delete;
  ProfilingBackend& operator=(const ProfilingBackend&) = delete;

  // Starts collecting a step's costs; with `timed`, also events around every op (a few µs of host time each,
  // so untimed steps give the step time, timed steps the split).
  void begin_step(bool timed);
  // Waits for the stream and returns the step's table.
  [[nodiscard]] StepStats end_step();

  void prepare_weight(Weight& w) override { inner_.prepare_weight(w); }
  void prepare_weights(std::span<Weight* const> weights) override { inner_.prepare_weights(weights); }
  [[nodiscard]] Tensor empty(std::vector<int64_t> shape) override { return inner_.empty(std::move(shape)); }
  [[nodiscard]] DType activation_dtype() const override { return inner_.activation_dtype(); }
  [[nodiscard]] Tensor empty_f32(std::vector<int64_t> shape) override {
    return inner_.empty_f32(std::move(shape));
  }
  [[nodiscard]] Tensor empty_i32(std::vector<int64_t> shape) override {
    return inner_.empty_i32(std::move(shape));
  }
  [[nodiscard]] Tensor empty_host(std::vector<int64_t> shape) override {
    return inner_.empty_host(std::move(shape));
  }
  void copy_blocks(const Tensor& from, Tensor& to, std::span<const BlockMove> moves,
                   int32_t block_size) override;
  void fill_zero(Tensor& t) override;
  void copy_to_host(const Tensor& t, std::span<float> out) override { inner_.copy_to_host(t, out); }
  void copy_from_host(std::span<const float> in, Tensor& t) override { inner_.copy_from_host(in, t); }

  void embedding(const Weight& table, std::span<const int32_t> ids, Tensor& out) override;
  void rms_norm(const Tensor& x, const Weight& weight, float eps, Tensor& out) override;
  void rms_norm_cols(const Tensor& x, int64_t col_offset, const Weight& weight, float eps,
                     Tensor& out) override;
  void linear(const Tensor& x, const Weight& w, Tensor& out) override;
  void add(Tensor& acc, const Tensor& x) override;
  void add_rms_norm(Tensor& residual, const Tensor& branch, const Weight& weight, float eps, Tensor& out) override;
  void silu_mul(const Tensor& gate_up, Tensor& out) override;
  void rope(Tensor& x, std::span<const int32_t> positions, int64_t num_heads, int64_t head_dim,
            int64_t rope_offset, const RopeParams& rope) override;
  void store_kv(const Tensor& latent, const Tensor& k_rope_src, int64_t k_rope_col_offset,
                std::span<const int64_t> slot_mapping, Tensor& kv_cache) override;
  void mla_attention(const MlaAttentionParams& p, const ForwardBatch& batch) override;
  void moe_gate(const Tensor& x, const MoeGateParams& p, Tensor& topk_ids, Tensor& topk_weights) override;
  // Copies the choices to the host first (outside the timed scope) to count the experts' bytes and FLOPs.
  void moe_experts(const Tensor& x, std::span<const MlpWeights> experts, const Tensor& topk_ids,
                   const Tensor& topk_weights, Tensor& out) override;
  void mlp(const Tensor& x, const MlpWeights& w, Tensor& out) override;
  void gather_rows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) override;

  // Step buffers and graphs go straight to the inner backend (a replayed graph runs no op of this class, so
  // a profiled step is an eager one: DeepseekModel::forward_eager).
  void stage_step(const ForwardBatch& batch, int32_t table_pitch = 0) override {
    inner_.stage_step(batch, table_pitch);
  }
  void unstage_step() override { inner_.unstage_step(); }
  [[nodiscard]] bool supports_graphs() const override { return inner_.supports_graphs(); }
  void begin_capture() override { inner_.begin_capture(); }
  [[nodiscard]] int64_t end_capture() override { return inner_.end_capture(); }
  void replay_graph(int64_t graph) override { inner_.replay_graph(graph); }
  void clear_graphs() override { inner_.clear_graphs(); }
  [[nodiscard]] int64_t graph_memory_bytes() override { return inner_.graph_memory_bytes(); }

 private:
  class Scope;  // events and costs around one forwarded op
  // Bytes of w on the device (as stored), counted into the step's weight bytes the first time it is seen.
  double touch(const Weight& w);

  CudaBackend& inner_;
  bool active_ = false;
  bool timed_ = false;
  std::vector<void*> events_;  // cudaEvent_t pool, grown on demand
  size_t next_event_ = 0;
  std::vector<std::pair<size_t, size_t>> op_events_;  // (stats index, first event index) per timed call
  std::map<std::string, size_t> index_;
  StepStats step_;
  std::unordered_set<const void*> touched_;
};

}  // namespace ds::bench
