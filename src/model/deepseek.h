// The DeepSeek V2/V3 decoder (MLA attention + DeepSeekMoE), written once against the Backend op interface.
#pragma once

#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/weights.h"

namespace ds {

class DeepseekModel {
 public:
  // Reads config.json, maps the safetensors shards and binds every weight; throws ConfigError/CheckpointError.
  static std::unique_ptr<DeepseekModel> load(const std::filesystem::path& dir, Backend& backend);
  DeepseekModel(ModelConfig config, Checkpoint checkpoint, Backend& backend);

  [[nodiscard]] const ModelConfig& config() const { return config_; }
  [[nodiscard]] const Checkpoint& checkpoint() const { return checkpoint_; }
  // The backend the model runs on (to copy the logits of forward() to the host).
  [[nodiscard]] Backend& backend() const { return backend_; }

  // The MLA latent cache: per layer [num_blocks * block_size, kv_lora_rank + qk_rope_head_dim].
  void allocate_kv_cache(int64_t num_blocks, int32_t block_size);
  [[nodiscard]] int64_t num_kv_blocks() const { return num_kv_blocks_; }
  // The CPU swap pool, same layout; and block copies for swap-out (device -> pool), swap-in (pool -> device)
  // and copy-on-write (device -> device), every layer at once.
  void allocate_swap_space(int64_t num_blocks);
  void swap_out(std::span<const BlockMove> moves);
  void swap_in(std::span<const BlockMove> moves);
  void copy_blocks(std::span<const BlockMove> moves);
  // Bytes of one KV block across all layers (for sizing the cache from a memory budget).
  [[nodiscard]] int64_t kv_block_bytes(int32_t block_size) const;
  [[nodiscard]] int32_t block_size() const { return block_size_; }

  // Runs one step: writes each token's latent KV into its slot, returns logits [logits_indices.size(), vocab]
  // in F32 on the backend (read them with backend().copy_to_host). The residual stream is F32 on every backend.
  // With a trace, also copies the residual stream [T, hidden] to the host after the embedding and after each
  // decoder layer, then the final-normed rows: the same list HF returns as hidden_states, for layer-by-layer
  // comparison with another backend or the reference.
  [[nodiscard]] Tensor forward(const ForwardBatch& batch, std::vector<std::vector<float>>* trace = nullptr);

 private:
  // x: normed hidden [T, hidden] -> out [T, hidden]
  void attention(int64_t layer, const Tensor& x, const ForwardBatch& batch, Tensor& out);
  void moe(const MoeWeights& w, const Tensor& x, Tensor& out);

  ModelConfig config_;
  Checkpoint checkpoint_;
  ModelWeights weights_;
  Backend& backend_;
  RopeParams rope_;
  float softmax_scale_ = 0.0f;
  std::vector<Tensor> kv_cache_;
  std::vector<Tensor> swap_space_;
  int64_t num_kv_blocks_ = 0;
  int32_t block_size_ = 0;
};

}  // namespace ds
