#include "tokenizer/detokenizer.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace ds::tokenizer {

namespace {

constexpr std::string_view kReplacementUtf8 = "\xEF\xBF\xBD";

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens,
                                               std::vector<TokenId> keep_special)
    : tokenizer_(tokenizer),
      skip_special_tokens_(skip_special_tokens),
      keep_special_(std::move(keep_special)),
      byte_level_(tokenizer.has_byte_level_decoder()) {}

std::string IncrementalDetokenizer::step(TokenId id) {
  const bool skip = skip_special_tokens_ &&
                    std::find(keep_special_.begin(), keep_special_.end(), id) == keep_special_.end();
  if (byte_level_) {
    tokenizer_.append_token_bytes(id, skip, pending_);
    const size_t hold = utf8_incomplete_suffix(pending_);
    const size_t ready = pending_.size() - hold;
    if (ready == 0) return {};
    std::string delta = utf8_lossy(std::string_view(pending_).substr(0, ready));
    pending_.erase(0, ready);
    return delta;
  }
  // Fallback: emit the part of the full decode that can no longer change. A decode ending in U+FFFD may
  // still be completed by the next token, so it waits.
  // With tokens to keep, the special ones to skip are dropped here instead of by decode() (which drops them
  // before its decoder runs, so the text is the same).
  if (!keep_special_.empty() && skip && tokenizer_.is_special_token(id)) return {};
  ids_.push_back(id);
  const std::string text = tokenizer_.decode(ids_, skip_special_tokens_ && keep_special_.empty());
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
  const std::string text = tokenizer_.decode(ids_, skip_special_tokens_ && keep_special_.empty());
  std::string rest = text.size() > emitted_ ? text.substr(emitted_) : std::string();
  emitted_ = text.size();
  return rest;
}

}  // namespace ds::tokenizer
