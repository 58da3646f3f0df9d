// DeepSeek-R1's reasoning split (`--reasoning-parser deepseek_r1`): the generated text is the reasoning up to
// `</think>` and the answer ("content") after it, as vLLM's deepseek_r1 parser splits it.
//
//   - Everything before the first `</think>` is reasoning, also when the output has no `<think>` (R1's chat
//     template opens it in the prompt). If `</think>` never comes, the whole output is reasoning.
//   - The markers themselves are never part of either field: a leading `<think>` is dropped, and so is any
//     other `<think>` or `</think>` (vLLM passes a stray one after the first `</think>` on as content; we
//     drop it, so that no marker ever reaches the client).
//
// Streaming: fed the text deltas of one sample in order (the detokenizer's output), it returns the reasoning
// and content each delta settles. A marker may arrive in pieces ("</" "think" ">"): a tail that could still
// become one is held back until the next delta decides it, or until finish(). The concatenated output does
// not depend on how the text was split into deltas.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

namespace ds::server {

struct ReasoningDelta {
  std::string reasoning;
  std::string content;
};

class ReasoningParser {
 public:
  static constexpr std::string_view kStart = "<think>";
  static constexpr std::string_view kEnd = "</think>";

  [[nodiscard]] ReasoningDelta feed(std::string_view text);
  // The held-back tail (not a marker after all). Call once, at the end.
  [[nodiscard]] ReasoningDelta finish();

  // `</think>` has been seen: from now on everything is content.
  [[nodiscard]] bool in_content() const { return in_content_; }

 private:
  bool in_content_ = false;
  std::string held_;  // text not emitted yet: a possible start of a marker
};

// The names --reasoning-parser accepts.
[[nodiscard]] bool is_known_reasoning_parser(std::string_view name);

// The length of the longest suffix of `text` that is a proper prefix of one of `markers` (text that may still
// turn into a marker once more arrives). Shared with the tool-call parser.
[[nodiscard]] size_t partial_marker_suffix(std::string_view text,
                                           std::initializer_list<std::string_view> markers);

}  // namespace ds::server
