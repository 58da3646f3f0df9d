// The seam between the engine (requests, scheduler, block manager) and the model (DESIGN.md, Parallelism;
// nano-vllm's ModelRunner): what the engine asks of "the model", whether that is one DeepseekModel on one
// device or the ranks of a parallel group. The engine passes flat step descriptions (ForwardBatch, block
// moves) and gets logits on backend(); it never sees a rank.
#pragma once

#include <span>
#include <vector>

#include "backend/backend.h"
#include "model/config.h"
#include "model/decode_graphs.h"

namespace ds {

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  [[nodiscard]] virtual const ModelConfig& config() const = 0;
  // Where forward()'s logits live (the first rank's backend in a group): read or sample them there.
  [[nodiscard]] virtual Backend& backend() const = 0;

  // The paged latent KV cache (every rank holds every sequence's latent under TP) and the CPU swap pool.
  virtual void allocate_kv_cache(int64_t num_blocks, int32_t block_size) = 0;
  [[nodiscard]] virtual int64_t num_kv_blocks() const = 0;
  [[nodiscard]] virtual int32_t block_size() const = 0;
  [[nodiscard]] virtual int64_t kv_block_bytes(int32_t block_size) const = 0;
  virtual void allocate_swap_space(int64_t num_blocks) = 0;
  virtual void swap_out(std::span<const BlockMove> moves) = 0;
  virtual void swap_in(std::span<const BlockMove> moves) = 0;
  virtual void copy_blocks(std::span<const BlockMove> moves) = 0;

  // One step: logits [batch.logits_indices.size(), vocab] in F32 on backend().
  [[nodiscard]] virtual Tensor forward(const ForwardBatch& batch) = 0;
  // CUDA graphs of decode steps (DeepseekModel::capture_decode_graphs).
  virtual DecodeGraphSummary capture_decode_graphs(std::span<const int64_t> sizes,
                                                   int32_t max_blocks_per_seq) = 0;
};

}  // namespace ds
