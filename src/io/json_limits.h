// Bounds for JSON that comes from outside (request bodies): how deep it may nest, and how much of a value an
// error message may quote.
//
// nlohmann's parser is iterative, but dump(), copies, comparisons and conversions of a parsed value recurse
// once per level: a body of 100,000 nested '[' overflows the stack in the first of them. The depth is
// therefore checked on the text, before parsing, and error messages quote values through json_excerpt,
// which neither recurses without bound nor grows with the value.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace ds {

// Arrays and objects nested deeper than this are refused in a request body. Real requests (tools with
// JSON-schema parameters included) stay far below it.
inline constexpr int kMaxJsonDepth = 64;

// The byte offset of the first '[' or '{' (outside strings) that opens level max_depth + 1, or nullopt when
// `text` never nests deeper than max_depth. A linear scan; malformed text is left to the parser.
[[nodiscard]] std::optional<size_t> find_json_depth_excess(std::string_view text,
                                                           int max_depth = kMaxJsonDepth);

// `value` as compact JSON for an error message, cut to about `max_chars` characters ("..." marks the cut)
// and with structures below the first two levels elided.
[[nodiscard]] std::string json_excerpt(const nlohmann::json& value, size_t max_chars = 80);

// `text` cut to at most `max_bytes` bytes (not inside a UTF-8 sequence), "..." appended when cut.
[[nodiscard]] std::string truncate_text(std::string_view text, size_t max_bytes);

}  // namespace ds
