#include "model/decode_graphs.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "model/deepseek.h"
#include "util/check.h"

namespace ds {

std::string DecodeGraphSummary::line() const {
  if (sizes.empty()) return fmt::format("warning: no CUDA graphs, decode steps run eagerly: {}", failure);
  return fmt::format("captured CUDA graphs for {} decode batch sizes ({}..{}) in {:.1f} s, {:.0f} MiB",
                     sizes.size(), sizes.front(), sizes.back(), seconds,
                     static_cast<double>(memory_bytes) / (1 << 20));
}

std::vector<int64_t> decode_graph_sizes(int64_t max_num_seqs) {
  constexpr int64_t kLargest = 256;
  std::vector<int64_t> sizes;
  for (int64_t s = 1; s <= std::min(max_num_seqs, kLargest); s *= 2) sizes.push_back(s);
  if (max_num_seqs < kLargest && (sizes.empty() || sizes.back() != max_num_seqs))
    sizes.push_back(max_num_seqs);
  return sizes;
}

int64_t padded_decode_size(std::span<const int64_t> sizes, int64_t n) {
  const auto it = std::lower_bound(sizes.begin(), sizes.end(), n);
  return it == sizes.end() ? 0 : *it;
}

ForwardBatch pad_decode_batch(const ForwardBatch& batch, int64_t size) {
  DS_CHECK(batch.is_decode() && batch.num_seqs() >= 1 && batch.num_seqs() <= size,
           "padding a batch of {} tokens for {} sequences to {}", batch.num_tokens(), batch.num_seqs(), size);
  ForwardBatch b = batch;
  const auto n = static_cast<size_t>(size);
  const int32_t width = std::max(batch.max_blocks_per_seq, 1);
  const int32_t first_block = batch.max_blocks_per_seq > 0 ? batch.block_table[0] : 0;
  if (batch.max_blocks_per_seq == 0) {  // a batch without a table cannot be: every context has a block
    b.block_table.assign(static_cast<size_t>(batch.num_seqs()), 0);
    b.max_blocks_per_seq = 1;
  }
  for (size_t i = static_cast<size_t>(batch.num_seqs()); i < n; ++i) {
    b.token_ids.push_back(0);
    b.positions.push_back(0);
    b.slot_mapping.push_back(-1);
    b.query_start_loc.push_back(static_cast<int32_t>(i + 1));
    b.seq_lens.push_back(1);
    b.logits_indices.push_back(static_cast<int32_t>(i));
    b.block_table.insert(b.block_table.end(), static_cast<size_t>(width), first_block);
  }
  return b;
}

ForwardBatch capture_batch(int64_t size) {
  ForwardBatch b;
  const auto n = static_cast<size_t>(size);
  b.token_ids.assign(n, 0);
  b.positions.assign(n, 0);
  b.slot_mapping.assign(n, 0);  // all the same key, the same value (same token, same position)
  b.query_start_loc.resize(n + 1);
  for (size_t i = 0; i <= n; ++i) b.query_start_loc[i] = static_cast<int32_t>(i);
  b.seq_lens.assign(n, 1);
  b.block_table.assign(n, 0);
  b.max_blocks_per_seq = 1;
  b.logits_indices.resize(n);
  for (size_t i = 0; i < n; ++i) b.logits_indices[i] = static_cast<int32_t>(i);
  return b;
}

DecodeGraphSummary DeepseekModel::capture_decode_graphs(std::span<const int64_t> sizes,
                                                        int32_t max_blocks_per_seq) {
  DS_CHECK(!kv_cache_.empty(), "allocate_kv_cache before capture_decode_graphs");
  DS_CHECK(std::is_sorted(sizes.begin(), sizes.end()) && !sizes.empty() && sizes.front() >= 1,
           "decode graph sizes must be ascending and positive");
  DS_CHECK(max_blocks_per_seq >= 1, "decode graphs for {} blocks per sequence", max_blocks_per_seq);
  clear_decode_graphs();
  DecodeGraphSummary summary;
  if (!backend_.supports_graphs()) {
    summary.failure = "the backend has no graphs (the CPU, or DEEPSERVE_CUDA_SYNC)";
    return summary;
  }
  const auto t0 = std::chrono::steady_clock::now();
  graph_table_pitch_ = max_blocks_per_seq;
  // Largest first: its warm-up grows the step and scratch buffers to what every smaller graph needs, before
  // the first capture fixes their addresses.
  for (auto it = sizes.rbegin(); it != sizes.rend(); ++it) {
    const int64_t size = *it;
    const ForwardBatch batch = capture_batch(size);
    DecodeGraph graph;
    graph.size = size;
    graph.logits =
        backend_.empty_f32({size, config_.vocab_size});  // outside the graph: it outlives the replay
    // The warm-up: GEMM plans, kernel attributes, buffers, all made where nothing is recorded.
    (void)forward_eager(batch, nullptr, &graph.logits, max_blocks_per_seq);
    backend_.begin_capture();
    try {
      (void)forward_eager(batch, nullptr, &graph.logits, max_blocks_per_seq);
    } catch (const std::exception& e) {
      try {
        (void)backend_.end_capture();
      } catch (const std::exception&) {
        // The recording was broken by the op that threw; that op's error is the one to report.
      }
      clear_decode_graphs();
      summary.failure = fmt::format("capturing the {}-sequence step failed: {}", size, e.what());
      return summary;
    }
    try {
      graph.handle = backend_.end_capture();
    } catch (const std::exception& e) {
      clear_decode_graphs();
      summary.failure = fmt::format("capturing the {}-sequence step failed: {}", size, e.what());
      return summary;
    }
    decode_graphs_.push_back(std::move(graph));
  }
  std::reverse(decode_graphs_.begin(), decode_graphs_.end());
  for (const DecodeGraph& g : decode_graphs_) summary.sizes.push_back(g.size);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  summary.memory_bytes = backend_.graph_memory_bytes();
  return summary;
}

void DeepseekModel::clear_decode_graphs() {
  if (!decode_graphs_.empty()) backend_.clear_graphs();
  decode_graphs_.clear();
  graph_table_pitch_ = 0;
}

int64_t DeepseekModel::decode_graph_size(const ForwardBatch& batch) const {
  if (decode_graphs_.empty() || !batch.is_decode() || batch.max_blocks_per_seq > graph_table_pitch_) return 0;
  for (const DecodeGraph& g : decode_graphs_)
    if (g.size >= batch.num_seqs()) return g.size;
  return 0;
}

Tensor DeepseekModel::replay_decode_graph(const ForwardBatch& batch, int64_t size) {
  // The checks the ops make on the host when they run eagerly; a replay runs none of them.
  batch.validate(num_kv_blocks_ * block_size_, block_size_);
  for (int32_t id : batch.token_ids)
    DS_CHECK(id >= 0 && id < config_.vocab_size, "token id {} outside the vocabulary [0, {})", id,
             config_.vocab_size);
  for (int64_t s = 0; s < batch.num_seqs(); ++s) {
    const int32_t len = batch.seq_lens[static_cast<size_t>(s)];
    DS_CHECK(batch.positions[static_cast<size_t>(s)] == len - 1,
             "seq {}: decode token at position {} of context {}", s, batch.positions[static_cast<size_t>(s)],
             len);
    for (int64_t b = 0; b < (len + block_size_ - 1) / block_size_; ++b) {
      const int32_t block = batch.block_table[static_cast<size_t>(s * batch.max_blocks_per_seq + b)];
      DS_CHECK(block >= 0 && block < num_kv_blocks_, "seq {}: block {} outside the cache ({} blocks)", s,
               block, num_kv_blocks_);
    }
  }
  const auto graph = std::find_if(decode_graphs_.begin(), decode_graphs_.end(),
                                  [&](const DecodeGraph& g) { return g.size == size; });
  DS_CHECK(graph != decode_graphs_.end(), "no decode graph of {} sequences", size);
  const ForwardBatch padded = pad_decode_batch(batch, size);
  {
    const StepScope step(backend_, padded, graph_table_pitch_);
    backend_.replay_graph(graph->handle);
  }
  Tensor logits = graph->logits;  // its first rows: the batch's sequences
  logits.shape = {batch.num_seqs(), config_.vocab_size};
  return logits;
}

}  // namespace ds
