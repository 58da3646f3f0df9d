// Tensor-parallel slices of the weights (DESIGN.md, Parallelism): which rows or columns of each weight a rank
// of a tensor-parallel group holds, and the views that hold them.
//
// - q_proj / q_b_proj and kv_b_proj: the rows of this rank's heads (column-parallel: the outputs split);
// - o_proj: the columns of this rank's heads (row-parallel: partial sums, all-reduced by the model);
// - the dense MLP, every expert and the shared experts: gate/up rows and down columns of this rank's share of
//   the intermediate; with expert_parallel the routed experts stay whole instead, a run of them per rank, the
//   others' left empty (their tokens add nothing on this rank);
// - q_a_proj, kv_a_proj, the norms, the router, embed_tokens and lm_head: whole on every rank.
//
// A row slice is a view into the mapped checkpoint (no copy; the CUDA upload reads only its bytes). A column
// slice is a copy. FP8 block scales stay exact: a slice that starts on a scale-block boundary keeps FP8 with
// the slice of the scales; one that does not is dequantized to F32 (the tiny fixtures' shapes; DeepSeek's
// own are all block-aligned at TP 2, 4 and 8).
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <vector>

#include "backend/tensor.h"
#include "model/config.h"
#include "model/weights.h"

namespace ds {

// This rank's place in the tensor-parallel group.
struct TensorParallel {
  int size = 1;
  int rank = 0;
  // --enable-expert-parallel: the routed experts whole on ranks (n_routed_experts / size each, rank r the r-th
  // run of them) instead of each sliced; a rank's MoE output is then its own experts' share, all-reduced.
  bool expert_parallel = false;
};

// Throws UserError, with the numbers, when config's shapes cannot be split `tp` ways (heads, the dense and
// expert intermediate sizes must divide).
void validate_tensor_parallel(const ModelConfig& config, int tp, bool expert_parallel = false);

// The views and bytes of sliced weights; must outlive the weights that point into it.
class ShardStore {
 public:
  const TensorView* add(TensorView view, std::unique_ptr<std::byte[]> bytes = nullptr);

 private:
  std::deque<TensorView> views_;  // stable addresses
  std::vector<std::unique_ptr<std::byte[]>> bytes_;
};

// Replaces every weight of w with rank tp.rank's slice (a no-op at tp.size 1).
void shard_weights(ModelWeights& w, const ModelConfig& config, TensorParallel tp, ShardStore& store);

// Rows [r0, r1) and columns [c0, c1) of a weight (exposed for tests).
[[nodiscard]] Weight weight_rows(const Weight& w, int64_t r0, int64_t r1, ShardStore& store);
[[nodiscard]] Weight weight_cols(const Weight& w, int64_t c0, int64_t c1, ShardStore& store);

}  // namespace ds
