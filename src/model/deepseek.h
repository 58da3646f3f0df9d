// The DeepSeek V2/V3 decoder (MLA attention + DeepSeekMoE), written once against the Backend op interface.
#pragma once

#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/decode_graphs.h"
#include "model/runner.h"
#include "model/shard.h"
#include "model/weights.h"
#include "parallel/communicator.h"

namespace ds {

// Where a model instance sits in a tensor-parallel group: its slice of the weights and the group's
// communicator (null at size 1). All ranks of a group run the same forward calls in lockstep.
struct ModelParallel {
  TensorParallel tp;
  Communicator* comm = nullptr;
};

// One rank's model: a ModelRunner by itself at world size 1 (the engine's model), or one rank of a
// TensorParallelRunner.
class DeepseekModel final : public ModelRunner {
 public:
  // Reads config.json, maps the safetensors shards and binds every weight (this rank's slice of it under
  // tensor parallelism); throws ConfigError/CheckpointError, UserError for a layout the config cannot split.
  static std::unique_ptr<DeepseekModel> load(const std::filesystem::path& dir, Backend& backend,
                                             ModelParallel parallel = {});
  DeepseekModel(ModelConfig config, Checkpoint checkpoint, Backend& backend, ModelParallel parallel = {});

  [[nodiscard]] const ModelConfig& config() const override { return config_; }
  [[nodiscard]] const Checkpoint& checkpoint() const { return checkpoint_; }
  // The backend the model runs on (to copy the logits of forward() to the host).
  [[nodiscard]] Backend& backend() const override { return backend_; }

  // The MLA latent cache: per layer [num_blocks * block_size, kv_lora_rank + qk_rope_head_dim].
  void allocate_kv_cache(int64_t num_blocks, int32_t block_size) override;
  [[nodiscard]] int64_t num_kv_blocks() const override { return num_kv_blocks_; }
  // The CPU swap pool, same layout; and block copies for swap-out (device -> pool), swap-in (pool -> device)
  // and copy-on-write (device -> device), every layer at once.
  void allocate_swap_space(int64_t num_blocks) override;
  void swap_out(std::span<const BlockMove> moves) override;
  void swap_in(std::span<const BlockMove> moves) override;
  void copy_blocks(std::span<const BlockMove> moves) override;
  // Bytes of one KV block across all layers (for sizing the cache from a memory budget).
  [[nodiscard]] int64_t kv_block_bytes(int32_t block_size) const override;
  [[nodiscard]] int32_t block_size() const override { return block_size_; }

  // Runs one step: writes each token's latent KV into its slot, returns logits [logits_indices.size(), vocab]
  // in F32 on the backend (read them with backend().copy_to_host). The residual stream is F32 on every backend.
  // With a trace, also copies the residual stream [T, hidden] to the host after the embedding and after each
  // decoder layer, then the final-normed rows: the same list HF returns as hidden_states, for layer-by-layer
  // comparison with another backend or the reference.
  // A decode batch (ForwardBatch::is_decode) of at most the largest captured size replays the decode graph of
  // the next size up instead (see capture_decode_graphs); its logits are then rows of that graph's output
  // buffer, valid until the next forward.
  [[nodiscard]] Tensor forward(const ForwardBatch& batch, std::vector<std::vector<float>>* trace);
  [[nodiscard]] Tensor forward(const ForwardBatch& batch) override { return forward(batch, nullptr); }

  // CUDA graphs of decode steps (decode_graphs.cpp), one per batch size in `sizes` (ascending), for tables
  // of up to max_blocks_per_seq blocks per sequence: each size is run once (the warm-up) and then recorded.
  // Call it after allocate_kv_cache and before the cache holds anything: the warm-up writes slot 0. Sizes
  // that are not captured and other batches run eagerly. A step that cannot be recorded (an op that copies
  // to the host) leaves no graph, and the summary says why; errors of the warm-up itself are thrown.
  DecodeGraphSummary capture_decode_graphs(std::span<const int64_t> sizes, int32_t max_blocks_per_seq) override;
  void clear_decode_graphs();
  // The captured size a batch would replay at; 0 when it runs eagerly.
  [[nodiscard]] int64_t decode_graph_size(const ForwardBatch& batch) const;
  // forward() without graphs: every op queued from the host (--enforce-eager's path, and the reference the
  // graphs are tested against). With logits_into, the logits are written there ([logits rows, vocab], F32);
  // table_pitch as in Backend::stage_step.
  [[nodiscard]] Tensor forward_eager(const ForwardBatch& batch, std::vector<std::vector<float>>* trace = nullptr,
                                     const Tensor* logits_into = nullptr, int32_t table_pitch = 0);

 private:
  struct DecodeGraph {
    int64_t size = 0;    // sequences
    int64_t handle = 0;  // Backend::replay_graph's
    Tensor logits;       // [size, vocab] the graph's output, allocated before it was recorded
  };
  [[nodiscard]] Tensor replay_decode_graph(const ForwardBatch& batch, int64_t size);

  // x: normed hidden [T, hidden] -> out [T, hidden]
  void attention(int64_t layer, const Tensor& x, const ForwardBatch& batch, Tensor& out);
  // x: normed hidden [T, hidden] for the experts; router_x: the same in F32 for the router (HF computes the
  // router in fp32: a bf16-rounded input flips near-tied expert choices).
  void moe(const MoeWeights& w, const Tensor& x, const Tensor& router_x, Tensor& out);

  // Sums a row-parallel output's partial results over the tensor-parallel group (nothing at size 1).
  void reduce_partial(Tensor& t);

  ModelConfig config_;
  Checkpoint checkpoint_;
  ModelParallel parallel_;
  int64_t local_heads_ = 0;  // attention heads of this rank: num_attention_heads / tp
  ShardStore shards_;        // the sliced weights' views and copies (before weights_, which points into it)
  ModelWeights weights_;
  Backend& backend_;
  RopeParams rope_;
  float softmax_scale_ = 0.0f;
  std::vector<Tensor> kv_cache_;
  std::vector<Tensor> swap_space_;
  int64_t num_kv_blocks_ = 0;
  int32_t block_size_ = 0;
  std::vector<DecodeGraph> decode_graphs_;  // ascending sizes
  int32_t graph_table_pitch_ = 0;
};

}  // namespace ds
