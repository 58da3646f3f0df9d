// Sizing the KV cache of a GPU from --gpu-memory-utilization, as vLLM does: after the weights are on the
// device, one profiling forward pass of the largest step the scheduler can make measures the activations'
// peak; the KV cache gets what is left of utilization x total memory after what this process already holds
// (weights, workspaces; not other processes, nor the CUDA context: the budget is per instance, as in vLLM, and the
// cache never gets more than is free) and that peak; and, with decode graphs, twice the peak
// of the largest decode step: each graph keeps its own activations, which grow with its batch size, and the
// sizes double (1 + 2 + ... + 256 < 2 x 256).
#pragma once

#include <cstdint>
#include <string>

#include "model/deepseek.h"

namespace ds {

struct KvCachePlan {
  int64_t num_blocks = 0;
  std::string summary;  // one line for the start-up log: the blocks and where the memory went
};

struct KvCachePlanInput {
  double gpu_memory_utilization = 0.9;  // (0, 1]
  int32_t block_size = 16;
  int64_t max_num_batched_tokens = 8192;  // tokens of the profiling step
  int64_t max_num_seqs = 256;             // rows of logits of the profiling step
  int64_t max_model_len = 0;              // the profiling step is at most this long
  int64_t min_blocks = 1;                 // what one request of max_model_len needs
  // > 0: decode graphs of up to this many sequences will be captured (EngineConfig::cuda_graphs); their
  // recorded allocations are set aside before the KV cache gets the rest.
  int64_t decode_graph_max_batch = 0;
};

// The model's backend must have a device (Backend::device_memory). Leaves the model without a KV cache (the
// engine allocates it). Throws UserError with the numbers and the flags to change when fewer than
// min_blocks fit.
[[nodiscard]] KvCachePlan plan_kv_cache(ModelRunner& model, const KvCachePlanInput& in);

}  // namespace ds
