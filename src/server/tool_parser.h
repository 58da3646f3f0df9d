// DeepSeek-V3/R1 tool calls in the generated text (vLLM's `--tool-call-parser deepseek_v3`):
//
//   TEXT<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME
//   ```json
//   ARGS
//   ```<｜tool▁call▁end｜>  (more calls, separated by whitespace or nothing)  <｜tool▁calls▁end｜>
//
// becomes the content TEXT and one tool call per <｜tool▁call▁begin｜>...<｜tool▁call▁end｜>, with ARGS (the
// JSON text between the fences, as the model wrote it) as the call's arguments string.
//
// Lenient where a model is: whitespace between the markers, a missing <｜tool▁calls▁end｜> at the very end
// after complete calls, ARGS without the ```json fence. Text after <｜tool▁calls▁end｜> is content again.
// Malformed output stays text, as vLLM keeps it: a call whose <｜tool▁call▁end｜> never comes, a call without
// <｜tool▁sep｜> or a name, ARGS that are not a JSON object, or anything else where a call must begin — from
// there on the raw text (markers included) is content, and the calls already complete stay calls.
//
// Streaming: fed the text deltas in order, it returns the content each delta settles and each call once it is
// complete (a call is never reported before its arguments are known to be valid, so a streamed answer never
// shows a call that the whole text would not have). The output does not depend on how the text was split.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ds::server {

struct ParsedToolCall {
  std::string name;
  std::string arguments;  // a JSON object, as text
};

struct ToolParseDelta {
  std::string content;
  std::vector<ParsedToolCall> calls;
};

class ToolCallParser {
 public:
  static constexpr std::string_view kCallsBegin = "<｜tool▁calls▁begin｜>";
  static constexpr std::string_view kCallsEnd = "<｜tool▁calls▁end｜>";
  static constexpr std::string_view kCallBegin = "<｜tool▁call▁begin｜>";
  static constexpr std::string_view kCallEnd = "<｜tool▁call▁end｜>";
  static constexpr std::string_view kSep = "<｜tool▁sep｜>";

  [[nodiscard]] ToolParseDelta feed(std::string_view text);
  // Whatever is still undecided: an unfinished tool-call section becomes content. Call once, at the end.
  [[nodiscard]] ToolParseDelta finish();

  [[nodiscard]] size_t num_calls() const { return num_calls_; }

  // A complete call's text (between <｜tool▁call▁begin｜> and <｜tool▁call▁end｜>) into `call`; false when
  // malformed.
  [[nodiscard]] static bool parse_call(std::string_view body, ParsedToolCall& call);

 private:
  enum class State {
    kText,     // content, watching for <｜tool▁calls▁begin｜>
    kSection,  // inside the section, where a call (or the section's end) must come next
    kCall,     // inside a call, waiting for <｜tool▁call▁end｜>
    kRaw,      // the section was malformed: everything is content from here on
  };
  void run(ToolParseDelta& out);
  void to_raw(ToolParseDelta& out);

  State state_ = State::kText;
  std::string buffer_;       // text not decided yet
  std::string section_raw_;  // the raw text of the section since its start or its last complete call
  size_t calls_in_section_ = 0;
  size_t num_calls_ = 0;
  size_t scanned_ = 0;  // kCall: bytes of buffer_ already searched for <｜tool▁call▁end｜>
};

// The names --tool-call-parser accepts.
[[nodiscard]] bool is_known_tool_call_parser(std::string_view name);

}  // namespace ds::server
