// PCRE2 (UTF + UCP + JIT) standing in for the Oniguruma engine that HuggingFace tokenizers compiles
// pre-tokenizer patterns with. The pattern is translated where the two engines read an escape differently
// (Oniguruma's \s is Unicode White_Space, PCRE2's also takes U+180E; Oniguruma's \h is a hex digit), and
// find_all() steps over empty matches the way the Rust `onig` crate's find_iter does.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace ds::tokenizer {

struct RegexMatch {
  size_t start = 0;  // byte offsets into the subject
  size_t end = 0;
};

class Regex {
 public:
  // Throws ds::UserError naming `what` (e.g. "pre_tokenizer.pretokenizers[2].pattern.Regex") when the
  // pattern does not compile. literal=true matches `pattern` as plain text (Split's {"String": ...}).
  Regex(std::string_view pattern, std::string_view what, bool literal = false);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All non-overlapping matches, left to right. `subject` must be valid UTF-8 (not re-checked).
  void find_all(std::string_view subject, std::vector<RegexMatch>& out) const;

  // Whether the pattern matches at exactly `offset` (anchored there).
  [[nodiscard]] bool matches_at(std::string_view subject, size_t offset) const;

  [[nodiscard]] const std::string& pattern() const { return pattern_; }

  // Oniguruma -> PCRE2 rewrite of the escapes whose meaning differs (exposed for tests).
  [[nodiscard]] static std::string translate_oniguruma(std::string_view pattern);

 private:
  // Returns false when there is no match at or after `offset`.
  bool search(std::string_view subject, size_t offset, bool anchored, RegexMatch& m) const;

  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

}  // namespace ds::tokenizer
