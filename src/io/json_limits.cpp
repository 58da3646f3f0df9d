#include "io/json_limits.h"

namespace ds {
namespace {

constexpr int kExcerptDepth = 2;

// Appends `value` to `out` until out holds more than `budget` characters.
void append_excerpt(const nlohmann::json& value, int depth, size_t budget, std::string& out) {
  if (out.size() > budget) return;
  if (!value.is_structured()) {
    out += value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return;
  }
  const bool array = value.is_array();
  if (depth >= kExcerptDepth) {
    out += value.empty() ? (array ? "[]" : "{}") : (array ? "[...]" : "{...}");
    return;
  }
  out += array ? '[' : '{';
  bool first = true;
  for (auto it = value.begin(); it != value.end() && out.size() <= budget; ++it) {
    if (!first) out += ',';
    first = false;
    if (!array) {
      out += nlohmann::json(it.key()).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      out += ':';
    }
    append_excerpt(*it, depth + 1, budget, out);
  }
  out += array ? ']' : '}';
}

}  // namespace

std::optional<size_t> find_json_depth_excess(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // the escaped character, whatever it is, cannot end the string
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        break;
      case '[':
      case '{':
        if (++depth > max_depth) return i;
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default:
        break;
    }
  }
  return std::nullopt;
}

std::string json_excerpt(const nlohmann::json& value, size_t max_chars) {
  std::string out;
  append_excerpt(value, 0, max_chars, out);
  return truncate_text(out, max_chars);
}

std::string truncate_text(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return std::string(text.substr(0, cut)) + "...";
}

}  // namespace ds
