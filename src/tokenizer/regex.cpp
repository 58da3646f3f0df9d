#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>

#include "tokenizer/utf8.h"
#include "util/check.h"

namespace ds::tokenizer {

namespace {

// Oniguruma's \w (ONIGENC_CTYPE_WORD for Unicode): Alphabetic, marks, decimal digits, connector punctuation.
constexpr std::string_view kWordCharsInClass = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}";
constexpr std::string_view kHexDigitsInClass = "0-9A-Fa-f";

// Per-thread match state: PCRE2 match data is not shareable between threads, and a JIT stack larger than
// the 32 KiB default keeps long runs of one character class (a page of spaces) from failing with
// PCRE2_ERROR_JIT_STACKLIMIT.
struct ThreadMatchState {
  pcre2_match_data* match_data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;

  ThreadMatchState() {
    match_data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(64 * 1024, 16 * 1024 * 1024, nullptr);
    DS_CHECK(match_data != nullptr && context != nullptr && jit_stack != nullptr, "PCRE2 allocation failed");
    pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(match_data);
  }
  ThreadMatchState(const ThreadMatchState&) = delete;
  ThreadMatchState& operator=(const ThreadMatchState&) = delete;
};

ThreadMatchState& thread_match_state() {
  thread_local ThreadMatchState state;
  return state;
}

// Appends a set of class members: bare inside a [...] already open, else wrapped in its own class.
void append_class(std::string& out, std::string_view members, bool negated, bool in_class) {
  if (!in_class) out.append(negated ? "[^" : "[");
  out.append(members);
  if (!in_class) out.push_back(']');
}

bool is_hex4(std::string_view s) {
  for (const char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

std::string Regex::translate_oniguruma(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 32);
  int class_depth = 0;  // inside [...] (Oniguruma allows nested classes)
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      const bool in_class = class_depth > 0;
      switch (e) {
        case 's':
          out += "\\p{White_Space}";
          break;
        case 'S':
          out += "\\P{White_Space}";
          break;
        case 'h':
          append_class(out, kHexDigitsInClass, /*negated=*/false, in_class);
          break;
        case 'H':
          if (in_class) {
            out += "\\H";  // no in-class complement; PCRE2's \H (not horizontal space) differs, rare
          } else {
            append_class(out, kHexDigitsInClass, /*negated=*/true, in_class);
          }
          break;
        case 'w':
          append_class(out, kWordCharsInClass, /*negated=*/false, in_class);
          break;
        case 'W':
          if (in_class) {
            out += "\\W";
          } else {
            append_class(out, kWordCharsInClass, /*negated=*/true, in_class);
          }
          break;
        case 'u':
          // Ruby's \uHHHH; PCRE2 spells it \x{HHHH}.
          if (i + 4 < pattern.size() && is_hex4(pattern.substr(i + 1, 4))) {
            out += "\\x{" + std::string(pattern.substr(i + 1, 4)) + "}";
            i += 4;
          } else {
            out += "\\u";
          }
          break;
        default:
          out.push_back('\\');
          out.push_back(e);
      }
      continue;
    }
    if (c == '[') {
      ++class_depth;
      out.push_back(c);
      // A ']' right after '[' or '[^' is a literal in both engines.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out.push_back(pattern[++i]);
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out.push_back(pattern[++i]);
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    out.push_back(c);
  }
  return out;
}

Regex::Regex(std::string_view pattern, std::string_view what, bool literal) : pattern_(pattern) {
  const std::string translated = literal ? std::string(pattern) : translate_oniguruma(pattern);
  // Oniguruma (Ruby syntax): ^ and $ are line anchors, '.' excludes only '\n'.
  uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_NO_UTF_CHECK;
  if (literal) options = PCRE2_UTF | PCRE2_LITERAL | PCRE2_NO_UTF_CHECK;
  pcre2_compile_context* cctx = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(cctx, PCRE2_NEWLINE_LF);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   options, &error_code, &error_offset, cctx);
  pcre2_compile_context_free(cctx);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    throw UserError(fmt::format(
        "tokenizer.json: {}: the regex {:?} does not compile (as PCRE2 {:?}): {} at offset {}", what,
        std::string(pattern), translated, reinterpret_cast<const char*>(message), error_offset));
  }
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() {
  pcre2_code_free(static_cast<pcre2_code*>(code_));
}

bool Regex::search(std::string_view subject, size_t offset, bool anchored, RegexMatch& m) const {
  ThreadMatchState& state = thread_match_state();
  uint32_t options = PCRE2_NO_UTF_CHECK;
  if (anchored) options |= PCRE2_ANCHORED;
  const int rc =
      pcre2_match(static_cast<const pcre2_code*>(code_), reinterpret_cast<PCRE2_SPTR>(subject.data()),
                  subject.size(), offset, options, state.match_data, state.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(rc, message, sizeof(message));
    throw UserError(fmt::format("tokenizer regex {:?} failed on a {}-byte input: {}", pattern_,
                                subject.size(), reinterpret_cast<const char*>(message)));
  }
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.match_data);
  m.start = ovector[0];
  m.end = ovector[1];
  return true;
}

void Regex::find_all(std::string_view subject, std::vector<RegexMatch>& out) const {
  size_t offset = 0;
  bool have_last_end = false;
  size_t last_end = 0;
  RegexMatch m;
  while (offset <= subject.size() && search(subject, offset, false, m)) {
    if (m.start == m.end && have_last_end && m.end == last_end) {
      // An empty match right where the previous match ended: step one character and search again.
      if (offset >= subject.size()) break;
      offset += utf8_char_length(static_cast<unsigned char>(subject[offset]));
      continue;
    }
    out.push_back(m);
    offset = m.end;
    last_end = m.end;
    have_last_end = true;
  }
}

bool Regex::matches_at(std::string_view subject, size_t offset) const {
  RegexMatch m;
  return offset <= subject.size() && search(subject, offset, true, m);
}

}  // namespace ds::tokenizer
