// Python string semantics over UTF-8, as jinja2 templates see them through Python's str.
//
// Indices, lengths and slices count code points, not bytes. Bytes that are not valid UTF-8 travel
// through unchanged (decoded to U+DC80+byte as Python's surrogateescape does, encoded back to the
// same byte), so a malformed input never crashes the engine and never changes under a no-op.
// Case mapping covers ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic; other scripts are left
// as they are (Python would map a few more, e.g. Armenian and Georgian).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ds::jinja::pystr {

[[nodiscard]] std::u32string decode(std::string_view utf8);
[[nodiscard]] std::string encode(std::u32string_view text);
void append_utf8(std::string& out, char32_t cp);
[[nodiscard]] size_t length(std::string_view utf8);  // in code points
[[nodiscard]] bool is_ascii(std::string_view s);

[[nodiscard]] bool is_space(char32_t c);       // str.isspace
[[nodiscard]] bool is_printable(char32_t c);   // str.isprintable, approximately (see pystr.cpp)
[[nodiscard]] bool is_line_break(char32_t c);  // the separators str.splitlines() splits on
[[nodiscard]] char32_t to_upper(char32_t c);
[[nodiscard]] char32_t to_lower(char32_t c);
[[nodiscard]] bool is_cased(char32_t c);
[[nodiscard]] bool is_alpha(char32_t c);
[[nodiscard]] bool is_digit(char32_t c);

[[nodiscard]] std::string upper(std::string_view s);
[[nodiscard]] std::string lower(std::string_view s);
[[nodiscard]] std::string capitalize(std::string_view s);  // str.capitalize
[[nodiscard]] std::string title(std::string_view s);       // str.title
[[nodiscard]] std::string swapcase(std::string_view s);

// str.strip / lstrip / rstrip; chars == nullopt strips whitespace.
[[nodiscard]] std::string strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                                bool right);
// str.split / str.rsplit; sep == nullopt splits on runs of whitespace. maxsplit < 0: no limit.
// Throws a ValueError fault on an empty separator.
[[nodiscard]] std::vector<std::string> split(std::string_view s, const std::optional<std::string>& sep,
                                             int64_t maxsplit, bool from_right);
[[nodiscard]] std::vector<std::string> splitlines(std::string_view s, bool keepends);
// str.replace; count < 0 replaces all.
[[nodiscard]] std::string replace(std::string_view s, std::string_view old_text, std::string_view new_text,
                                  int64_t count);
// str.find / str.rfind: code-point index or -1.
[[nodiscard]] int64_t find(std::string_view s, std::string_view sub, bool from_right);
[[nodiscard]] int64_t count(std::string_view s, std::string_view sub);

// repr(str): quotes and escapes as CPython does.
[[nodiscard]] std::string repr(std::string_view s);
// repr(float): the shortest string that round-trips, in CPython's layout (1.0, 1e+16, 1e-05, nan, inf).
[[nodiscard]] std::string float_repr(double value);
// Parses a Python int / float literal as int() / float() accept it (surrounding whitespace and
// underscores between digits allowed). Returns nullopt when Python would raise ValueError.
[[nodiscard]] std::optional<int64_t> parse_int(std::string_view s, int base);
[[nodiscard]] std::optional<double> parse_float(std::string_view s);

}  // namespace ds::jinja::pystr
