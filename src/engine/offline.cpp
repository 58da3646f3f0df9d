#include "engine/offline.h"

#include <algorithm>

namespace ds {

void validate_prompt(const ModelConfig& config, const std::vector<int32_t>& prompt_ids, int64_t max_tokens) {
  DS_REQUIRE(!prompt_ids.empty(), InvalidArgument, "the prompt is empty");
  for (size_t i = 0; i < prompt_ids.size(); ++i) {
    DS_REQUIRE(prompt_ids[i] >= 0 && prompt_ids[i] < config.vocab_size, InvalidArgument,
               "prompt token {} (at index {}) is outside the vocabulary [0, {})", prompt_ids[i], i, config.vocab_size);
  }
  DS_REQUIRE(max_tokens <= config.max_position_embeddings - static_cast<int64_t>(prompt_ids.size()),
             InvalidArgument, "prompt ({} tokens) + max_tokens ({}) exceeds the model's context length {}",
             prompt_ids.size(), max_tokens, config.max_position_embeddings);
}

GenerateResult generate(ModelRunner& model, const std::vector<int32_t>& prompt_ids,
                        const SamplingParams& params,
                        const std::function<void(const SampledToken&)>& on_token) {
  const ModelConfig& c = model.config();
  params.validate({c.vocab_size, c.eos_token_ids});
  validate_prompt(c, prompt_ids, params.max_tokens);
  const int32_t block_size = 16;
  const int64_t capacity = static_cast<int64_t>(prompt_ids.size()) + params.max_tokens;
  const auto num_blocks = static_cast<int32_t>((capacity + block_size - 1) / block_size);
  if (model.num_kv_blocks() < num_blocks || model.block_size() != block_size)
    model.allocate_kv_cache(num_blocks, block_size);

  // One sequence owning blocks 0..num_blocks-1.
  ForwardBatch batch;
  batch.max_blocks_per_seq = num_blocks;
  batch.block_table.resize(static_cast<size_t>(num_blocks));
  for (int32_t b = 0; b < num_blocks; ++b) batch.block_table[static_cast<size_t>(b)] = b;

  const Sampler sampler;
  std::mt19937_64 rng(params.seed.value_or(0));
  const std::vector<int32_t> eos_ids(c.eos_token_ids.begin(), c.eos_token_ids.end());
  std::vector<float> host_logits(static_cast<size_t>(c.vocab_size));
  GenerateResult result;
  std::vector<int32_t> step_tokens = prompt_ids;
  int32_t start = 0;
  for (;;) {
    const auto n = static_cast<int32_t>(step_tokens.size());
    batch.token_ids = step_tokens;
    batch.positions.resize(static_cast<size_t>(n));
    batch.slot_mapping.resize(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) {
      batch.positions[static_cast<size_t>(i)] = start + i;
      batch.slot_mapping[static_cast<size_t>(i)] = start + i;  // blocks are contiguous: slot == position
    }
    batch.query_start_loc = {0, n};
    batch.seq_lens = {start + n};
    batch.logits_indices = {n - 1};
    const Tensor logits = model.forward(batch);  // [1, vocab] on the model's backend
    model.backend().copy_to_host(logits, host_logits);
    const SamplingContext context{prompt_ids, result.token_ids, eos_ids};
    const SampledToken next = sampler.sample(host_logits, params, context, rng);
    result.token_ids.push_back(next.token);
    if (on_token) on_token(next);
    const bool eos = std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), next.token) != c.eos_token_ids.end();
    if (eos && !params.ignore_eos) {
      result.finish_reason = "stop";
      break;
    }
    if (static_cast<int64_t>(result.token_ids.size()) >= params.max_tokens) {
      result.finish_reason = "length";
      break;
    }
    start += n;
    step_tokens = {next.token};
  }
  return result;
}

}  // namespace ds
