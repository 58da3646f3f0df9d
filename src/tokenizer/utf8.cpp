#include "tokenizer/utf8.h"

namespace ds::tokenizer {

namespace {

bool is_continuation(unsigned char b) {
  return (b & 0xC0) == 0x80;
}

// The range the second byte must fall in after `lead` (Unicode Table 3-7, well-formed byte sequences).
// Returns false when `lead` cannot start a multi-byte sequence.
bool second_byte_range(unsigned char lead, unsigned char& lo, unsigned char& hi, size_t& width) {
  lo = 0x80;
  hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    width = 2;
  } else if (lead == 0xE0) {
    width = 3;
    lo = 0xA0;
  } else if (lead == 0xED) {
    width = 3;
    hi = 0x9F;
  } else if (lead >= 0xE1 && lead <= 0xEF) {
    width = 3;
  } else if (lead == 0xF0) {
    width = 4;
    lo = 0x90;
  } else if (lead >= 0xF1 && lead <= 0xF3) {
    width = 4;
  } else if (lead == 0xF4) {
    width = 4;
    hi = 0x8F;
  } else {
    return false;
  }
  return true;
}

// Length of the valid prefix of the multi-byte sequence starting at bytes[i] (at least 1: the lead byte
// alone, when valid as a lead), and whether the whole sequence is complete.
struct SequenceScan {
  size_t valid_length = 0;  // 0: bytes[i] cannot start a sequence
  bool complete = false;
};

SequenceScan scan_sequence(std::string_view bytes, size_t i) {
  const auto lead = static_cast<unsigned char>(bytes[i]);
  if (lead < 0x80) return {1, true};
  unsigned char lo = 0;
  unsigned char hi = 0;
  size_t width = 0;
  if (!second_byte_range(lead, lo, hi, width)) return {0, false};
  size_t n = 1;
  for (; n < width; ++n) {
    if (i + n >= bytes.size()) return {n, false};
    const auto b = static_cast<unsigned char>(bytes[i + n]);
    const bool ok = n == 1 ? (b >= lo && b <= hi) : is_continuation(b);
    if (!ok) return {n, false};
  }
  return {width, true};
}

}  // namespace

char32_t next_code_point(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  const size_t len = utf8_char_length(b0);
  char32_t cp = 0;
  if (len == 2) {
    cp = b0 & 0x1F;
  } else if (len == 3) {
    cp = b0 & 0x0F;
  } else {
    cp = b0 & 0x07;
  }
  for (size_t k = 1; k < len && i + k < s.size(); ++k) {
    cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  }
  i += len;
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const SequenceScan scan = scan_sequence(s, i);
    if (!scan.complete) return false;
    i += scan.valid_length;
  }
  return true;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    const auto b = static_cast<unsigned char>(bytes[i]);
    if (b < 0x80) {
      out.push_back(static_cast<char>(b));
      ++i;
      continue;
    }
    const SequenceScan scan = scan_sequence(bytes, i);
    if (scan.complete) {
      out.append(bytes.substr(i, scan.valid_length));
      i += scan.valid_length;
    } else {
      // One U+FFFD for the maximal valid prefix (or the single bad byte); resume at the offending byte.
      append_utf8(out, kReplacementChar);
      i += scan.valid_length == 0 ? 1 : scan.valid_length;
    }
  }
  return out;
}

size_t utf8_incomplete_suffix(std::string_view bytes) {
  // An unfinished character is at most 3 bytes long; its lead is the last non-continuation byte.
  const size_t n = bytes.size();
  for (size_t k = 1; k <= 3 && k <= n; ++k) {
    const auto b = static_cast<unsigned char>(bytes[n - k]);
    if (is_continuation(b)) continue;
    const SequenceScan scan = scan_sequence(bytes, n - k);
    return (!scan.complete && scan.valid_length == k) ? k : 0;
  }
  return 0;
}

bool is_white_space(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  switch (cp) {
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

}  // namespace ds::tokenizer
