// The op interface every backend implements, and the ForwardBatch that describes one model step.
//
// Model code (src/model) is written once against Backend; the CPU backend is the fp32 reference, the CUDA
// backend (src/backend/cuda) implements the same ops and is tested op by op against it (tests/gpu).
// Ops accept tensors of either activation dtype the backend makes (empty / empty_f32) and write out's dtype.
// Host-side arguments (ids, positions, slot mappings, the ForwardBatch) stay host-side: a device backend copies
// what it needs. The router's choices are backend tensors: they never leave the device.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "backend/tensor.h"

namespace ds {

// One engine step: the new tokens of several sequences, flattened.
struct ForwardBatch {
  std::vector<int32_t> token_ids;        // [num_tokens]
  std::vector<int32_t> positions;        // [num_tokens] position of each token within its sequence
  std::vector<int32_t> query_start_loc;  // [num_seqs + 1] CSR offsets of each sequence's tokens
  std::vector<int32_t> seq_lens;         // [num_seqs] context length including this step's tokens
  std::vector<int32_t> block_table;      // [num_seqs, max_blocks_per_seq] KV block ids, row-major
  int32_t max_blocks_per_seq = 0;
  std::vector<int64_t> slot_mapping;     // [num_tokens] KV slot = block_id * block_size + offset; -1: the
                                         // token's KV is not stored (padding rows of a captured decode graph)
  std::vector<int32_t> logits_indices;   // token rows whose logits are returned, in order

  [[nodiscard]] int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
  [[nodiscard]] int64_t num_seqs() const { return static_cast<int64_t>(seq_lens.size()); }
  // Checks the shapes agree with each other (a broken batch is our bug, not the user's).
  void validate(int64_t num_kv_slots, int32_t block_size) const;
  // Every sequence computes exactly one new token and every token's logits are returned, in order: the steps
  // a decode graph replays.
  [[nodiscard]] bool is_decode() const;
};

// One KV block copied from block src of one cache to block dst of another (or the same) cache.
struct BlockMove {
  int32_t src = 0;
  int32_t dst = 0;
  bool operator==(const BlockMove&) const = default;
};

// YaRN-aware rotary table: cos/sin(position * inv_freq[i]) * attention_factor, DeepSeek's interleaved pairs.
struct RopeParams {
  std::vector<float> inv_freq;  // [rotary_dim / 2]
  float attention_factor = 1.0f;
};

struct MlaAttentionParams {
  const Tensor* q = nullptr;         // [num_tokens, num_heads * qk_head_dim], per head: nope | rope (rotated)
  const Tensor* kv_cache = nullptr;  // [num_kv_slots, kv_lora_rank + qk_rope_head_dim]: latent | rope key
  const Weight* kv_b_proj = nullptr; // [num_heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank]
  Tensor* out = nullptr;             // [num_tokens, num_heads * v_head_dim]
  int64_t num_heads = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t kv_lora_rank = 0;
  int32_t block_size = 0;
  float softmax_scale = 0.0f;
};

// How experts are chosen. greedy: plain top-k. group_limited_greedy (V2): groups ranked by their best expert.
// noaux_tc (V3): groups ranked by the sum of their two best bias-corrected scores.
enum class TopkMethod { kGreedy, kGroupLimitedGreedy, kNoauxTc };
enum class ScoringFunc { kSoftmax, kSigmoid };

struct MoeGateParams {
  const Weight* gate = nullptr;                   // [n_routed_experts, hidden]
  const Weight* e_score_correction_bias = nullptr;  // [n_routed_experts] or empty
  int64_t top_k = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  TopkMethod topk_method = TopkMethod::kGreedy;
  ScoringFunc scoring_func = ScoringFunc::kSoftmax;
  bool norm_topk_prob = false;
  float routed_scaling_factor = 1.0f;
};

struct MlpWeights {
  Weight gate_proj;  // [intermediate, hidden]
  Weight up_proj;    // [intermediate, hidden]
  Weight down_proj;  // [hidden, intermediate]
};

// How prepare_weights moved the weights to the device: wall seconds, and the reader threads' seconds summed
// (reading the checkpoint into staging memory; waiting for a staging buffer's copy to the device to finish).
struct WeightUploadStats {
  int threads = 0;
  double wall_s = 0, read_s = 0, wait_s = 0;
};

// Device memory as a GPU backend sees it (Backend::device_memory).
struct DeviceMemoryInfo {
  int64_t free_bytes = 0, total_bytes = 0;  // the driver's view: every process and allocation on the device
  // free_bytes when the backend started (its CUDA context included, none of its allocations): total_bytes less
  // this is what other processes (and the context) held, which --gpu-memory-utilization does not count.
  int64_t free_at_start_bytes = 0;
  int64_t weight_bytes = 0;                 // what prepare_weight uploaded
  // The high-water mark of the backend's stream-ordered allocations (activations, workspaces, the KV cache)
  // since reset_memory_peak.
  int64_t peak_pool_bytes = 0;
  WeightUploadStats weight_upload;
};

// One token's logit_bias (SamplingParams::logit_bias, SampleRequest::logit_bias).
struct LogitBias {
  int32_t token = 0;
  float bias = 0.0f;
  friend bool operator==(const LogitBias&, const LogitBias&) = default;
};

// Why a row yields no token (SampleResult::status): the raw logits have NaN or no finite maximum (a fault of
// the model's output), or every token of the penalized row is masked.
enum class SampleStatus : int32_t { kOk = 0, kBadLogits = 1, kAllMasked = 2 };

// One token to draw from one row of logits on the backend's device (Backend::sample). The math is the engine's
// Sampler (src/engine/sampler.h) step for step, which the engine turns its SamplingParams into this for: the
// penalties and the min_tokens mask, then greedy argmax, or temperature, top-k, top-p, min-p and an inverse-CDF
// draw in id order at `uniform`.
struct SampleRequest {
  int32_t row = 0;          // the logits row; several requests may share one (n > 1 samples of one prompt)
  bool greedy = false;      // argmax of the penalized row, ties to the lower id; the sampling fields are unused
  float inv_temperature = 1.0f;  // float(1 / temperature), > 0
  int64_t top_k = 0;             // on when 0 < top_k < vocab
  double top_p = 1.0;            // (0, 1]; on when < 1
  float min_p = 0.0f;            // [0, 1]; on when > 0
  double repetition_penalty = 1.0;  // > 0, over every distinct token of prompt_ids and output_ids
  double frequency_penalty = 0.0;   // times the count of each token in output_ids
  double presence_penalty = 0.0;    // once for each distinct token in output_ids
  std::span<const int32_t> prompt_ids = {};
  std::span<const int32_t> output_ids = {};
  std::span<const LogitBias> logit_bias = {};  // added first; distinct tokens
  std::span<const int32_t> allowed_ids = {};  // when not empty, every other token is -inf after the penalties
  std::vector<int32_t> masked_ids;  // -inf after the penalties (EOS and stop ids under min_tokens)
  int32_t num_top_logprobs = 0;              // [0, kMaxSampleTopLogprobs]
  double uniform = 0.0;                      // [0, 1), drawn on the host from the sequence's own generator
};
constexpr int32_t kMaxSampleTopLogprobs = 20;

struct SampleResult {
  SampleStatus status = SampleStatus::kOk;  // not kOk: nothing else is set, and only this request failed
  int32_t token = 0;
  float logprob = 0.0f;               // log-softmax of the raw row at token
  std::vector<int32_t> top_ids;       // num_top_logprobs best of the raw row, best first (ties: lower id)
  std::vector<float> top_logprobs;    // their log-softmax
};

class Backend {
 public:
  virtual ~Backend() = default;

  // Makes w usable by this backend's ops, once, before the first forward (the model calls it for every weight
  // it binds). The CPU backend reads the mmapped checkpoint in place and does nothing; the CUDA backend
  // uploads the weight as stored and sets w.device_data / w.device_scale_inv; a Weight already prepared is
  // left as it is. Weights that view one tensor (tied embeddings) are the caller's to share: prepare one and
  // copy it to the others.
  virtual void prepare_weight(Weight& w) {}
  // prepare_weight for many at once (the CUDA backend uploads them in parallel).
  virtual void prepare_weights(std::span<Weight* const> weights) {
    for (Weight* w : weights) prepare_weight(*w);
  }

  // An uninitialized activation tensor in the backend's compute dtype (CPU: F32, CUDA: BF16).
  [[nodiscard]] virtual Tensor empty(std::vector<int64_t> shape) = 0;
  // The dtype of empty()'s tensors, which the KV cache uses too.
  [[nodiscard]] virtual DType activation_dtype() const { return DType::kF32; }
  // A GPU's memory; nullopt where there is no device (CPU).
  [[nodiscard]] virtual std::optional<DeviceMemoryInfo> device_memory() { return std::nullopt; }
  // Waits for the device, returns cached free memory to the driver and starts a new peak_pool_bytes.
  virtual void reset_memory_peak() {}
  // An uninitialized activation tensor held in F32 on every backend: for the residual stream (and the branch
  // outputs added to it) and the logits, where bf16 rounding would add up over the layers or reach the
  // log-probs directly.
  [[nodiscard]] virtual Tensor empty_f32(std::vector<int64_t> shape) = 0;
  // An uninitialized int32 tensor in the backend's memory (the router's expert ids).
  [[nodiscard]] virtual Tensor empty_i32(std::vector<int64_t> shape) = 0;
  // An uninitialized tensor in host memory the backend can copy to and from quickly (the KV swap pool).
  [[nodiscard]] virtual Tensor empty_host(std::vector<int64_t> shape) = 0;
  // Copies whole blocks ([block_size] rows each) between caches of the same width; either may be host memory.
  virtual void copy_blocks(const Tensor& from, Tensor& to, std::span<const BlockMove> moves, int32_t block_size) = 0;
  [[nodiscard]] Tensor zeros(std::vector<int64_t> shape);
  virtual void fill_zero(Tensor& t) = 0;
  // Copies (and converts to fp32) every element of t to the host; returns when the data is there. I32 tensors
  // convert exactly (their values stay below 2^24).
  virtual void copy_to_host(const Tensor& t, std::span<float> out) = 0;
  // Copies host fp32 values into t, converting to t's dtype (rounding to nearest even for bf16; I32 takes
  // integral values only).
  virtual void copy_from_host(std::span<const float> in, Tensor& t) = 0;

  // out[t, :] = table[ids[t], :]
  virtual void embedding(const Weight& table, std::span<const int32_t> ids, Tensor& out) = 0;
  // out = x / sqrt(mean(x^2) + eps) * weight, row by row over the last dimension.
  virtual void rms_norm(const Tensor& x, const Weight& weight, float eps, Tensor& out) = 0;
  // out[:, col_offset : col_offset + width] of x, normalized (used for the latent part of kv_a output).
  virtual void rms_norm_cols(const Tensor& x, int64_t col_offset, const Weight& weight, float eps, Tensor& out) = 0;
  // out[T, N] = x[T, K] @ w[N, K]^T
  virtual void linear(const Tensor& x, const Weight& w, Tensor& out) = 0;
  // acc += x
  virtual void add(Tensor& acc, const Tensor& x) = 0;
  // residual += branch, then out = rms_norm(residual): the two steps between every attention and MLP, which a
  // GPU backend fuses into one pass over the residual stream.
  virtual void add_rms_norm(Tensor& residual, const Tensor& branch, const Weight& weight, float eps, Tensor& out) {
    add(residual, branch);
    rms_norm(residual, weight, eps, out);
  }
  // out[T, I] = silu(gate_up[:, :I]) * gate_up[:, I:]  where gate_up is [T, 2I]
  virtual void silu_mul(const Tensor& gate_up, Tensor& out) = 0;
  // Rotates, in place, the rope part of every head: x[t, h*head_dim + rope_offset + (0..rotary_dim)].
  virtual void rope(Tensor& x, std::span<const int32_t> positions, int64_t num_heads, int64_t head_dim,
                    int64_t rope_offset, const RopeParams& rope) = 0;
  // Writes rows of latent [T, kv_lora] (normalized) and k_rope [T, rope] into cache slots.
  virtual void store_kv(const Tensor& latent, const Tensor& k_rope_src, int64_t k_rope_col_offset,
                        std::span<const int64_t> slot_mapping, Tensor& kv_cache) = 0;
  // Causal multi-head latent attention over the paged cache (every token's keys are already stored).
  virtual void mla_attention(const MlaAttentionParams& p, const ForwardBatch& batch) = 0;
  // Router: writes topk_ids [T, top_k] (I32, from empty_i32) and topk_weights [T, top_k] (F32), tensors of
  // this backend, so a device backend keeps the routing on the device (no copy to the host, no wait).
  virtual void moe_gate(const Tensor& x, const MoeGateParams& p, Tensor& topk_ids, Tensor& topk_weights) = 0;
  // out += sum_k topk_weights[t,k] * expert[topk_ids[t,k]](x[t]), with top_k = topk_ids.cols(). An id outside
  // [0, experts) is a bug of the caller: the CPU backend throws; a device backend skips that pair. An expert
  // with empty weights is another rank's (expert parallel): its pairs add nothing here (CPU backend only).
  virtual void moe_experts(const Tensor& x, std::span<const MlpWeights> experts, const Tensor& topk_ids,
                           const Tensor& topk_weights, Tensor& out) = 0;
  // out = down(silu(gate(x)) * up(x))
  virtual void mlp(const Tensor& x, const MlpWeights& w, Tensor& out) = 0;
  // out[i, :] = x[rows[i], :]
  virtual void gather_rows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) = 0;

  // One step's host arrays on the device. The model calls stage_step(batch) before the step's ops and
  // unstage_step() after them; in between, an op given one of the batch's own arrays (the same data() and size)
  // may read the backend's copy instead of copying it again. A device backend copies all of them at once, to
  // device buffers whose addresses a captured graph can keep. table_pitch > 0 lays the block table out with
  // that many entries per sequence on the device (a graph's fixed width; the host rows keep
  // max_blocks_per_seq, the rest of each device row is never read). The CPU reads the host arrays.
  virtual void stage_step(const ForwardBatch& batch, int32_t table_pitch = 0) {}
  virtual void unstage_step() {}

  // CUDA graphs (DESIGN.md: backend/cuda). A backend without them answers false and throws from the rest.
  // Between begin_capture and end_capture every op is recorded instead of run (host-side checks still run,
  // on the arguments seen at capture); replay_graph runs the recording again on whatever the step buffers
  // (stage_step) and the tensors it used hold then. end_capture throws if an op could not be recorded (it
  // copied to the host, or synchronized); the backend is usable again afterwards.
  [[nodiscard]] virtual bool supports_graphs() const { return false; }
  virtual void begin_capture();
  [[nodiscard]] virtual int64_t end_capture();  // a handle for replay_graph
  virtual void replay_graph(int64_t graph);
  // Drops every captured graph and the memory its recorded allocations hold.
  virtual void clear_graphs() {}
  // Device memory held by captured graphs (their recorded allocations).
  [[nodiscard]] virtual int64_t graph_memory_bytes() { return 0; }

  // One token per request from logits [rows, vocab] (F32) on the device, copying back only out's contents.
  // Returns false, touching nothing, where the backend does not sample (the CPU backend: the engine's Sampler
  // on the host rows is its reference). A row with NaN, or with every token masked, is that request's
  // SampleResult::status, the others are sampled as usual. A malformed request (a row or an id out of
  // range) is the caller's bug: InternalError.
  virtual bool sample(const Tensor& logits, std::span<const SampleRequest> requests, std::span<SampleResult> out) {
    return false;
  }
};

// Backend::stage_step for a scope: unstage_step however the scope is left.
class StepScope {
 public:
  StepScope(Backend& backend, const ForwardBatch& batch, int32_t table_pitch = 0) : backend_(backend) {
    backend_.stage_step(batch, table_pitch);
  }
  ~StepScope() { backend_.unstage_step(); }
  StepScope(const StepScope&) = delete;
  StepScope& operator=(const StepScope&) = delete;

 private:
  Backend& backend_;
};

}  // namespace ds
