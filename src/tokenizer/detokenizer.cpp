#include "tokenizer/detokenizer.h"

#include "tokenizer/utf8.h"

namespace ds::tokenizer {

namespace {

constexpr std::string_view kReplacementUtf8 = "\xEF\xBF\xBD";

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer),
      skip_special_tokens_(skip_special_tokens),
      byte_level_(tokenizer.has_byte_level_decoder()) {}

std::string IncrementalDetokenizer::step(TokenId id) {
  if (byte_level_) {
    tokenizer_.append_token_bytes(id, skip_special_tokens_, pending_);
    const size_t hold = utf8_incomplete_suffix(pending_);
    const size_t ready = pending_.size() - hold;
    if (ready == 0) return {};
    std::string delta = utf8_lossy(std::string_view(pending_).substr(0, ready));
    pending_.erase(0, ready);
    return delta;
  }
  // Fallback: emit the part of the full decode that can no longer change. A decode ending in U+FFFD may
  // still be completed by the next token, so it waits.
  ids_.push_back(id);
  const std::string text = tokenizer_.decode(ids_, skip_special_tokens_);
  if (text.size() <= emitted_ || std::string_view(text).ends_with(kReplacementUtf8)) return {};
  std::string delta = text.substr(emitted_);
  emitted_ = text.size();
  return delta;
}

std::string IncrementalDetokenizer::finish() {
  if (byte_level_) {
    std::string rest = utf8_lossy(pending_);
    pending_.clear();
    return rest;
  }
  const std::string text = tokenizer_.decode(ids_, skip_special_tokens_);
  std::string rest = text.size() > emitted_ ? text.substr(emitted_) : std::string();
  emitted_ = text.size();
  return rest;
}

}  // namespace ds::tokenizer
