// CUDA graphs of decode steps: which batch sizes are captured, how a decode batch is padded to one, and what
// a capture reports. The capture and the replay are DeepseekModel's (decode_graphs.cpp); these helpers are
// plain C++ and tested without a GPU.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace ds {

// What DeepseekModel::capture_decode_graphs did.
struct DecodeGraphSummary {
  std::vector<int64_t> sizes;  // the batch sizes captured, ascending; empty when none
  double seconds = 0.0;        // warm-up and capture, all sizes
  int64_t memory_bytes = 0;    // device memory the graphs hold
  std::string failure;         // why nothing was captured (decode steps then run eagerly); empty on success
  // One line for the start-up log.
  [[nodiscard]] std::string line() const;
};

// 1, 2, 4, ..., 256, none above max_num_seqs; max_num_seqs itself too when it is below 256 and not a power of
// two (so that every batch the scheduler makes has a graph).
[[nodiscard]] std::vector<int64_t> decode_graph_sizes(int64_t max_num_seqs);
// The smallest of `sizes` (ascending) holding n sequences; 0 when none does.
[[nodiscard]] int64_t padded_decode_size(std::span<const int64_t> sizes, int64_t n);
// A decode batch (ForwardBatch::is_decode) grown to `size` sequences. Each padding sequence computes token 0
// at position 0 with a context of one token, reading the first key of the first sequence (written, so finite)
// and storing nothing (slot -1); its logits row follows the batch's and is not returned.
[[nodiscard]] ForwardBatch pad_decode_batch(const ForwardBatch& batch, int64_t size);
// The batch a graph of `size` sequences is warmed up and captured with: every sequence as a padding one, but
// storing its key in slot 0 (so the warm-up reads a key it wrote).
[[nodiscard]] ForwardBatch capture_batch(int64_t size);

}  // namespace ds
