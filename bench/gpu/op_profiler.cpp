#include "gpu/op_profiler.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <set>

#include "io/dtype.h"
#include "util/check.h"

#define BENCH_CUDA_CHECK(call)                                                      \
  do {                                                                              \
    const cudaError_t status_ = (call);                                             \
    DS_CHECK(status_ == cudaSuccess, "{}: {}", #call, cudaGetErrorString(status_)); \
  } while (0)

namespace ds::bench {
namespace {

double tensor_bytes(const Tensor& t) {
  return static_cast<double>(t.numel()) * static_cast<double>(dtype_size(t.dtype));
}

double weight_bytes(const Weight& w) {
  if (w.empty()) return 0;
  double b = static_cast<double>(w.tensor->nbytes);
  if (w.scale_inv != nullptr) b += static_cast<double>(w.scale_inv->numel()) * 4.0;  // fp32 on the device
  return b;
}

// "model.layers.3.self_attn.q_a_proj.weight" -> "q_a_proj"; "lm_head.weight" -> "lm_head".
std::string weight_role(const Weight& w) {
  std::string n = w.name();
  const std::string suffix = ".weight";
  if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
    n.resize(n.size() - suffix.size());
  const size_t dot = n.rfind('.');
  return dot == std::string::npos ? n : n.substr(dot + 1);
}

}  // namespace

// Adds the op's costs to its row; in a timed step, records an event on the stream before and after it.
class ProfilingBackend::Scope {
 public:
  Scope(ProfilingBackend& b, const std::string& name, double bytes, double flops) : b_(b) {
    if (!b_.active_) return;
    auto [it, fresh] = b_.index_.emplace(name, b_.step_.ops.size());
    if (fresh) b_.step_.ops.push_back(OpStats{name});
    OpStats& s = b_.step_.ops[it->second];
    ++s.calls;
    s.bytes += bytes;
    s.flops += flops;
    b_.step_.flops += flops;
    if (!b_.timed_) return;
    first_ = b_.next_event_;
    b_.op_events_.emplace_back(it->second, first_);
    record();
  }
  ~Scope() {
    if (b_.active_ && b_.timed_) record();
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  void record() {
    if (b_.next_event_ == b_.events_.size()) {
      cudaEvent_t e = nullptr;
      BENCH_CUDA_CHECK(cudaEventCreate(&e));
      b_.events_.push_back(e);
    }
    BENCH_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(b_.events_[b_.next_event_++]),
                                     static_cast<cudaStream_t>(b_.inner_.stream_handle())));
  }

  ProfilingBackend& b_;
  size_t first_ = 0;
};

ProfilingBackend::ProfilingBackend(CudaBackend& inner) : inner_(inner) {}

ProfilingBackend::~ProfilingBackend() {
  for (void* e : events_) cudaEventDestroy(static_cast<cudaEvent_t>(e));
}

void ProfilingBackend::begin_step(bool timed) {
  active_ = true;
  timed_ = timed;
  next_event_ = 0;
  op_events_.clear();
  index_.clear();
  touched_.clear();
  step_ = StepStats{};
}

StepStats ProfilingBackend::end_step() {
  inner_.synchronize();
  if (timed_ && !op_events_.empty()) {
    for (const auto& [op, first] : op_events_) {
      float ms = 0;
      BENCH_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(events_[first]),
                                            static_cast<cudaEvent_t>(events_[first + 1])));
      step_.ops[op].ms += ms;
    }
    float total = 0;
    BENCH_CUDA_CHECK(cudaEventElapsedTime(&total, static_cast<cudaEvent_t>(events_.front()),
                                          static_cast<cudaEvent_t>(events_[next_event_ - 1])));
    step_.timed_ms = total;
  }
  active_ = false;
  timed_ = false;
  return step_;
}

double ProfilingBackend::touch(const Weight& w) {
  const double b = weight_bytes(w);
  if (active_ && !w.empty() && touched_.insert(w.tensor).second) step_.weight_bytes += b;
  return b;
}

void ProfilingBackend::copy_blocks(const Tensor& from, Tensor& to, std::span<const BlockMove> moves,
                                   int32_t block_size) {
  const double bytes = 2.0 * static_cast<double>(moves.size()) * block_size *
                       static_cast<double>(from.cols()) * static_cast<double>(dtype_size(from.dtype));
  Scope s(*this, "copy_blocks", bytes, 0);
  inner_.copy_blocks(from, to, moves, block_size);
}

void ProfilingBackend::fill_zero(Tensor& t) {
  Scope s(*this, "fill_zero", tensor_bytes(t), 0);
  inner_.fill_zero(t);
}

void ProfilingBackend::embedding(const Weight& table, std::span<const int32_t> ids, Tensor& out) {
  // Only the rows looked up are read.
  const double rows = static_cast<double>(ids.size()) * static_cast<double>(table.cols) *
                      static_cast<double>(dtype_size(table.tensor->dtype));
  if (active_ && touched_.insert(table.tensor).second) step_.weight_bytes += rows;
  Scope s(*this, "embedding", rows + tensor_bytes(out), 0);
  inner_.embedding(table, ids, out);
}

void ProfilingBackend::rms_norm(const Tensor& x, const Weight& weight, float eps, Tensor& out) {
  Scope s(*this, "rms_norm", touch(weight) + tensor_bytes(x) + tensor_bytes(out), 0);
  inner_.rms_norm(x, weight, eps, out);
}

void ProfilingBackend::rms_norm_cols(const Tensor& x, int64_t col_offset, const Weight& weight, float eps,
                                     Tensor& out) {
  Scope s(*this, "rms_norm", touch(weight) + 2 * tensor_bytes(out), 0);
  inner_.rms_norm_cols(x, col_offset, weight, eps, out);
}

void ProfilingBackend::linear(const Tensor& x, const Weight& w, Tensor& out) {
  const double flops =
      2.0 * static_cast<double>(x.rows()) * static_cast<double>(w.rows) * static_cast<double>(w.cols);
  Scope s(*this, "linear " + weight_role(w), touch(w) + tensor_bytes(x) + tensor_bytes(out), flops);
  inner_.linear(x, w, out);
}

void ProfilingBackend::add(Tensor& acc, const Tensor& x) {
  Scope s(*this, "add (residual)", 2 * tensor_bytes(acc) + tensor_bytes(x), 0);
  inner_.add(acc, x);
}

void ProfilingBackend::add_rms_norm(Tensor& residual, const Tensor& branch, const Weight& weight, float eps,
                                    Tensor& out) {
  Scope s(*this, "add_rms_norm (residual)",
          touch(weight) + 2 * tensor_bytes(residual) + tensor_bytes(branch) + tensor_bytes(out), 0);
  inner_.add_rms_norm(residual, branch, weight, eps, out);
}

void ProfilingBackend::silu_mul(const Tensor& gate_up, Tensor& out) {
  Scope s(*this, "silu_mul", tensor_bytes(gate_up) + tensor_bytes(out), 0);
  inner_.silu_mul(gate_up, out);
}

void ProfilingBackend::rope(Tensor& x, std::span<const int32_t> positions, int64_t num_heads,
                            int64_t head_dim, int64_t rope_offset, const RopeParams& rope) {
  const double bytes = 2.0 * static_cast<double>(x.rows()) * static_cast<double>(num_heads) * 2.0 *
                       static_cast<double>(rope.inv_freq.size()) * static_cast<double>(dtype_size(x.dtype));
  Scope s(*this, "rope", bytes, 0);
  inner_.rope(x, positions, num_heads, head_dim, rope_offset, rope);
}

void ProfilingBackend::store_kv(const Tensor& latent, const Tensor& k_rope_src, int64_t k_rope_col_offset,
                                std::span<const int64_t> slot_mapping, Tensor& kv_cache) {
  const double written = static_cast<double>(slot_mapping.size()) * static_cast<double>(kv_cache.cols()) *
                         static_cast<double>(dtype_size(kv_cache.dtype));
  if (active_) step_.kv_bytes += written;
  Scope s(*this, "store_kv", 2 * written, 0);
  inner_.store_kv(latent, k_rope_src, k_rope_col_offset, slot_mapping, kv_cache);
}

void ProfilingBackend::mla_attention(const MlaAttentionParams& p, const ForwardBatch& batch) {
  const double heads = static_cast<double>(p.num_heads), nope = static_cast<double>(p.qk_nope_head_dim),
               rope = static_cast<double>(p.qk_rope_head_dim), v = static_cast<double>(p.v_head_dim),
               lora = static_cast<double>(p.kv_lora_rank);
  double kv = 0, flops = 0;
  for (int64_t s = 0; s < batch.num_seqs(); ++s) {
    const double context = batch.seq_lens[static_cast<size_t>(s)];
    kv += context * static_cast<double>(p.kv_cache->cols()) *
          static_cast<double>(dtype_size(p.kv_cache->dtype));
    double absorbed = 0, expanded = 2.0 * context * lora * heads * (nope + v);
    for (int32_t t = batch.query_start_loc[s]; t < batch.query_start_loc[s + 1]; ++t) {
      const double keys = batch.positions[static_cast<size_t>(t)] + 1.0;
      absorbed += heads * (2 * nope * lora + 2 * keys * (lora + rope) + 2 * keys * lora + 2 * lora * v);
      expanded += heads * (2 * keys * (nope + rope) + 2 * keys * v);
    }
    flops += std::min(absorbed, expanded);
  }
  if (active_) step_.kv_bytes += kv;
  Scope s(*this, "mla_attention", touch(*p.kv_b_proj) + kv + tensor_bytes(*p.q) + tensor_bytes(*p.out),
          flops);
  inner_.mla_attention(p, batch);
}

void ProfilingBackend::moe_gate(const Tensor& x, const MoeGateParams& p, Tensor& topk_ids, Tensor& topk_weights) {
  double bytes = touch(*p.gate) + tensor_bytes(x);
  if (p.e_score_correction_bias != nullptr) bytes += touch(*p.e_score_correction_bias);
  const double flops = 2.0 * static_cast<double>(x.rows()) * static_cast<double>(p.gate->rows) *
                       static_cast<double>(p.gate->cols);
  Scope s(*this, "moe_gate (router GEMM, top-k)", bytes, flops);
  inner_.moe_gate(x, p, topk_ids, topk_weights);
}

void ProfilingBackend::moe_experts(const Tensor& x, std::span<const MlpWeights> experts, const Tensor& topk_ids_t,
                                   const Tensor& topk_weights, Tensor& out) {
  // Only a profiled step reads the choices back (a copy to the host and a wait): the timed steps, and the
  // recording of a CUDA graph, run the op alone.
  if (!active_) {
    inner_.moe_experts(x, experts, topk_ids_t, topk_weights, out);
    return;
  }
  std::vector<float> id_values(static_cast<size_t>(topk_ids_t.numel()));
  inner_.copy_to_host(topk_ids_t, id_values);
  const std::vector<int32_t> topk_ids(id_values.begin(), id_values.end());
  std::set<int32_t> used(topk_ids.begin(), topk_ids.end());
  double bytes = tensor_bytes(x) + 2 * tensor_bytes(out), flops = 0;
  std::vector<int64_t> count(experts.size(), 0);
  for (int32_t e : topk_ids)
    if (e >= 0 && static_cast<size_t>(e) < experts.size()) ++count[static_cast<size_t>(e)];
  for (int32_t e : used) {
    if (e < 0 || static_cast<size_t>(e) >= experts.size()) continue;
    const MlpWeights& w = experts[static_cast<size_t>(e)];
    bytes += touch(w.gate_proj) + touch(w.up_proj) + touch(w.down_proj);
    flops += 2.0 * static_cast<double>(count[static_cast<size_t>(e)]) *
             (2.0 * static_cast<double>(w.gate_proj.rows * w.gate_proj.cols) +
              static_cast<double>(w.down_proj.rows * w.down_proj.cols));
  }
  if (active_) {
    ++step_.moe_layers;
    step_.experts_touched += static_cast<int64_t>(used.size());
  }
  Scope s(*this, "moe_experts (routed)", bytes, flops);
  inner_.moe_experts(x, experts, topk_ids_t, topk_weights, out);
}

void ProfilingBackend::mlp(const Tensor& x, const MlpWeights& w, Tensor& out) {
  const bool shared = w.gate_proj.name().find("shared_experts") != std::string::npos;
  const double flops = 2.0 * static_cast<double>(x.rows()) *
                       (2.0 * static_cast<double>(w.gate_proj.rows * w.gate_proj.cols) +
                        static_cast<double>(w.down_proj.rows * w.down_proj.cols));
  const double bytes =
      touch(w.gate_proj) + touch(w.up_proj) + touch(w.down_proj) + tensor_bytes(x) + tensor_bytes(out);
  Scope s(*this, shared ? "mlp (shared experts)" : "mlp (dense layers)", bytes, flops);
  inner_.mlp(x, w, out);
}

void ProfilingBackend::gather_rows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) {
  Scope s(*this, "gather_rows", 2 * tensor_bytes(out), 0);
  inner_.gather_rows(x, rows, out);
}

}  // namespace ds::bench
