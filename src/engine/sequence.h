// A Sequence: one stream of tokens the engine generates (a request with n > 1 has n of them).
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "engine/stop_strings.h"
#include "tokenizer/detokenizer.h"

namespace ds {

// kPaused: out of the batch while its client does not read (Engine::pause); it may keep its KV blocks.
enum class SequenceStatus { kWaiting, kRunning, kSwapped, kPaused, kFinished };
enum class FinishReason { kNone, kStop, kLength, kAbort, kError };

[[nodiscard]] const char* to_string(FinishReason reason);

struct Sequence {
  int64_t seq_id = 0;
  int64_t request_id = 0;
  int32_t index = 0;               // which of the request's n samples
  int32_t priority = 0;            // lower is served first (vLLM's convention); ties by arrival
  int64_t arrival = 0;             // admission order
  std::vector<int32_t> token_ids;  // prompt, then generated tokens
  int64_t num_prompt_tokens = 0;
  // token_ids[0, num_computed_tokens) have their latent KV in the cache.
  int64_t num_computed_tokens = 0;
  std::vector<int32_t> block_table;     // device KV blocks, in order
  std::vector<int32_t> swapped_blocks;  // CPU swap blocks while swapped out
  // Prefix-cache keys of the full blocks of token_ids: block_hashes[i] covers tokens [0, (i+1) * block_size).
  // Kept by BlockManager::update_hashes; they depend only on the tokens, so they survive preemption.
  std::vector<uint64_t> block_hashes;
  // block_table[0, num_cached_blocks) were offered to the prefix cache already (reset when blocks are freed).
  int64_t num_cached_blocks = 0;
  SequenceStatus status = SequenceStatus::kWaiting;
  FinishReason finish_reason = FinishReason::kNone;
  SamplingParams params;
  std::mt19937_64 rng;
  bool is_fork_parent = false;  // n > 1: samples fork from this one when its prompt is done
  // Its request is paused (Engine::pause): the scheduler leaves it out of the batch until it is cleared.
  bool paused = false;
  // Text of the output, when the engine has a tokenizer: ids -> text deltas -> stop strings -> client.
  std::unique_ptr<tokenizer::IncrementalDetokenizer> detokenizer;
  std::unique_ptr<StopStringMatcher> stop_matcher;
  bool stop_matcher_stopped = false;

  [[nodiscard]] int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
  [[nodiscard]] int64_t num_output_tokens() const { return num_tokens() - num_prompt_tokens; }
  // Tokens that still need a forward pass before the next one can be sampled.
  [[nodiscard]] int64_t num_uncomputed_tokens() const { return num_tokens() - num_computed_tokens; }
  [[nodiscard]] bool is_finished() const { return status == SequenceStatus::kFinished; }
};

}  // namespace ds
