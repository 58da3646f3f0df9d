#include "tokenizer/jinja/pystr.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "tokenizer/jinja/error.h"
#include "tokenizer/utf8.h"

namespace ds::jinja::pystr {
namespace {

constexpr char32_t kEscapeBase = 0xDC80;  // surrogateescape: invalid byte b decodes to U+DC80 + b

bool is_ascii_space(char c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || (c >= '\x1c' && c <= '\x1f');
}

}  // namespace

std::u32string decode(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
      out.push_back(b0);
      ++i;
      continue;
    }
    int len = 0;
    char32_t cp = 0;
    char32_t min = 0;
    if ((b0 & 0xE0) == 0xC0) {
      len = 2, cp = b0 & 0x1F, min = 0x80;
    } else if ((b0 & 0xF0) == 0xE0) {
      len = 3, cp = b0 & 0x0F, min = 0x800;
    } else if ((b0 & 0xF8) == 0xF0) {
      len = 4, cp = b0 & 0x07, min = 0x10000;
    }
    bool ok = len > 0 && i + static_cast<size_t>(len) <= n;
    for (int k = 1; ok && k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((b & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (b & 0x3F);
    }
    if (ok && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
    if (!ok) {
      out.push_back(kEscapeBase + b0);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += static_cast<size_t>(len);
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp >= kEscapeBase + 0x80 && cp <= kEscapeBase + 0xFF) {
    out.push_back(static_cast<char>(cp - kEscapeBase));
  } else {
    tokenizer::append_utf8(out, cp);
  }
}

std::string encode(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) append_utf8(out, c);
  return out;
}

bool is_ascii(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

size_t length(std::string_view s) {
  if (is_ascii(s)) return s.size();
  return decode(s).size();
}

bool is_space(char32_t c) {
  if (c < 0x80) return is_ascii_space(static_cast<char>(c));
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_line_break(char32_t c) {
  return c == '\n' || c == '\r' || c == '\v' || c == '\f' || (c >= 0x1C && c <= 0x1E) || c == 0x85 ||
         c == 0x2028 || c == 0x2029;
}

// str.isprintable: false for the categories Cc, Cf, Cs, Co, Cn, Zl, Zp and Zs other than the space.
// Without the Unicode database we list the ranges that appear in practice; unassigned code points
// (Cn) other than the noncharacters are treated as printable.
bool is_printable(char32_t c) {
  if (c < 0x20 || c == 0x7F) return false;
  if (c < 0x7F) return true;
  if (c <= 0xA0 || c == 0xAD) return false;
  if (c >= kEscapeBase && c <= 0xDFFF) return false;  // surrogates, incl. escaped bytes
  if (c >= 0xD800 && c < kEscapeBase) return false;
  static constexpr std::array<std::pair<char32_t, char32_t>, 22> kNotPrintable = {{
      {0x0600, 0x0605},   {0x061C, 0x061C},     {0x06DD, 0x06DD},   {0x070F, 0x070F},   {0x1680, 0x1680},
      {0x180E, 0x180E},   {0x2000, 0x200F},     {0x2028, 0x202F},   {0x205F, 0x2064},   {0x2066, 0x206F},
      {0x3000, 0x3000},   {0xE000, 0xF8FF},     {0xFEFF, 0xFEFF},   {0xFFF9, 0xFFFB},   {0xFFFE, 0xFFFF},
      {0x110BD, 0x110BD}, {0x1BCA0, 0x1BCA3},   {0x1D173, 0x1D17A}, {0xE0001, 0xE0001}, {0xE0020, 0xE007F},
      {0xF0000, 0xFFFFD}, {0x100000, 0x10FFFD},
  }};
  for (const auto& [lo, hi] : kNotPrintable) {
    if (c >= lo && c <= hi) return false;
  }
  return true;
}

char32_t to_upper(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  if (c == 0xB5) return 0x39C;
  if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 32;
  if (c == 0xFF) return 0x178;
  if (c >= 0x100 && c <= 0x17F) {
    if (c == 0x131) return 'I';
    if (c == 0x17F) return 'S';
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return (c % 2 == 0) ? c - 1 : c;
    if (c == 0x138 || c == 0x149) return c;
    return (c % 2 == 1) ? c - 1 : c;
  }
  if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
  if (c == 0x3C2) return 0x3A3;
  if (c >= 0x3AC && c <= 0x3AF) return c == 0x3AC ? 0x386 : c - 37;
  if (c >= 0x430 && c <= 0x44F) return c - 32;
  if (c >= 0x450 && c <= 0x45F) return c - 80;
  return c;
}

char32_t to_lower(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
  if (c == 0x178) return 0xFF;
  if (c >= 0x100 && c <= 0x17F) {
    if (c == 0x130) return 'i';
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) return (c % 2 == 1) ? c + 1 : c;
    if (c == 0x138 || c == 0x149 || c == 0x131 || c == 0x17F) return c;
    return (c % 2 == 0) ? c + 1 : c;
  }
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
  if (c == 0x386) return 0x3AC;
  if (c >= 0x388 && c <= 0x38A) return c + 37;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  return c;
}

bool is_cased(char32_t c) {
  return to_upper(c) != c || to_lower(c) != c || c == 0xDF;
}

bool is_alpha(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  if (is_cased(c)) return true;
  // CJK, kana, hangul and other letters without case.
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3040 && c <= 0x30FF) || (c >= 0xAC00 && c <= 0xD7A3) ||
         (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x0600 && c <= 0x06FF && c >= 0x0620);
}

bool is_digit(char32_t c) {
  return c >= '0' && c <= '9';
}

namespace {

template <typename F>
std::string map_chars(std::string_view s, F f) {
  if (is_ascii(s)) {
    std::string out(s);
    for (char& ch : out) ch = static_cast<char>(f(static_cast<char32_t>(ch)));
    return out;
  }
  std::u32string u = decode(s);
  for (char32_t& c : u) c = f(c);
  return encode(u);
}

}  // namespace

std::string upper(std::string_view s) {
  std::string out;
  for (char32_t c : decode(s)) {
    if (c == 0xDF) {
      out += "SS";  // ß has no single upper-case letter; Python maps it to "SS"
    } else {
      append_utf8(out, to_upper(c));
    }
  }
  return out;
}

std::string lower(std::string_view s) {
  return map_chars(s, [](char32_t c) { return to_lower(c); });
}

std::string swapcase(std::string_view s) {
  return map_chars(s, [](char32_t c) {
    const char32_t up = to_upper(c);
    return up != c ? up : to_lower(c);
  });
}

std::string capitalize(std::string_view s) {
  std::u32string u = decode(s);
  for (size_t i = 0; i < u.size(); ++i) u[i] = i == 0 ? to_upper(u[i]) : to_lower(u[i]);
  return encode(u);
}

std::string title(std::string_view s) {
  std::u32string u = decode(s);
  bool previous_cased = false;
  for (char32_t& c : u) {
    if (previous_cased) {
      c = to_lower(c);
    } else {
      c = to_upper(c);
    }
    previous_cased = is_cased(c);
  }
  return encode(u);
}

std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right) {
  const std::u32string u = decode(s);
  const std::u32string set = chars ? decode(*chars) : std::u32string();
  auto strip_it = [&](char32_t c) { return chars ? set.find(c) != std::u32string::npos : is_space(c); };
  size_t begin = 0;
  size_t end = u.size();
  if (left) {
    while (begin < end && strip_it(u[begin])) ++begin;
  }
  if (right) {
    while (end > begin && strip_it(u[end - 1])) --end;
  }
  return encode(std::u32string_view(u).substr(begin, end - begin));
}

std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit,
                               bool from_right) {
  std::vector<std::string> parts;
  if (sep) {
    if (sep->empty()) detail::throw_value_error("empty separator");
    if (!from_right) {
      size_t pos = 0;
      while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
        const size_t hit = s.find(*sep, pos);
        if (hit == std::string_view::npos) break;
        parts.emplace_back(s.substr(pos, hit - pos));
        pos = hit + sep->size();
      }
      parts.emplace_back(s.substr(pos));
    } else {
      size_t end = s.size();
      std::vector<std::string> reversed;
      while (maxsplit < 0 || static_cast<int64_t>(reversed.size()) < maxsplit) {
        if (end < sep->size()) break;
        const size_t hit = s.rfind(*sep, end - sep->size());
        if (hit == std::string_view::npos) break;
        reversed.emplace_back(s.substr(hit + sep->size(), end - hit - sep->size()));
        end = hit;
      }
      reversed.emplace_back(s.substr(0, end));
      parts.assign(reversed.rbegin(), reversed.rend());
    }
    return parts;
  }
  const std::u32string u = decode(s);
  if (!from_right) {
    size_t i = 0;
    while (i < u.size()) {
      while (i < u.size() && is_space(u[i])) ++i;
      if (i >= u.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit) {
        size_t end = u.size();
        while (end > i && is_space(u[end - 1])) --end;
        parts.push_back(encode(std::u32string_view(u).substr(i, end - i)));
        break;
      }
      size_t j = i;
      while (j < u.size() && !is_space(u[j])) ++j;
      parts.push_back(encode(std::u32string_view(u).substr(i, j - i)));
      i = j;
    }
    return parts;
  }
  std::vector<std::string> reversed;
  size_t end = u.size();
  while (end > 0) {
    while (end > 0 && is_space(u[end - 1])) --end;
    if (end == 0) break;
    if (maxsplit >= 0 && static_cast<int64_t>(reversed.size()) >= maxsplit) {
      size_t begin = 0;
      while (begin < end && is_space(u[begin])) ++begin;
      reversed.push_back(encode(std::u32string_view(u).substr(begin, end - begin)));
      break;
    }
    size_t begin = end;
    while (begin > 0 && !is_space(u[begin - 1])) --begin;
    reversed.push_back(encode(std::u32string_view(u).substr(begin, end - begin)));
    end = begin;
  }
  parts.assign(reversed.rbegin(), reversed.rend());
  return parts;
}

std::vector<std::string> splitlines(std::string_view s, bool keepends) {
  const std::u32string u = decode(s);
  std::vector<std::string> lines;
  size_t start = 0;
  size_t i = 0;
  while (i < u.size()) {
    if (!is_line_break(u[i])) {
      ++i;
      continue;
    }
    size_t eol = i + 1;
    if (u[i] == '\r' && eol < u.size() && u[eol] == '\n') ++eol;
    const size_t end = keepends ? eol : i;
    lines.push_back(encode(std::u32string_view(u).substr(start, end - start)));
    start = i = eol;
  }
  if (start < u.size()) lines.push_back(encode(std::u32string_view(u).substr(start)));
  return lines;
}

std::string replace(std::string_view s, std::string_view old_text, std::string_view new_text, int64_t count) {
  std::string out;
  if (old_text.empty()) {
    // Python inserts the replacement before every code point and at the end.
    const std::u32string u = decode(s);
    int64_t done = 0;
    for (char32_t c : u) {
      if (count < 0 || done < count) {
        out += new_text;
        ++done;
      }
      append_utf8(out, c);
    }
    if (count < 0 || done < count) out += new_text;
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t hit = s.find(old_text, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(new_text);
    pos = hit + old_text.size();
    ++done;
  }
  out.append(s.substr(pos));
  return out;
}

int64_t find(std::string_view s, std::string_view sub, bool from_right) {
  const size_t hit = from_right ? s.rfind(sub) : s.find(sub);
  if (hit == std::string_view::npos) return -1;
  return static_cast<int64_t>(length(s.substr(0, hit)));
}

int64_t count(std::string_view s, std::string_view sub) {
  if (sub.empty()) return static_cast<int64_t>(length(s)) + 1;
  int64_t n = 0;
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(sub, pos);
    if (hit == std::string_view::npos) break;
    ++n;
    pos = hit + sub.size();
  }
  return n;
}

std::string repr(std::string_view s) {
  const std::u32string u = decode(s);
  bool has_single = false;
  bool has_double = false;
  for (char32_t c : u) {
    has_single |= c == '\'';
    has_double |= c == '"';
  }
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : u) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c >= kEscapeBase + 0x80 && c <= kEscapeBase + 0xFF) {
      out += fmt::format("\\udc{:02x}", static_cast<unsigned>(c - 0xDC00));
    } else if (!is_printable(c)) {
      if (c < 0x100) {
        out += fmt::format("\\x{:02x}", static_cast<unsigned>(c));
      } else if (c < 0x10000) {
        out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
      } else {
        out += fmt::format("\\U{:08x}", static_cast<unsigned>(c));
      }
    } else {
      append_utf8(out, c);
    }
  }
  out.push_back(quote);
  return out;
}

std::string float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // Shortest round-trip digits in scientific form: "d.ddde+XX".
  std::array<char, 64> buf{};
  const auto res = std::to_chars(buf.data(), buf.data() + buf.size(), value, std::chars_format::scientific);
  std::string sci(buf.data(), res.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t e_pos = sci.find('e');
  std::string digits = sci.substr(0, e_pos);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::atoi(sci.c_str() + e_pos + 1);
  if (exponent >= -4 && exponent < 16) {
    std::string out = sign;
    if (exponent >= 0) {
      const auto int_len = static_cast<size_t>(exponent) + 1;
      if (digits.size() <= int_len) {
        out += digits + std::string(int_len - digits.size(), '0') + ".0";
      } else {
        out.append(digits, 0, int_len);
        out += '.';
        out.append(digits, int_len);
      }
    } else {
      out += "0.";
      out.append(static_cast<size_t>(-exponent - 1), '0');
      out += digits;
    }
    return out;
  }
  const std::string_view rest = std::string_view(digits).substr(1);
  return fmt::format("{}{}{}{}e{}{:02d}", sign, digits[0], rest.empty() ? "" : ".", rest,
                     exponent < 0 ? '-' : '+', std::abs(exponent));
}

namespace {

// Removes Python's allowed underscores (single, between digits) and checks the digit alphabet.
std::optional<std::string> clean_digits(std::string_view s, int base) {
  std::string out;
  bool prev_digit = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '_') {
      if (!prev_digit || i + 1 >= s.size()) return std::nullopt;
      prev_digit = false;
      continue;
    }
    int d = -1;
    if (c >= '0' && c <= '9') d = c - '0';
    if (c >= 'a' && c <= 'z') d = c - 'a' + 10;
    if (c >= 'A' && c <= 'Z') d = c - 'A' + 10;
    if (d < 0 || d >= base) return std::nullopt;
    out.push_back(c);
    prev_digit = true;
  }
  if (out.empty()) return std::nullopt;
  return out;
}

std::string_view trim_ws(std::string_view s) {
  while (!s.empty() && is_ascii_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ascii_space(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

std::optional<int64_t> parse_int(std::string_view s, int base) {
  s = trim_ws(s);
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s.size() > 2 && s[0] == '0') {
    const char p = static_cast<char>(s[1] | 0x20);
    if ((p == 'x' && (base == 16 || base == 0)) || (p == 'o' && (base == 8 || base == 0)) ||
        (p == 'b' && (base == 2 || base == 0))) {
      base = p == 'x' ? 16 : p == 'o' ? 8 : 2;
      s.remove_prefix(2);
      if (!s.empty() && s[0] == '_') s.remove_prefix(1);
    }
  }
  if (base == 0) base = 10;
  const auto digits = clean_digits(s, base);
  if (!digits) return std::nullopt;
  uint64_t magnitude = 0;
  const auto res = std::from_chars(digits->data(), digits->data() + digits->size(), magnitude, base);
  if (res.ec != std::errc() || res.ptr != digits->data() + digits->size()) return std::nullopt;
  if (magnitude > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) + (negative ? 1 : 0)) {
    return std::nullopt;
  }
  return negative ? static_cast<int64_t>(0 - magnitude) : static_cast<int64_t>(magnitude);
}

std::optional<double> parse_float(std::string_view s) {
  s = trim_ws(s);
  std::string clean;
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) clean.push_back(s[i++]);
  std::string rest(s.substr(i));
  std::string lowered;
  for (char c : rest) lowered.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (lowered == "inf" || lowered == "infinity" || lowered == "nan") {
    const double v =
        lowered == "nan" ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
    return (!clean.empty() && clean[0] == '-') ? -v : v;
  }
  // digits [. digits] [e [+-] digits], with single underscores only between digits.
  bool any_digit = false;
  bool prev_digit = false;
  bool seen_dot = false;
  bool seen_exp = false;
  for (size_t k = 0; k < rest.size(); ++k) {
    const char c = rest[k];
    if (c >= '0' && c <= '9') {
      any_digit = true;
      prev_digit = true;
      clean.push_back(c);
    } else if (c == '_') {
      if (!prev_digit || k + 1 >= rest.size() || !(rest[k + 1] >= '0' && rest[k + 1] <= '9')) {
        return std::nullopt;
      }
      prev_digit = false;
    } else if (c == '.' && !seen_dot && !seen_exp) {
      seen_dot = true;
      prev_digit = false;
      clean.push_back(c);
    } else if ((c == 'e' || c == 'E') && !seen_exp && any_digit) {
      seen_exp = true;
      prev_digit = false;
      clean.push_back('e');
      if (k + 1 < rest.size() && (rest[k + 1] == '+' || rest[k + 1] == '-')) clean.push_back(rest[++k]);
      if (k + 1 >= rest.size()) return std::nullopt;
    } else {
      return std::nullopt;
    }
  }
  if (!any_digit) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(clean.c_str(), &end);
  if (end != clean.c_str() + clean.size()) return std::nullopt;
  return v;
}

}  // namespace ds::jinja::pystr
