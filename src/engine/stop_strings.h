// Stop strings over a stream of text deltas. A stop string may arrive split across tokens, so any tail of
// the text that could be the start of a stop string is held back until the next delta decides it: the
// client gets the text up to the stop string and never a byte past it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ds {

class StopStringMatcher {
 public:
  StopStringMatcher(std::vector<std::string> stops, bool include_stop_in_output);

  struct Result {
    std::string emit;      // text that is final now
    bool stopped = false;  // a stop string matched: nothing more will be emitted
  };
  // Appends a delta. With check_stops false (before min_tokens) stop strings do not end the stream.
  Result feed(std::string_view delta, bool check_stops = true);
  // At the end of a stream that did not stop on a string: everything still held back.
  std::string flush();

 private:
  std::vector<std::string> stops_;
  bool include_stop_;
  std::string held_;  // not yet emitted: a possible beginning of a stop string
  bool stopped_ = false;
};

}  // namespace ds
