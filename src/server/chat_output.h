// A chat answer's text through the reasoning parser (reasoning_parser.h) and the tool-call parser
// (tool_parser.h), into OpenAI's shapes: the reasoning first, then the content part split into content and
// tool calls.
//
// Non-streamed, the message gets `reasoning_content` (with the reasoning parser on: a string, or null when
// there is none), `content` (null when empty and the parsers found something) and `tool_calls`
// ([{id, type: "function", function: {name, arguments}}], only when there are calls). Streamed, each piece of
// text becomes at most one delta of reasoning_content and/or content, then for each call that completed a
// delta {tool_calls: [{index, id, type, function: {name, arguments: ""}}]} and a delta
// {tool_calls: [{index, function: {arguments}}]}. A finish_reason "stop" becomes "tool_calls" when the answer
// has calls. With both parsers off none of this is used and the answer is the plain text.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "server/reasoning_parser.h"
#include "server/tool_parser.h"
#include "tokenizer/tokenizer.h"

namespace ds::server {

struct ChatOutputOptions {
  bool reasoning = false;         // --reasoning-parser deepseek_r1
  bool include_reasoning = true;  // the request's include_reasoning (vLLM): false drops the reasoning
  bool tools = false;             // the request has tools and tool_choice is not "none"
  [[nodiscard]] bool active() const { return reasoning || tools; }
};

struct ChatOutputDelta {
  std::string reasoning;
  std::string content;
  std::vector<ParsedToolCall> calls;
};

// The parsers a chat request gets: the reasoning parser when the server runs one (`reasoning_parser`, empty
// for none) unless the request says include_reasoning false (then the reasoning is split off and dropped);
// the tool-call parser when the request has tools and tool_choice is "auto" (its default with tools).
// tool_choice "none" turns it off; "required" and a named function need guided decoding, which this server
// does not have: 400, as is a tool_choice other than "none" without tools.
[[nodiscard]] ChatOutputOptions chat_output_options(const nlohmann::json& body,
                                                    const std::string& reasoning_parser,
                                                    const nlohmann::ordered_json& tools);

// One sample's text, fed in order.
class ChatOutputParser {
 public:
  explicit ChatOutputParser(const ChatOutputOptions& options) : options_(options) {}
  [[nodiscard]] ChatOutputDelta feed(std::string_view text);
  [[nodiscard]] ChatOutputDelta finish();  // once, at the end
  [[nodiscard]] size_t num_calls() const { return tools_.num_calls(); }

 private:
  void add(ChatOutputDelta& out, ReasoningDelta r);

  ChatOutputOptions options_;
  ReasoningParser reasoning_;
  ToolCallParser tools_;
};

// Streaming: the delta objects of one choice.
class ChatStreamOutput {
 public:
  explicit ChatStreamOutput(const ChatOutputOptions& options) : parser_(options) {}
  // The deltas for the next piece of text (none while a marker is still undecided); `last` also flushes.
  [[nodiscard]] std::vector<nlohmann::json> deltas(std::string_view text, bool last);
  [[nodiscard]] size_t num_calls() const { return parser_.num_calls(); }

 private:
  ChatOutputParser parser_;
  int32_t calls_sent_ = 0;
};

// Non-streamed: the assistant message of the whole text; `num_calls` gets the number of tool calls.
[[nodiscard]] nlohmann::json chat_message(const ChatOutputOptions& options, std::string_view text,
                                          size_t& num_calls);

// The finish reason to report: "tool_calls" instead of "stop" when the answer has calls.
[[nodiscard]] std::string chat_finish_reason(const std::string& engine_reason, size_t num_calls);

// The marker tokens the parsers read, which the detokenizer must not drop as special tokens (DeepSeek's own
// tokenizer.json does not mark them special, but some conversions do): those of `options` in `tokenizer`.
[[nodiscard]] std::vector<int32_t> chat_marker_token_ids(const ChatOutputOptions& options,
                                                         const tokenizer::Tokenizer& tokenizer);

}  // namespace ds::server
