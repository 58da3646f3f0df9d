#include "server/reasoning_parser.h"

#include <algorithm>

namespace ds::server {

size_t partial_marker_suffix(std::string_view text, std::initializer_list<std::string_view> markers) {
  size_t best = 0;
  for (const std::string_view marker : markers) {
    for (size_t k = std::min(text.size(), marker.size() - 1); k > best; --k) {
      if (text.ends_with(marker.substr(0, k))) {
        best = k;
        break;
      }
    }
  }
  return best;
}

ReasoningDelta ReasoningParser::feed(std::string_view text) {
  ReasoningDelta out;
  held_.append(text);
  std::string_view rest = held_;
  for (;;) {
    std::string& field = in_content_ ? out.content : out.reasoning;
    const size_t start = rest.find(kStart);
    const size_t end = rest.find(kEnd);
    const size_t at = std::min(start, end);
    if (at == std::string_view::npos) {
      const size_t keep = partial_marker_suffix(rest, {kStart, kEnd});
      field.append(rest.substr(0, rest.size() - keep));
      rest.remove_prefix(rest.size() - keep);
      break;
    }
    field.append(rest.substr(0, at));
    if (at == end) {
      rest.remove_prefix(at + kEnd.size());
      in_content_ = true;
    } else {
      rest.remove_prefix(at + kStart.size());
    }
  }
  held_ = std::string(rest);
  return out;
}

ReasoningDelta ReasoningParser::finish() {
  ReasoningDelta out;
  (in_content_ ? out.content : out.reasoning) = std::move(held_);
  held_.clear();
  return out;
}

bool is_known_reasoning_parser(std::string_view name) {
  return name == "deepseek_r1";
}

}  // namespace ds::server
