// UTF-8 helpers shared by the tokenizer: code point iteration, validation, and the lossy conversion that
// HuggingFace's decoders apply (Rust's String::from_utf8_lossy).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace ds::tokenizer {

inline constexpr char32_t kReplacementChar = 0xFFFD;

// Decodes the code point that starts at s[i] and moves i past it. `s` must be valid UTF-8.
[[nodiscard]] char32_t next_code_point(std::string_view s, size_t& i);

// Byte length of the UTF-8 character whose first byte is `lead` (1 for bytes that cannot start one).
[[nodiscard]] inline size_t utf8_char_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xF0) return 4;
  if (lead >= 0xE0) return 3;
  if (lead >= 0xC0) return 2;
  return 1;
}

void append_utf8(std::string& out, char32_t cp);

// Whether `s` is well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
[[nodiscard]] bool is_valid_utf8(std::string_view s);

// Replaces every ill-formed subsequence with U+FFFD, one per maximal subpart (Unicode 3.9, "U+FFFD
// substitution of maximal subparts"), exactly as Rust's String::from_utf8_lossy does.
[[nodiscard]] std::string utf8_lossy(std::string_view bytes);

// Number of bytes at the end of `bytes` that form a valid but unfinished UTF-8 character: more bytes could
// still complete it. 0 when the text ends on a character boundary or in an already-invalid sequence.
// The property the incremental detokenizer relies on: if this is 0 for A, then
// utf8_lossy(A + B) == utf8_lossy(A) + utf8_lossy(B).
[[nodiscard]] size_t utf8_incomplete_suffix(std::string_view bytes);

// Unicode White_Space property (what \s means in Oniguruma and Rust's regex crate).
[[nodiscard]] bool is_white_space(char32_t cp);

}  // namespace ds::tokenizer
