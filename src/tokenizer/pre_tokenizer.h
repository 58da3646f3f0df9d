// Pre-tokenizers of tokenizer.json: they cut normalized text into pieces that BPE then encodes one by one.
// Supported: Sequence, Split (Regex or String pattern, every behavior, invert), ByteLevel (use_regex,
// add_prefix_space) and Digits. Semantics follow HuggingFace tokenizers: empty pieces are dropped, and each
// step sees the pieces the previous one produced.
#pragma once

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

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces every piece by the pieces it splits into.
  virtual void pre_tokenize(std::vector<std::string>& pieces) const = 0;
};

// Cuts `text` at the given matches (sorted, non-overlapping) and appends the non-empty parts that
// `behavior` keeps. With invert, the text between matches plays the part of the matches.
void split_at_matches(std::string_view text, const std::vector<RegexMatch>& matches, SplitBehavior behavior,
                      bool invert, std::vector<std::string>& out);

// Builds the pre-tokenizer described by `config` (tokenizer.json's "pre_tokenizer"); `path` names it in
// error messages. Returns nullptr for JSON null.
[[nodiscard]] std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& config,
                                                               const std::string& path);

}  // namespace ds::tokenizer
