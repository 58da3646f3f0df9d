#include "tokenizer/byte_level.h"

#include "tokenizer/utf8.h"

namespace ds::tokenizer {

const ByteLevelAlphabet& ByteLevelAlphabet::get() {
  static const ByteLevelAlphabet alphabet;
  return alphabet;
}

ByteLevelAlphabet::ByteLevelAlphabet() {
  byte_of_.fill(-1);
  auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); };
  char32_t next_shifted = 256;
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = printable(b) ? static_cast<char32_t>(b) : next_shifted++;
    code_points_[b] = cp;
    append_utf8(encoded_[b], cp);
    byte_of_[cp] = static_cast<int16_t>(b);
  }
}

void ByteLevelAlphabet::encode(std::string_view raw, std::string& out) const {
  for (const char c : raw) out.append(encoded_[static_cast<uint8_t>(c)]);
}

void ByteLevelAlphabet::decode_token(std::string_view token, std::string& out) const {
  const size_t start = out.size();
  size_t i = 0;
  while (i < token.size()) {
    const int b = byte_of(next_code_point(token, i));
    if (b < 0) {
      out.resize(start);
      out.append(token);
      return;
    }
    out.push_back(static_cast<char>(b));
  }
}

}  // namespace ds::tokenizer
