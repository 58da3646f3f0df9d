// SamplingParams::validate: the one place every sampling field's range is checked (the server's parser and
// Engine::submit both call it), with the vocabulary-dependent checks when the model is known.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "engine/sampler.h"

namespace ds {
namespace {

constexpr int64_t kMaxLogprobs = 20;
constexpr size_t kMaxStopStrings = 16;
constexpr size_t kMaxStopStringBytes = 256;

// InvalidArgument(field, message) when cond fails; the message starts with the field's name.
template <typename... Args>
void require(bool cond, const std::string& field, fmt::format_string<Args...> format, Args&&... args) {
  if (!cond) [[unlikely]]
    throw InvalidArgument(field, fmt::format(format, std::forward<Args>(args)...));
}
}  // namespace

void SamplingParams::validate() const {
  require(std::isfinite(temperature) && temperature >= 0.0, "temperature",
          "temperature must be a finite number >= 0, got {}", temperature);
  require(top_p > 0.0 && top_p <= 1.0, "top_p", "top_p must be in (0, 1], got {}", top_p);
  require(top_k >= -1, "top_k", "top_k must be -1 or 0 (off) or >= 1, got {}", top_k);
  require(min_p >= 0.0 && min_p <= 1.0, "min_p", "min_p must be in [0, 1], got {}", min_p);
  require(std::isfinite(repetition_penalty) && repetition_penalty > 0.0, "repetition_penalty",
          "repetition_penalty must be a finite number > 0, got {}", repetition_penalty);
  require(presence_penalty >= -2.0 && presence_penalty <= 2.0, "presence_penalty",
          "presence_penalty must be in [-2, 2], got {}", presence_penalty);
  require(frequency_penalty >= -2.0 && frequency_penalty <= 2.0, "frequency_penalty",
          "frequency_penalty must be in [-2, 2], got {}", frequency_penalty);
  require(max_tokens >= 1, "max_tokens", "max_tokens must be >= 1, got {}", max_tokens);
  require(min_tokens >= 0 && min_tokens <= max_tokens, "min_tokens",
          "min_tokens must be in [0, max_tokens = {}], got {}", max_tokens, min_tokens);
  require(stop.size() <= kMaxStopStrings, "stop", "stop must have at most {} entries, got {}",
          kMaxStopStrings, stop.size());
  for (size_t i = 0; i < stop.size(); ++i) {
    require(!stop[i].empty() && stop[i].size() <= kMaxStopStringBytes, fmt::format("stop[{}]", i),
            "stop[{}] must be 1 to {} bytes long, got {} bytes", i, kMaxStopStringBytes, stop[i].size());
  }
  for (size_t i = 0; i < stop_token_ids.size(); ++i) {
    require(stop_token_ids[i] >= 0, fmt::format("stop_token_ids[{}]", i),
            "stop_token_ids[{}] must be >= 0, got {}", i, stop_token_ids[i]);
  }
  require(!logprobs || (*logprobs >= 0 && *logprobs <= kMaxLogprobs), "logprobs",
          "logprobs must be in [0, {}], got {}", kMaxLogprobs, logprobs.value_or(0));
  require(!prompt_logprobs || (*prompt_logprobs >= 0 && *prompt_logprobs <= kMaxLogprobs), "prompt_logprobs",
          "prompt_logprobs must be in [0, {}], got {}", kMaxLogprobs, prompt_logprobs.value_or(0));
  require(n >= 1, "n", "n must be >= 1, got {}", n);
  // The engine counts samples in 32 bits (RequestStream, Sequence::index).
  require(n <= INT32_MAX, "n", "n must be at most {}, got {}", INT32_MAX, n);
  for (size_t i = 0; i < logit_bias.size(); ++i) {
    const LogitBias& b = logit_bias[i];
    require(b.token >= 0 && (i == 0 || b.token > logit_bias[i - 1].token), "logit_bias",
            "logit_bias must map distinct token ids >= 0, got {}", b.token);
    require(b.bias >= -100.0f && b.bias <= 100.0f, "logit_bias",
            "logit_bias of token {} must be in [-100, 100], got {}", b.token, b.bias);
  }
  for (size_t i = 0; i < allowed_token_ids.size(); ++i) {
    require(allowed_token_ids[i] >= 0 && (i == 0 || allowed_token_ids[i] > allowed_token_ids[i - 1]),
            "allowed_token_ids", "allowed_token_ids must hold distinct token ids >= 0 in order, got {}",
            allowed_token_ids[i]);
  }
}

void SamplingParams::validate(const VocabularyLimits& vocabulary) const {
  validate();
  const int64_t vocab = vocabulary.vocab_size;
  for (const LogitBias& b : logit_bias) {
    require(b.token < vocab, "logit_bias", "logit_bias has token id {}, outside the vocabulary [0, {})",
            b.token, vocab);
  }
  for (const int32_t id : allowed_token_ids) {
    require(id < vocab, "allowed_token_ids",
            "allowed_token_ids has token id {}, outside the vocabulary [0, {})", id, vocab);
  }
  if (min_tokens == 0) return;
  // The first min_tokens draws mask EOS and stop_token_ids (within the vocabulary): some token must be left.
  std::vector<int32_t> masked;
  for (const auto ids : {vocabulary.eos_token_ids, std::span<const int32_t>(stop_token_ids)})
    for (const int32_t id : ids)
      if (id >= 0 && id < vocab) masked.push_back(id);
  std::sort(masked.begin(), masked.end());
  masked.erase(std::unique(masked.begin(), masked.end()), masked.end());
  const bool allowed_only = !allowed_token_ids.empty();
  const bool any_left =
      allowed_only
          ? std::any_of(allowed_token_ids.begin(), allowed_token_ids.end(),
                        [&](int32_t id) { return !std::binary_search(masked.begin(), masked.end(), id); })
          : static_cast<int64_t>(masked.size()) < vocab;
  require(any_left, allowed_only ? "allowed_token_ids" : "stop_token_ids",
          "{} leaves no token to sample while min_tokens ({}) masks EOS and stop_token_ids",
          allowed_only ? "allowed_token_ids" : "stop_token_ids (with EOS, covering the whole vocabulary)",
          min_tokens);
}

}  // namespace ds
