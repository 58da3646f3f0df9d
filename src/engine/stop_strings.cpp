#include "engine/stop_strings.h"

#include <algorithm>

namespace ds {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops, bool include_stop_in_output)
    : stops_(std::move(stops)), include_stop_(include_stop_in_output) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
}

StopStringMatcher::Result StopStringMatcher::feed(std::string_view delta, bool check_stops) {
  Result r;
  if (stopped_) return r;
  held_.append(delta);
  if (stops_.empty()) {
    r.emit.swap(held_);
    return r;
  }
  if (check_stops) {
    // The earliest match wins; at the same position, the longest stop string.
    size_t best = std::string::npos, best_len = 0;
    for (const auto& stop : stops_) {
      const size_t at = held_.find(stop);
      if (at != std::string::npos && (at < best || (at == best && stop.size() > best_len))) {
        best = at;
        best_len = stop.size();
      }
    }
    if (best != std::string::npos) {
      r.emit = held_.substr(0, include_stop_ ? best + best_len : best);
      r.stopped = stopped_ = true;
      held_.clear();
      return r;
    }
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& stop : stops_) {
    for (size_t len = std::min(stop.size() - 1, held_.size()); len > keep; --len) {
      if (held_.compare(held_.size() - len, len, stop, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  r.emit = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return r;
}

std::string StopStringMatcher::flush() {
  std::string rest;
  rest.swap(held_);
  return rest;
}

}  // namespace ds
