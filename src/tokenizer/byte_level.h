// GPT-2's byte-level alphabet: every byte 0..255 is shown as a printable code point, so that a BPE
// vocabulary of strings can cover arbitrary bytes. Printable Latin-1 bytes map to themselves; the others
// (controls, space, 0x7F-0xA0, 0xAD) map to U+0100 onwards, in byte order. 'Ġ' (U+0120) is the space.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ds::tokenizer {

class ByteLevelAlphabet {
 public:
  // The process-wide table (built once, immutable).
  static const ByteLevelAlphabet& get();

  // UTF-8 encoding of the code point that stands for byte b.
  [[nodiscard]] std::string_view encode_byte(uint8_t b) const { return encoded_[b]; }
  [[nodiscard]] char32_t code_point(uint8_t b) const { return code_points_[b]; }

  // The byte a code point stands for, or -1 when the code point is not in the alphabet.
  [[nodiscard]] int byte_of(char32_t cp) const { return cp < byte_of_.size() ? byte_of_[cp] : -1; }

  // Appends the byte-level spelling of raw bytes (each byte becomes one alphabet code point).
  void encode(std::string_view raw, std::string& out) const;

  // HF's ByteLevel decoder for one token: the bytes its code points stand for, or, when any code point is
  // outside the alphabet (an added token such as "<｜User｜>"), the token's own UTF-8 bytes unchanged.
  void decode_token(std::string_view token, std::string& out) const;

 private:
  ByteLevelAlphabet();
  std::array<char32_t, 256> code_points_{};
  std::array<std::string, 256> encoded_{};
  std::array<int16_t, 512> byte_of_{};
};

}  // namespace ds::tokenizer
