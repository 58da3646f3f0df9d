#include "tokenizer/jinja/lexer.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>

#include "tokenizer/jinja/pystr.h"

namespace ds::jinja {
namespace {

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_name_char(char c) {
  return is_name_start(c) || is_digit(c);
}

// Operators, longest first (jinja2 matches them the same way).
constexpr std::array<std::string_view, 25> kOperators = {
    "//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[",
    "]",  "(",  ")",  "{",  "}",  ">",  "<", "=", ".", ":", "|", ",",
};

class Lexer {
 public:
  Lexer(std::string_view source, const LexerOptions& options) : opt_(options) {
    // Normalize "\r\n" and "\r" to "\n", then drop one trailing newline.
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_.push_back('\n');
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_.push_back(source[i]);
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      const size_t start = find_tag_start(pos_);
      if (start == std::string::npos) {
        emit_text(src_.substr(pos_), pos_);
        break;
      }
      const char kind = src_[start + 1];
      size_t after = start + 2;
      char sign = 0;
      if (after < src_.size() && (src_[after] == '-' || src_[after] == '+')) sign = src_[after++];
      std::string text = src_.substr(pos_, start - pos_);
      apply_strip_before(text, sign, kind);
      emit_text(std::move(text), pos_);
      if (kind == '#') {
        lex_comment(start, after);
      } else if (kind == '%' && raw_begin(after)) {
        lex_raw(start);
      } else {
        lex_tag(kind, start, after);
      }
    }
    Token eof;
    eof.type = TokenType::kEof;
    eof.location = location(src_.size());
    out_.push_back(std::move(eof));
    return std::move(out_);
  }

 private:
  SourceLocation location(size_t p) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), p);
    const auto line = static_cast<size_t>(it - line_starts_.begin());
    return {static_cast<int>(line), static_cast<int>(p - line_starts_[line - 1] + 1)};
  }

  [[noreturn]] void fail(const std::string& message, size_t p) const {
    throw TemplateSyntaxError(message, location(p));
  }

  size_t find_tag_start(size_t from) const {
    size_t p = from;
    while (true) {
      p = src_.find('{', p);
      if (p == std::string::npos || p + 1 >= src_.size()) return std::string::npos;
      const char c = src_[p + 1];
      if (c == '{' || c == '%' || c == '#') return p;
      ++p;
    }
  }

  // jinja2's OptionalLStrip: "-" strips all whitespace; otherwise lstrip_blocks strips the
  // indentation of a block or comment tag that starts its line.
  void apply_strip_before(std::string& text, char sign, char kind) const {
    if (sign == '-') {
      size_t end = text.size();
      while (end > 0 && is_ws(text[end - 1])) --end;
      text.resize(end);
      return;
    }
    if (sign == '+' || !opt_.lstrip_blocks || kind == '{') return;
    const size_t nl = text.rfind('\n');
    const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
    if (l_pos == 0 && !line_starting_) return;
    for (size_t i = l_pos; i < text.size(); ++i) {
      if (!is_ws(text[i])) return;
    }
    text.resize(l_pos);
  }

  void emit_text(std::string text, size_t at) {
    if (text.empty()) return;
    Token t;
    t.type = TokenType::kText;
    t.value = std::move(text);
    t.location = location(at);
    out_.push_back(std::move(t));
  }

  void emit(TokenType type, std::string value, size_t at) {
    Token t;
    t.type = type;
    t.value = std::move(value);
    t.location = location(at);
    out_.push_back(std::move(t));
  }

  // Consumes what follows a closing delimiter: all whitespace after "-", one "\n" with trim_blocks.
  void finish_tag(size_t end_of_delimiter, char sign, bool is_block_like) {
    size_t p = end_of_delimiter;
    if (sign == '-') {
      while (p < src_.size() && is_ws(src_[p])) ++p;
    } else if (sign == 0 && is_block_like && opt_.trim_blocks && p < src_.size() && src_[p] == '\n') {
      ++p;
    }
    line_starting_ = p > 0 && src_[p - 1] == '\n';
    pos_ = p;
  }

  void lex_comment(size_t start, size_t after) {
    const size_t end = src_.find("#}", after);
    if (end == std::string::npos) fail("Missing end of comment tag", start);
    char sign = 0;
    if (end > after && (src_[end - 1] == '-' || src_[end - 1] == '+')) sign = src_[end - 1];
    finish_tag(end + 2, sign, true);
  }

  // `{% raw %}` (with optional "-"/"+" and whitespace): sets raw_body_ to where the raw text starts.
  bool raw_begin(size_t after) {
    size_t p = after;
    while (p < src_.size() && is_ws(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    if (p < src_.size() && is_name_char(src_[p])) return false;
    while (p < src_.size() && is_ws(src_[p])) ++p;
    if (src_.compare(p, 3, "-%}") == 0) {
      p += 3;
      while (p < src_.size() && is_ws(src_[p])) ++p;
    } else if (src_.compare(p, 2, "%}") == 0) {
      p += 2;
    } else {
      return false;
    }
    raw_body_ = p;
    return true;
  }

  void lex_raw(size_t start) {
    size_t search = raw_body_;
    while (true) {
      const size_t tag = src_.find("{%", search);
      if (tag == std::string::npos) fail("Missing end of raw directive", start);
      size_t p = tag + 2;
      char sign = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
      while (p < src_.size() && is_ws(src_[p])) ++p;
      if (src_.compare(p, 6, "endraw") != 0) {
        search = tag + 2;
        continue;
      }
      p += 6;
      while (p < src_.size() && is_ws(src_[p])) ++p;
      char end_sign = 0;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) end_sign = src_[p++];
      if (src_.compare(p, 2, "%}") != 0) {
        search = tag + 2;
        continue;
      }
      std::string text = src_.substr(raw_body_, tag - raw_body_);
      line_starting_ = raw_body_ > 0 && src_[raw_body_ - 1] == '\n';
      apply_strip_before(text, sign, '%');
      emit_text(std::move(text), raw_body_);
      finish_tag(p + 2, end_sign, true);
      return;
    }
  }

  void lex_tag(char kind, size_t start, size_t after) {
    const bool block = kind == '%';
    emit(block ? TokenType::kBlockBegin : TokenType::kVariableBegin, "", start);
    std::vector<char> balance;
    size_t p = after;
    while (true) {
      while (p < src_.size() && is_ws(src_[p])) ++p;
      if (p >= src_.size()) fail(block ? "Missing end of block tag" : "Missing end of variable tag", start);
      if (balance.empty()) {
        const std::string_view close = block ? "%}" : "}}";
        const std::string_view rest = std::string_view(src_).substr(p);
        char sign = 0;
        size_t delim = std::string::npos;
        if (rest.size() >= 3 && rest[0] == '-' && rest.substr(1, 2) == close) {
          sign = '-', delim = p + 1;
        } else if (block && rest.size() >= 3 && rest[0] == '+' && rest.substr(1, 2) == close) {
          sign = '+', delim = p + 1;
        } else if (rest.substr(0, 2) == close) {
          delim = p;
        }
        if (delim != std::string::npos) {
          emit(block ? TokenType::kBlockEnd : TokenType::kVariableEnd, "", p);
          finish_tag(delim + 2, sign, block);
          return;
        }
      }
      p = lex_token(p, balance);
    }
  }

  size_t lex_token(size_t p, std::vector<char>& balance) {
    const char c = src_[p];
    if (is_digit(c)) return lex_number(p);
    if (is_name_start(c)) {
      size_t e = p;
      while (e < src_.size() && is_name_char(src_[e])) ++e;
      emit(TokenType::kName, src_.substr(p, e - p), p);
      return e;
    }
    if (c == '\'' || c == '"') return lex_string(p);
    for (std::string_view op : kOperators) {
      if (src_.compare(p, op.size(), op) != 0) continue;
      if (op == "{" || op == "(" || op == "[") {
        balance.push_back(op == "{" ? '}' : op == "(" ? ')' : ']');
      } else if (op == "}" || op == ")" || op == "]") {
        if (balance.empty()) fail(fmt::format("unexpected '{}'", op), p);
        if (balance.back() != op[0])
          fail(fmt::format("unexpected '{}', expected '{}'", op, balance.back()), p);
        balance.pop_back();
      }
      emit(TokenType::kOperator, std::string(op), p);
      return p + op.size();
    }
    fail(fmt::format("unexpected char {} at {}", pystr::repr(std::string(1, c)), p), p);
  }

  // Digits with single underscores between them: (\d+_)*\d+
  size_t scan_digits(size_t p) const {
    size_t e = p;
    while (e < src_.size() &&
           (is_digit(src_[e]) || (src_[e] == '_' && e + 1 < src_.size() && is_digit(src_[e + 1]) && e > p &&
                                  is_digit(src_[e - 1])))) {
      ++e;
    }
    return e;
  }

  size_t lex_number(size_t p) {
    const bool after_dot = !out_.empty() && out_.back().type == TokenType::kOperator &&
                           out_.back().value == "." && p > 0 && src_[p - 1] == '.';
    // 0b / 0o / 0x integers: (_?digit)+ after the prefix, else just "0" (so `0or x` is `0 or x`).
    auto digit_of = [](char c, int base) {
      const int d = std::isdigit(static_cast<unsigned char>(c))    ? c - '0'
                    : std::isxdigit(static_cast<unsigned char>(c)) ? (c | 0x20) - 'a' + 10
                                                                   : 99;
      return d < base;
    };
    const int base = p + 1 >= src_.size()          ? 0
                     : (src_[p + 1] | 0x20) == 'b' ? 2
                     : (src_[p + 1] | 0x20) == 'o' ? 8
                     : (src_[p + 1] | 0x20) == 'x' ? 16
                                                   : 0;
    size_t pe = p + 2;
    while (base != 0 && src_[p] == '0' && pe < src_.size()) {
      if (digit_of(src_[pe], base)) {
        ++pe;
      } else if (src_[pe] == '_' && pe + 1 < src_.size() && digit_of(src_[pe + 1], base)) {
        pe += 2;
      } else {
        break;
      }
    }
    if (base != 0 && src_[p] == '0' && pe > p + 2) {
      const auto v = pystr::parse_int(std::string_view(src_).substr(p, pe - p), base);
      if (!v) fail("integer literal too large", p);
      Token t;
      t.type = TokenType::kInteger;
      t.value = src_.substr(p, pe - p);
      t.int_value = *v;
      t.location = location(p);
      out_.push_back(std::move(t));
      return pe;
    }
    size_t e = scan_digits(p);
    bool is_float = false;
    if (!after_dot) {
      size_t f = e;
      if (f + 1 < src_.size() && src_[f] == '.' && is_digit(src_[f + 1])) {
        f = scan_digits(f + 1);
        is_float = true;
      }
      if (f < src_.size() && (src_[f] == 'e' || src_[f] == 'E')) {
        size_t g = f + 1;
        if (g < src_.size() && (src_[g] == '+' || src_[g] == '-')) ++g;
        if (g < src_.size() && is_digit(src_[g])) {
          f = scan_digits(g);
          is_float = true;
        }
      }
      if (is_float) e = f;
    }
    const std::string text = src_.substr(p, e - p);
    Token t;
    t.value = text;
    t.location = location(p);
    if (is_float) {
      t.type = TokenType::kFloat;
      t.float_value = pystr::parse_float(text).value_or(0.0);
    } else {
      t.type = TokenType::kInteger;
      const auto v = pystr::parse_int(text, 10);
      if (!v) fail("integer literal too large", p);
      t.int_value = *v;
    }
    out_.push_back(std::move(t));
    return e;
  }

  size_t lex_string(size_t p) {
    const char quote = src_[p];
    size_t e = p + 1;
    while (e < src_.size() && src_[e] != quote) {
      if (src_[e] == '\\') ++e;
      ++e;
    }
    if (e >= src_.size())
      fail(fmt::format("unexpected char {} at {}", pystr::repr(std::string(1, quote)), p), p);
    Token t;
    t.type = TokenType::kString;
    t.value = unescape(std::string_view(src_).substr(p + 1, e - p - 1), p);
    t.location = location(p);
    out_.push_back(std::move(t));
    return e + 1;
  }

  // Python's "unicode-escape" decoding, which jinja2 applies to string literals.
  std::string unescape(std::string_view s, size_t at) const {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '\\' || i + 1 >= s.size()) {
        out.push_back(s[i]);
        continue;
      }
      const char c = s[++i];
      auto hex = [&](size_t digits) {
        if (i + digits >= s.size()) fail("truncated escape in string literal", at);
        const std::string h(s.substr(i + 1, digits));
        if (!std::all_of(h.begin(), h.end(),
                         [](char x) { return std::isxdigit(static_cast<unsigned char>(x)); })) {
          fail("truncated escape in string literal", at);
        }
        i += digits;
        return static_cast<char32_t>(std::strtoul(h.c_str(), nullptr, 16));
      };
      switch (c) {
        case '\n':
          break;  // line continuation
        case '\\':
          out.push_back('\\');
          break;
        case '\'':
          out.push_back('\'');
          break;
        case '"':
          out.push_back('"');
          break;
        case 'a':
          out.push_back('\a');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'v':
          out.push_back('\v');
          break;
        case 'x':
          pystr::append_utf8(out, hex(2));
          break;
        case 'u':
          pystr::append_utf8(out, hex(4));
          break;
        case 'U': {
          const char32_t cp = hex(8);
          if (cp > 0x10FFFF) fail("illegal Unicode character in string literal", at);
          pystr::append_utf8(out, cp);
          break;
        }
        default:
          if (c >= '0' && c <= '7') {
            char32_t v = static_cast<char32_t>(c - '0');
            for (int k = 0; k < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7'; ++k) {
              v = v * 8 + static_cast<char32_t>(s[++i] - '0');
            }
            pystr::append_utf8(out, v);
          } else {
            out.push_back('\\');
            out.push_back(c);
          }
      }
    }
    return out;
  }

  std::string src_;
  LexerOptions opt_;
  std::vector<size_t> line_starts_;
  std::vector<Token> out_;
  size_t pos_ = 0;
  size_t raw_body_ = 0;
  bool line_starting_ = true;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source, const LexerOptions& options) {
  return Lexer(source, options).run();
}

}  // namespace ds::jinja
