#include "engine/memory_plan.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "model/decode_graphs.h"
#include "util/check.h"

namespace ds {
namespace {

constexpr double kGiB = double(int64_t{1} << 30);

// One sequence of n tokens from position 0, logits for its last `rows` tokens.
ForwardBatch profiling_batch(int64_t n, int64_t rows, int32_t block_size, int32_t vocab) {
  ForwardBatch b;
  const auto blocks = static_cast<int32_t>((n + block_size - 1) / block_size);
  b.token_ids.resize(static_cast<size_t>(n));
  b.positions.resize(static_cast<size_t>(n));
  b.slot_mapping.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    b.token_ids[i] = static_cast<int32_t>(i % vocab);
    b.positions[i] = static_cast<int32_t>(i);
    b.slot_mapping[i] = i;
  }
  b.query_start_loc = {0, static_cast<int32_t>(n)};
  b.seq_lens = {static_cast<int32_t>(n)};
  b.block_table.resize(static_cast<size_t>(blocks));
  std::iota(b.block_table.begin(), b.block_table.end(), 0);
  b.max_blocks_per_seq = blocks;
  for (int64_t i = n - rows; i < n; ++i) b.logits_indices.push_back(static_cast<int32_t>(i));
  return b;
}

}  // namespace

KvCachePlan plan_kv_cache(ModelRunner& model, const KvCachePlanInput& in) {
  Backend& backend = model.backend();
  DS_REQUIRE(in.gpu_memory_utilization > 0 && in.gpu_memory_utilization <= 1, InvalidArgument,
             "--gpu-memory-utilization {} is not in (0, 1]", in.gpu_memory_utilization);
  backend.reset_memory_peak();
  const auto before = backend.device_memory();
  DS_CHECK(before.has_value(), "plan_kv_cache needs a backend with a device");

  // The profiling step: the longest prefill chunk the scheduler makes, with as many logits rows as it can ask.
  const int64_t tokens = std::max<int64_t>(
      1, in.max_model_len > 0 ? std::min(in.max_num_batched_tokens, in.max_model_len) : in.max_num_batched_tokens);
  const int64_t rows = std::clamp<int64_t>(in.max_num_seqs, 1, tokens);
  const int64_t probe_blocks = (tokens + in.block_size - 1) / in.block_size;
  const int64_t block_bytes = model.kv_block_bytes(in.block_size);
  model.allocate_kv_cache(probe_blocks, in.block_size);
  {
    const Tensor logits = model.forward(
        profiling_batch(tokens, rows, in.block_size, static_cast<int32_t>(model.config().vocab_size)));
    std::vector<float> host(static_cast<size_t>(logits.numel()));
    backend.copy_to_host(logits, host);  // waits for the step
  }
  const auto after = backend.device_memory();
  const int64_t activations = std::max<int64_t>(0, after->peak_pool_bytes - probe_blocks * block_bytes);
  int64_t graphs = 0;
  if (in.decode_graph_max_batch > 0) {
    backend.reset_memory_peak();
    const auto idle = backend.device_memory();
    // No graph is captured yet: forward() runs the step eagerly.
    const Tensor logits = model.forward(capture_batch(in.decode_graph_max_batch));
    std::vector<float> host(static_cast<size_t>(logits.numel()));
    backend.copy_to_host(logits, host);
    graphs = 2 * std::max<int64_t>(0, backend.device_memory()->peak_pool_bytes - idle->peak_pool_bytes);
  }
  model.allocate_kv_cache(1, in.block_size);  // frees the profiling cache (a 1-block cache is all that remains)
  backend.reset_memory_peak();

  // Per instance, as in vLLM: the budget is this process's share of the card, so what other processes hold
  // does not count against it (two servers at 0.45 share one GPU); the cache never gets more than is free.
  const auto total = static_cast<double>(before->total_bytes);
  const double budget = in.gpu_memory_utilization * total;
  const double ours = static_cast<double>(std::max<int64_t>(0, before->free_at_start_bytes - before->free_bytes));
  const double workspaces = std::max(0.0, ours - static_cast<double>(before->weight_bytes));
  const double others = total - static_cast<double>(before->free_at_start_bytes);
  const double needed = static_cast<double>(activations) + static_cast<double>(graphs);
  const double for_kv = std::min(budget - ours - needed, static_cast<double>(before->free_bytes) - needed);
  const int64_t blocks = for_kv > 0 ? static_cast<int64_t>(for_kv / static_cast<double>(block_bytes)) : 0;
  const std::string split = fmt::format(
      "{:.2f} GiB = --gpu-memory-utilization {:.2f} x {:.2f} GiB: weights {:.2f} GiB, workspaces {:.2f} GiB, "
      "activations of a {}-token step {:.2f} GiB, {}KV cache {:.2f} GiB{}; other processes and the CUDA context "
      "hold {:.2f} GiB, {:.2f} GiB are free",
      budget / kGiB, in.gpu_memory_utilization, total / kGiB, double(before->weight_bytes) / kGiB,
      workspaces / kGiB, tokens, double(activations) / kGiB,
      in.decode_graph_max_batch > 0 ? fmt::format("decode graphs {:.2f} GiB, ", double(graphs) / kGiB) : "",
      std::max(0.0, for_kv) / kGiB, budget - ours - needed > for_kv ? " (all that is free)" : "", others / kGiB,
      double(before->free_bytes) / kGiB);
  DS_REQUIRE(blocks >= in.min_blocks, UserError,
             "not enough GPU memory for the KV cache: {}; that is {} blocks of {} tokens, and one request of "
             "--max-model-len needs {}. Raise --gpu-memory-utilization, or lower --max-model-len or "
             "--max-num-batched-tokens",
             split, blocks, in.block_size, in.min_blocks);
  return KvCachePlan{blocks, fmt::format("KV cache: {} blocks of {} tokens ({} tokens); {}", blocks, in.block_size,
                                         blocks * in.block_size, split)};
}

}  // namespace ds
