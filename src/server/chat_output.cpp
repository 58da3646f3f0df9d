#include "server/chat_output.h"

#include <fmt/format.h>

#include "server/api_context.h"
#include "server/errors.h"
#include "server/request_fields.h"

namespace ds::server {

void ChatOutputParser::add(ChatOutputDelta& out, ReasoningDelta r) {
  if (options_.include_reasoning) out.reasoning += r.reasoning;
  if (!options_.tools) {
    out.content += r.content;
    return;
  }
  ToolParseDelta t = tools_.feed(r.content);
  out.content += t.content;
  for (auto& call : t.calls) out.calls.push_back(std::move(call));
}

ChatOutputDelta ChatOutputParser::feed(std::string_view text) {
  ChatOutputDelta out;
  if (options_.reasoning) {
    add(out, reasoning_.feed(text));
  } else {
    add(out, ReasoningDelta{{}, std::string(text)});
  }
  return out;
}

ChatOutputDelta ChatOutputParser::finish() {
  ChatOutputDelta out;
  if (options_.reasoning) add(out, reasoning_.finish());
  if (options_.tools) {
    ToolParseDelta t = tools_.finish();
    out.content += t.content;
    for (auto& call : t.calls) out.calls.push_back(std::move(call));
  }
  return out;
}

std::vector<nlohmann::json> ChatStreamOutput::deltas(std::string_view text, bool last) {
  ChatOutputDelta d = parser_.feed(text);
  if (last) {
    ChatOutputDelta rest = parser_.finish();
    d.reasoning += rest.reasoning;
    d.content += rest.content;
    for (auto& call : rest.calls) d.calls.push_back(std::move(call));
  }
  std::vector<nlohmann::json> out;
  nlohmann::json text_delta = nlohmann::json::object();
  if (!d.reasoning.empty()) text_delta["reasoning_content"] = std::move(d.reasoning);
  if (!d.content.empty()) text_delta["content"] = std::move(d.content);
  if (!text_delta.empty()) out.push_back(std::move(text_delta));
  for (auto& call : d.calls) {
    const int32_t index = calls_sent_++;
    out.push_back(
        {{"tool_calls",
          nlohmann::json::array({{{"index", index},
                                  {"id", random_id("call_")},
                                  {"type", "function"},
                                  {"function", {{"name", std::move(call.name)}, {"arguments", ""}}}}})}});
    out.push_back({{"tool_calls",
                    nlohmann::json::array(
                        {{{"index", index}, {"function", {{"arguments", std::move(call.arguments)}}}}})}});
  }
  return out;
}

nlohmann::json chat_message(const ChatOutputOptions& options, std::string_view text, size_t& num_calls) {
  ChatOutputParser parser(options);
  ChatOutputDelta d = parser.feed(text);
  ChatOutputDelta rest = parser.finish();
  d.reasoning += rest.reasoning;
  d.content += rest.content;
  for (auto& call : rest.calls) d.calls.push_back(std::move(call));
  num_calls = d.calls.size();

  nlohmann::json message = {{"role", "assistant"}};
  if (options.reasoning) {
    message["reasoning_content"] = d.reasoning.empty() ? nlohmann::json() : nlohmann::json(d.reasoning);
  }
  // As vLLM: no content is null once a parser has split the text (plain text stays a string, even "").
  const bool null_content = d.content.empty() && (options.reasoning || !d.calls.empty());
  message["content"] = null_content ? nlohmann::json() : nlohmann::json(d.content);
  if (!d.calls.empty()) {
    nlohmann::json calls = nlohmann::json::array();
    for (auto& call : d.calls) {
      calls.push_back(
          {{"id", random_id("call_")},
           {"type", "function"},
           {"function", {{"name", std::move(call.name)}, {"arguments", std::move(call.arguments)}}}});
    }
    message["tool_calls"] = std::move(calls);
  }
  return message;
}

std::string chat_finish_reason(const std::string& engine_reason, size_t num_calls) {
  return num_calls > 0 && engine_reason == "stop" ? "tool_calls" : engine_reason;
}

ChatOutputOptions chat_output_options(const nlohmann::json& body, const std::string& reasoning_parser,
                                      const nlohmann::ordered_json& tools) {
  ChatOutputOptions o;
  o.reasoning = !reasoning_parser.empty();
  o.include_reasoning = optional_bool(body, "include_reasoning", true);
  const bool has_tools = tools.is_array() && !tools.empty();
  std::string choice = has_tools ? "auto" : "none";
  if (const auto it = body.find("tool_choice"); it != body.end() && !it->is_null()) {
    if (it->is_object()) {
      throw bad_request(
          "a named tool_choice needs guided decoding, which this server does not have; use \"auto\" (the "
          "model decides) or \"none\"",
          "tool_choice");
    }
    if (!it->is_string()) {
      throw bad_request(
          fmt::format("'tool_choice' must be \"none\", \"auto\" or \"required\", got {}", it->dump()),
          "tool_choice");
    }
    choice = it->get<std::string>();
    if (choice == "required") {
      throw bad_request(
          "tool_choice \"required\" needs guided decoding, which this server does not have; use \"auto\" "
          "(the "
          "model decides) or \"none\"",
          "tool_choice");
    }
    if (choice != "none" && choice != "auto") {
      throw bad_request(
          fmt::format("'tool_choice' must be \"none\", \"auto\" or \"required\", got \"{}\"", choice),
          "tool_choice");
    }
    if (choice != "none" && !has_tools) {
      throw bad_request("tool_choice \"auto\" needs 'tools'", "tool_choice");
    }
  }
  o.tools = has_tools && choice == "auto";
  return o;
}

std::vector<int32_t> chat_marker_token_ids(const ChatOutputOptions& options,
                                           const tokenizer::Tokenizer& tokenizer) {
  std::vector<std::string_view> markers;
  if (options.reasoning) markers = {ReasoningParser::kStart, ReasoningParser::kEnd};
  if (options.tools) {
    for (const auto m : {ToolCallParser::kCallsBegin, ToolCallParser::kCallsEnd, ToolCallParser::kCallBegin,
                         ToolCallParser::kCallEnd, ToolCallParser::kSep})
      markers.push_back(m);
  }
  std::vector<int32_t> ids;
  for (const auto m : markers)
    if (const auto id = tokenizer.token_to_id(m)) ids.push_back(*id);
  return ids;
}

}  // namespace ds::server
