// The reasoning parser (deepseek_r1), the DeepSeek tool-call parser and their combination (chat_output.h),
// fed realistic model outputs whole and split every possible way into 2 and 3 deltas (at character
// boundaries, as the detokenizer delivers text), and one character at a time: the result must not depend on
// the split.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "server/chat_output.h"
#include "server/errors.h"
#include "server/reasoning_parser.h"
#include "server/tool_parser.h"

namespace ds::server {
namespace {

using nlohmann::json;

// Offsets of the UTF-8 character starts of `s`, and s.size().
std::vector<size_t> char_boundaries(const std::string& s) {
  std::vector<size_t> out;
  for (size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) out.push_back(i);
  out.push_back(s.size());
  return out;
}

// Calls `f` with every split of `s` into 1, 2 and 3 pieces, and with the split into single characters.
void for_each_split(const std::string& s, const std::function<void(const std::vector<std::string>&)>& f) {
  const auto b = char_boundaries(s);
  f({s});
  for (size_t i = 0; i < b.size(); ++i) {
    f({s.substr(0, b[i]), s.substr(b[i])});
    for (size_t j = i; j < b.size(); ++j) f({s.substr(0, b[i]), s.substr(b[i], b[j] - b[i]), s.substr(b[j])});
  }
  std::vector<std::string> chars;
  for (size_t i = 0; i + 1 < b.size(); ++i) chars.push_back(s.substr(b[i], b[i + 1] - b[i]));
  f(chars);
}

std::string describe(const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) out += "[" + p + "]";
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Reasoning.

struct Split {
  std::string reasoning;
  std::string content;
};

Split run_reasoning(const std::vector<std::string>& pieces) {
  ReasoningParser p;
  Split out;
  for (const auto& piece : pieces) {
    const auto d = p.feed(piece);
    out.reasoning += d.reasoning;
    out.content += d.content;
  }
  const auto d = p.finish();
  out.reasoning += d.reasoning;
  out.content += d.content;
  return out;
}

void expect_reasoning(const std::string& text, const std::string& reasoning, const std::string& content) {
  int checked = 0;
  for_each_split(text, [&](const std::vector<std::string>& pieces) {
    const Split s = run_reasoning(pieces);
    ASSERT_EQ(s.reasoning, reasoning) << describe(pieces);
    ASSERT_EQ(s.content, content) << describe(pieces);
    ++checked;
  });
  EXPECT_GT(checked, 0);
}

TEST(ReasoningParser, ThinkThenAnswer) {
  expect_reasoning("<think>\nThe user greets me. I should greet back.\n</think>\n\nHello! How can I help?",
                   "\nThe user greets me. I should greet back.\n", "\n\nHello! How can I help?");
}

TEST(ReasoningParser, NoStartMarkerBecauseTheTemplateOpenedIt) {
  expect_reasoning("Okay, 2 + 2 is 4.\n</think>\n\nThe answer is 4.", "Okay, 2 + 2 is 4.\n",
                   "\n\nThe answer is 4.");
}

TEST(ReasoningParser, NoEndMarkerIsAllReasoning) {
  expect_reasoning("<think>\nStill thinking when max_tokens ran out",
                   "\nStill thinking when max_tokens ran out", "");
  expect_reasoning("no markers at all", "no markers at all", "");
}

TEST(ReasoningParser, EmptyAndMarkersOnly) {
  expect_reasoning("", "", "");
  expect_reasoning("<think>", "", "");
  expect_reasoning("</think>", "", "");
  expect_reasoning("<think></think>", "", "");
  expect_reasoning("<think>\n\n</think>\n\n", "\n\n", "\n\n");
}

TEST(ReasoningParser, LookalikesStayText) {
  expect_reasoning("a < b, <thinking> and </thin k> and <think", "a < b, <thinking> and </thin k> and <think",
                   "");
  expect_reasoning("x</think>1 < 2 and </thinker> <th", "x", "1 < 2 and </thinker> <th");
}

TEST(ReasoningParser, NoMarkerEverLeaks) {
  expect_reasoning("<think>a<think>b</think>c</think>d<think>e", "ab", "cde");
  expect_reasoning("<<think>>x<</think>>y", "<>x<", ">y");
}

TEST(ReasoningParser, Unicode) {
  expect_reasoning("<think>Größe: 思考中…</think>答案是 4 ✓", "Größe: 思考中…", "答案是 4 ✓");
}

TEST(ReasoningParser, PartialMarkerSuffix) {
  EXPECT_EQ(partial_marker_suffix("abc</th", {"<think>", "</think>"}), 4u);
  EXPECT_EQ(partial_marker_suffix("abc<", {"<think>", "</think>"}), 1u);
  EXPECT_EQ(partial_marker_suffix("abc", {"<think>", "</think>"}), 0u);
  EXPECT_EQ(partial_marker_suffix("</think", {"</think>"}), 7u);
  EXPECT_EQ(partial_marker_suffix("</think>", {"</think>"}), 0u);  // whole markers are found, not held
}

// ---------------------------------------------------------------------------------------------------------
// Tool calls.

const std::string kBegin = "<｜tool▁calls▁begin｜>";
const std::string kEnd = "<｜tool▁calls▁end｜>";
const std::string kCall = "<｜tool▁call▁begin｜>";
const std::string kCallEnd = "<｜tool▁call▁end｜>";
const std::string kSep = "<｜tool▁sep｜>";

std::string call_text(const std::string& name, const std::string& args) {
  return kCall + "function" + kSep + name + "\n```json\n" + args + "\n```" + kCallEnd;
}

struct ToolResult {
  std::string content;
  std::vector<ParsedToolCall> calls;
};

ToolResult run_tools(const std::vector<std::string>& pieces) {
  ToolCallParser p;
  ToolResult out;
  auto add = [&](ToolParseDelta d) {
    out.content += d.content;
    for (auto& c : d.calls) out.calls.push_back(std::move(c));
  };
  for (const auto& piece : pieces) add(p.feed(piece));
  add(p.finish());
  EXPECT_EQ(p.num_calls(), out.calls.size());
  return out;
}

void expect_tools(const std::string& text, const std::string& content,
                  const std::vector<std::pair<std::string, std::string>>& calls) {
  for_each_split(text, [&](const std::vector<std::string>& pieces) {
    const ToolResult r = run_tools(pieces);
    ASSERT_EQ(r.content, content) << describe(pieces);
    ASSERT_EQ(r.calls.size(), calls.size()) << describe(pieces);
    for (size_t i = 0; i < calls.size(); ++i) {
      ASSERT_EQ(r.calls[i].name, calls[i].first) << describe(pieces);
      ASSERT_EQ(r.calls[i].arguments, calls[i].second) << describe(pieces);
    }
  });
}

TEST(ToolCallParser, ContentThenOneCall) {
  expect_tools("Let me check." + kBegin + call_text("get_weather", R"({"city": "Paris"})") + kEnd,
               "Let me check.", {{"get_weather", R"({"city": "Paris"})"}});
}

TEST(ToolCallParser, TwoCallsSeparatedByNewlineOrNothing) {
  const std::string a = call_text("get_weather", R"({"city": "Paris"})");
  const std::string b = call_text("get_time", R"({"tz": "Europe/Paris", "fmt": 24})");
  const std::vector<std::pair<std::string, std::string>> calls = {
      {"get_weather", R"({"city": "Paris"})"}, {"get_time", R"({"tz": "Europe/Paris", "fmt": 24})"}};
  expect_tools(kBegin + a + "\n" + b + kEnd, "", calls);
  expect_tools(kBegin + a + b + kEnd, "", calls);
  expect_tools(kBegin + "\n" + a + " \n" + b + "\n" + kEnd, "", calls);
}

TEST(ToolCallParser, NoTools) {
  expect_tools("Just an answer, with <｜ and ``` and {\"json\": 1}.",
               "Just an answer, with <｜ and ``` and {\"json\": 1}.", {});
  expect_tools("", "", {});
  expect_tools("ends with half a marker <｜tool▁cal", "ends with half a marker <｜tool▁cal", {});
}

TEST(ToolCallParser, MissingSectionEndAfterCompleteCalls) {
  expect_tools("ok" + kBegin + call_text("f", R"({"a": [1, 2]})"), "ok", {{"f", R"({"a": [1, 2]})"}});
  expect_tools("ok" + kBegin + call_text("f", R"({"a": 1})") + "\n", "ok", {{"f", R"({"a": 1})"}});
}

TEST(ToolCallParser, TextAfterTheSectionIsContent) {
  expect_tools("before " + kBegin + call_text("f", "{}") + kEnd + " after", "before  after", {{"f", "{}"}});
}

TEST(ToolCallParser, MultilineArgumentsAndNoFence) {
  expect_tools(kBegin + call_text("f", "{\n  \"a\": 1,\n  \"b\": \"x\\ny\"\n}") + kEnd, "",
               {{"f", "{\n  \"a\": 1,\n  \"b\": \"x\\ny\"\n}"}});
  expect_tools(kBegin + kCall + "function" + kSep + "f\n{\"a\": 1}" + kCallEnd + kEnd, "",
               {{"f", R"({"a": 1})"}});
}

TEST(ToolCallParser, MalformedStaysText) {
  // No <｜tool▁call▁end｜> by the end.
  const std::string open =
      "Sure." + kBegin + kCall + "function" + kSep + "get_weather\n```json\n{\"city\": \"Pa";
  expect_tools(open, open, {});
  // Bad JSON, and JSON that is not an object.
  const std::string bad = kBegin + call_text("f", R"({"city": Paris})") + kEnd;
  expect_tools("x" + bad, "x" + bad, {});
  const std::string array = kBegin + call_text("f", "[1, 2]") + kEnd;
  expect_tools(array, array, {});
  // No separator, no name.
  const std::string no_sep = kBegin + kCall + "function get_weather\n```json\n{}\n```" + kCallEnd + kEnd;
  expect_tools(no_sep, no_sep, {});
  const std::string no_name = kBegin + call_text(" ", "{}") + kEnd;
  expect_tools(no_name, no_name, {});
  // Something else where a call must begin; the section opened at the very end.
  expect_tools("a" + kBegin + "oops" + kEnd, "a" + kBegin + "oops" + kEnd, {});
  expect_tools("a" + kBegin + "\n", "a" + kBegin + "\n", {});
  expect_tools("a" + kBegin + "<｜tool▁ca", "a" + kBegin + "<｜tool▁ca", {});
}

TEST(ToolCallParser, CompleteCallsStayCallsWhenALaterOneIsMalformed) {
  const std::string good = call_text("f", R"({"a": 1})");
  const std::string rest = "\n" + call_text("g", "{oops}") + kEnd + "tail";
  expect_tools("c" + kBegin + good + rest, "c" + rest, {{"f", R"({"a": 1})"}});
  const std::string unfinished = "\n" + kCall + "function" + kSep + "g\n```json\n{";
  expect_tools(kBegin + good + unfinished, unfinished, {{"f", R"({"a": 1})"}});
}

TEST(ToolCallParser, ParseCall) {
  ParsedToolCall call;
  EXPECT_TRUE(ToolCallParser::parse_call(
      "function" + kSep + "get_weather\n```json\n{\"city\": \"Paris\"}\n```", call));
  EXPECT_EQ(call.name, "get_weather");
  EXPECT_EQ(call.arguments, R"({"city": "Paris"})");
  EXPECT_FALSE(ToolCallParser::parse_call("function" + kSep + "f\n```json\n{}", call));   // unclosed fence
  EXPECT_FALSE(ToolCallParser::parse_call("function" + kSep + "f", call));                // no newline
  EXPECT_FALSE(ToolCallParser::parse_call("function" + kSep + "f\n```json\n```", call));  // no JSON
  EXPECT_FALSE(ToolCallParser::parse_call("function" + kSep + "f\n\"text\"", call));
}

// ---------------------------------------------------------------------------------------------------------
// Both, through chat_output.h: the streamed deltas add up to the non-streamed message.

// Folds streamed deltas into a message as an OpenAI client does.
json fold_deltas(const std::vector<json>& deltas) {
  json m = {{"reasoning_content", ""}, {"content", ""}, {"tool_calls", json::array()}};
  for (const auto& d : deltas) {
    if (d.contains("reasoning_content"))
      m["reasoning_content"] =
          m["reasoning_content"].get<std::string>() + d["reasoning_content"].get<std::string>();
    if (d.contains("content"))
      m["content"] = m["content"].get<std::string>() + d["content"].get<std::string>();
    if (d.contains("tool_calls")) {
      for (const auto& tc : d["tool_calls"]) {
        const size_t i = tc["index"];
        if (i == m["tool_calls"].size()) {
          EXPECT_TRUE(tc.contains("id") && tc.contains("type") && tc["function"].contains("name"))
              << tc.dump();
          EXPECT_EQ(tc["function"]["arguments"], "");
          m["tool_calls"].push_back({{"id", tc["id"]},
                                     {"type", tc["type"]},
                                     {"function", {{"name", tc["function"]["name"]}, {"arguments", ""}}}});
        } else {
          EXPECT_LT(i, m["tool_calls"].size());
          EXPECT_FALSE(tc.contains("id"));
          auto& args = m["tool_calls"][i]["function"]["arguments"];
          args = args.get<std::string>() + tc["function"]["arguments"].get<std::string>();
        }
      }
    }
  }
  return m;
}

// The message without the random ids, with empty fields as null, for comparing.
json normalized(json m) {
  if (m.contains("tool_calls")) {
    for (auto& tc : m["tool_calls"]) {
      EXPECT_TRUE(tc["id"].get<std::string>().starts_with("call_"));
      tc.erase("id");
    }
    if (m["tool_calls"].empty()) m.erase("tool_calls");
  }
  for (const char* f : {"reasoning_content", "content"})
    if (m.contains(f) && m[f] == "") m[f] = nullptr;
  m.erase("role");
  return m;
}

void expect_chat(const ChatOutputOptions& options, const std::string& text, const json& expected,
                 size_t expected_calls) {
  size_t calls = 0;
  const json whole = chat_message(options, text, calls);
  EXPECT_EQ(whole["role"], "assistant");
  EXPECT_EQ(normalized(whole), expected) << whole.dump();
  EXPECT_EQ(calls, expected_calls);
  json expected_streamed = expected;
  if (!options.reasoning) expected_streamed["reasoning_content"] = nullptr;
  for_each_split(text, [&](const std::vector<std::string>& pieces) {
    ChatStreamOutput out(options);
    std::vector<json> deltas;
    for (size_t i = 0; i < pieces.size(); ++i)
      for (auto& d : out.deltas(pieces[i], i + 1 == pieces.size())) {
        ASSERT_FALSE(d.empty());
        deltas.push_back(std::move(d));
      }
    ASSERT_EQ(out.num_calls(), expected_calls);
    ASSERT_EQ(normalized(fold_deltas(deltas)), expected_streamed) << describe(pieces);
  });
}

const std::string kR1Output =
    "<think>\nThe user wants the weather. I will call get_weather.\n</think>\n\nLet me check." + kBegin +
    call_text("get_weather", R"({"city": "Paris"})") + kEnd;

TEST(ChatOutput, ReasoningThenContentThenToolCall) {
  const json expected = {
      {"reasoning_content", "\nThe user wants the weather. I will call get_weather.\n"},
      {"content", "\n\nLet me check."},
      {"tool_calls",
       {{{"type", "function"},
         {"function", {{"name", "get_weather"}, {"arguments", R"({"city": "Paris"})"}}}}}}};
  expect_chat({.reasoning = true, .include_reasoning = true, .tools = true}, kR1Output, expected, 1);
}

TEST(ChatOutput, ReasoningOnly) {
  expect_chat({.reasoning = true}, "<think>hmm</think>4", {{"reasoning_content", "hmm"}, {"content", "4"}},
              0);
  expect_chat({.reasoning = true}, "hmm", {{"reasoning_content", "hmm"}, {"content", nullptr}}, 0);
  expect_chat({.reasoning = true}, "</think>4", {{"reasoning_content", nullptr}, {"content", "4"}}, 0);
  // include_reasoning false: split off and dropped.
  expect_chat({.reasoning = true, .include_reasoning = false}, "<think>hmm</think>4",
              {{"reasoning_content", nullptr}, {"content", "4"}}, 0);
}

TEST(ChatOutput, ToolsOnly) {
  const std::string text =
      "Sure." + kBegin + call_text("f", R"({"x": 1})") + "\n" + call_text("g", "{}") + kEnd;
  const json expected = {
      {"content", "Sure."},
      {"tool_calls",
       {{{"type", "function"}, {"function", {{"name", "f"}, {"arguments", R"({"x": 1})"}}}},
        {{"type", "function"}, {"function", {{"name", "g"}, {"arguments", "{}"}}}}}}};
  expect_chat({.tools = true}, text, expected, 2);
  // Without the reasoning parser, <think> is plain content.
  expect_chat({.tools = true}, "<think>x</think>y", {{"content", "<think>x</think>y"}}, 0);
  // Malformed: all text, as it came.
  const std::string bad = "a" + kBegin + call_text("f", "{nope}") + kEnd;
  expect_chat({.tools = true}, bad, {{"content", bad}}, 0);
}

TEST(ChatOutput, ToolMarkersInsideReasoningAreReasoning) {
  const std::string text = "<think>maybe " + kBegin + "</think>fine";
  expect_chat({.reasoning = true, .tools = true}, text,
              {{"reasoning_content", "maybe " + kBegin}, {"content", "fine"}}, 0);
}

TEST(ChatOutput, FinishReason) {
  EXPECT_EQ(chat_finish_reason("stop", 1), "tool_calls");
  EXPECT_EQ(chat_finish_reason("stop", 0), "stop");
  EXPECT_EQ(chat_finish_reason("length", 2), "length");
  EXPECT_EQ(chat_finish_reason("abort", 1), "abort");
}

TEST(ChatOutput, Options) {
  const json tools = json::array({{{"type", "function"}, {"function", {{"name", "f"}}}}});
  const auto options = [](const json& body, const std::string& parser, const json& t) {
    return chat_output_options(body, parser, nlohmann::ordered_json::parse(t.dump()));
  };
  EXPECT_TRUE(options(json::object(), "", tools).tools);
  EXPECT_FALSE(options(json::object(), "", tools).reasoning);
  EXPECT_TRUE(options(json::object(), "deepseek_r1", nullptr).reasoning);
  EXPECT_FALSE(options(json::object(), "deepseek_r1", nullptr).tools);
  EXPECT_FALSE(options(json::object(), "", json::array()).tools);
  EXPECT_TRUE(options({{"tool_choice", "auto"}}, "", tools).tools);
  EXPECT_FALSE(options({{"tool_choice", "none"}}, "", tools).tools);
  EXPECT_FALSE(options({{"tool_choice", "none"}}, "", nullptr).tools);
  EXPECT_FALSE(options({{"include_reasoning", false}}, "deepseek_r1", nullptr).include_reasoning);
  const auto rejects = [&](const json& body, const json& t) {
    try {
      (void)options(body, "", t);
    } catch (const HttpError& e) {
      EXPECT_EQ(e.reply().status, 400);
      EXPECT_EQ(e.reply().param.value_or(""), "tool_choice") << e.what();
      return true;
    }
    return false;
  };
  EXPECT_TRUE(rejects({{"tool_choice", "required"}}, tools));
  EXPECT_TRUE(rejects({{"tool_choice", {{"type", "function"}, {"function", {{"name", "f"}}}}}}, tools));
  EXPECT_TRUE(rejects({{"tool_choice", "sometimes"}}, tools));
  EXPECT_TRUE(rejects({{"tool_choice", 3}}, tools));
  EXPECT_TRUE(rejects({{"tool_choice", "auto"}}, nullptr));
}

}  // namespace
}  // namespace ds::server
