// Pre-tokenizers of tokenizer.json: they cut normalized text into pieces that BPE then encodes one by one.
// Supported: Sequence, Split (Regex or String pattern, every behavior, invert), ByteLevel (use_regex,
// add_prefix_space) and Digits. Semantics follow HuggingFace tokenizers: empty pieces are dropped, and each
// step sees the pieces the previous one produced.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tokenizer/regex.h"

namespace ds::tokenizer {

// What Split does with the text a pattern matched (HF's SplitDelimiterBehavior). For "a-b--c" split on
// "-": Removed [a,b,c]; Isolated [a,-,b,-,-,c]; MergedWithPrevious [a-,b-,-,c]; MergedWithNext
// [a,-b,-,-c]; Contiguous [a,-,b,--,c].
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Text being pre-tokenized: its pieces are views into the input, or into strings that a step rewrote
// (ByteLevel) and that this object keeps alive. Splitting only makes new views, so it copies no text.
class PreTokenizedString {
 public:
  // `text` must outlive this object.
  explicit PreTokenizedString(std::string_view text) {
    if (!text.empty()) pieces.push_back(text);
  }
  // Keeps `s` alive as long as this object and returns a view of it.
  std::string_view store(std::string s) { return storage_.emplace_back(std::move(s)); }

  std::vector<std::string_view> pieces;

 private:
  std::deque<std::string> storage_;  // deque: growing it never moves the strings pieces point into
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces every piece by the pieces it splits into.
  virtual void pre_tokenize(PreTokenizedString& text) const = 0;

  // The pieces of `text`, as strings (tests, debugging).
  [[nodiscard]] std::vector<std::string> pre_tokenize_str(std::string_view text) const;
};

// Cuts `text` at the given matches (sorted, non-overlapping) and appends the non-empty parts that
// `behavior` keeps, as views into `text`. With invert, the text between matches plays the part of the
// matches.
void split_at_matches(std::string_view text, const std::vector<RegexMatch>& matches, SplitBehavior behavior,
                      bool invert, std::vector<std::string_view>& out);

// Builds the pre-tokenizer described by `config` (tokenizer.json's "pre_tokenizer"); `path` names it in
// error messages. Returns nullptr for JSON null.
[[nodiscard]] std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& config,
                                                               const std::string& path);

}  // namespace ds::tokenizer
