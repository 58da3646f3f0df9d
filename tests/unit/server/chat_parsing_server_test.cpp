// The reasoning and tool-call parsers in the server.
//
// On tests/fixtures/deepseek_v3_tiny_chat (DeepSeek-V3's tokenizer and template, random weights): the
// plumbing — which requests get which parser, the answer's shapes streamed and not, the per-token fields next
// to the split text, tool_choice errors — with the text of each answer checked against the parsers applied to
// its own tokens.
//
// On tests/fixtures/deepseek_v3_tiny_scripted (same tokenizer and template; greedy decoding emits <think>, a
// reasoning, </think>, a content, a get_weather tool call and EOS, and after the tool's result a short
// answer; expected.json from HF transformers): real markers, checked against the script's texts.
#include <gtest/gtest.h>

#include <fstream>

#include "server/chat_output.h"
#include "server_harness.h"
#include "tokenizer/detokenizer.h"

namespace ds::server {
namespace {

using nlohmann::json;
using testing::post_json;

const std::string kChatDir = std::string(DS_FIXTURES_DIR) + "/deepseek_v3_tiny_chat";

const json kTools = json::array(
    {{{"type", "function"},
      {"function",
       {{"name", "get_weather"},
        {"description", "The weather in a city"},
        {"parameters",
         {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}, {"required", {"city"}}}}}}}});

const std::string kScriptedDir = std::string(DS_FIXTURES_DIR) + "/deepseek_v3_tiny_scripted";

testing::ServerHarness* start(const std::string& reasoning_parser, const std::string& dir = kChatDir) {
  testing::HarnessOptions o;
  o.model_dir = dir;
  o.with_model_tokenizer = true;
  o.api.vocab_size = 0;
  o.api.max_model_len = 0;
  o.engine.max_model_len = 0;
  o.api.reasoning_parser = reasoning_parser;
  return new testing::ServerHarness(o);
}

json request(int max_tokens = 10) {
  return {{"messages", json::array({{{"role", "user"}, {"content", "What is the weather in Paris?"}}})},
          {"max_tokens", max_tokens},
          {"temperature", 0},
          {"ignore_eos", true},
          {"return_token_ids", true}};
}

// Folds a chat stream into {"reasoning_content", "content", "tool_calls", "token_ids", "finish_reason",
// "logprobs"} per choice index.
std::map<int, json> fold_stream(const std::vector<json>& events) {
  std::map<int, json> out;
  for (const auto& e : events) {
    if (!e.is_object() || !e.contains("choices")) continue;
    for (const auto& c : e["choices"]) {
      json& m = out[c["index"].get<int>()];
      if (m.is_null()) {
        m = {{"reasoning_content", ""},     {"content", ""},
             {"tool_calls", json::array()}, {"token_ids", json::array()},
             {"logprobs", json::array()},   {"finish_reason", nullptr}};
      }
      const json& d = c["delta"];
      for (const char* f : {"reasoning_content", "content"})
        if (d.contains(f)) m[f] = m[f].get<std::string>() + d[f].get<std::string>();
      if (d.contains("tool_calls")) {
        for (const auto& tc : d["tool_calls"]) {
          const size_t i = tc["index"];
          if (i == m["tool_calls"].size()) {
            json call = tc;
            call.erase("index");
            m["tool_calls"].push_back(std::move(call));
          } else {
            json& args = m["tool_calls"][i]["function"]["arguments"];
            args = args.get<std::string>() + tc["function"]["arguments"].get<std::string>();
          }
        }
      }
      if (c.contains("token_ids"))
        for (const auto& t : c["token_ids"]) m["token_ids"].push_back(t);
      if (c["logprobs"].is_object())
        for (const auto& l : c["logprobs"]["content"]) m["logprobs"].push_back(l);
      if (!c["finish_reason"].is_null()) {
        EXPECT_TRUE(m["finish_reason"].is_null()) << "two finish reasons";
        m["finish_reason"] = c["finish_reason"];
      }
    }
  }
  return out;
}

class ChatParsingServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    plain_ = start("");
    r1_ = start("deepseek_r1");
  }
  static void TearDownTestSuite() {
    delete plain_;
    delete r1_;
  }

  // The message the parsers make of these tokens, decoded as the engine decodes them for the request.
  static json expected_message(const ChatOutputOptions& options, const std::vector<int32_t>& ids) {
    const tokenizer::Tokenizer& tok = *plain_->tokenizer();
    tokenizer::IncrementalDetokenizer detok(tok, true, chat_marker_token_ids(options, tok));
    std::string text;
    for (const int32_t id : ids) text += detok.step(id);
    text += detok.finish();
    size_t calls = 0;
    json m = chat_message(options, text, calls);
    if (m.contains("tool_calls"))
      for (auto& tc : m["tool_calls"]) tc.erase("id");
    return m;
  }

  static testing::ServerHarness* plain_;
  static testing::ServerHarness* r1_;
};
testing::ServerHarness* ChatParsingServerTest::plain_ = nullptr;
testing::ServerHarness* ChatParsingServerTest::r1_ = nullptr;

TEST_F(ChatParsingServerTest, WithoutParsersTheAnswerKeepsItsShape) {
  const auto r = post_json(plain_->port(), "/v1/chat/completions", request());
  ASSERT_EQ(r.status, 200) << r.body;
  const json message = r.json()["choices"][0]["message"];
  EXPECT_EQ(message, (json{{"role", "assistant"}, {"content", message["content"]}}));
  EXPECT_TRUE(message["content"].is_string());
}

TEST_F(ChatParsingServerTest, ReasoningParserSplitsTheAnswer) {
  const auto plain = post_json(plain_->port(), "/v1/chat/completions", request()).json();
  const auto r = post_json(r1_->port(), "/v1/chat/completions", request());
  ASSERT_EQ(r.status, 200) << r.body;
  const json body = r.json();
  const json& choice = body["choices"][0];
  // The same tokens as without the parser; the text goes through the split.
  EXPECT_EQ(choice["token_ids"], plain["choices"][0]["token_ids"]);
  const auto ids = choice["token_ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(choice["message"], expected_message({.reasoning = true}, ids));
  ASSERT_TRUE(choice["message"].contains("reasoning_content"));
  EXPECT_EQ(choice["finish_reason"], "length");
  // Random weights, no </think>: all reasoning, as vLLM splits an answer that never closes its thinking.
  const std::string text = plain["choices"][0]["message"]["content"];
  if (text.find("</think>") == std::string::npos && text.find("<think>") == std::string::npos) {
    EXPECT_EQ(choice["message"]["reasoning_content"], text);
    EXPECT_TRUE(choice["message"]["content"].is_null());
  }
}

TEST_F(ChatParsingServerTest, ReasoningStreamedAddsUpToTheNonStreamedAnswer) {
  json req = request(12);
  req["n"] = 2;
  req["logprobs"] = true;
  const json whole = post_json(r1_->port(), "/v1/chat/completions", req).json();
  req["stream"] = true;
  req["stream_options"] = {{"include_usage", true}};
  const auto r = post_json(r1_->port(), "/v1/chat/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  const auto events = testing::sse_events(r.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(events.front()["choices"][0]["delta"]["role"], "assistant");
  const auto folded = fold_stream(events);
  ASSERT_EQ(folded.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const json& m = folded.at(i);
    const json& c = whole["choices"][i];
    EXPECT_EQ(m["reasoning_content"],
              c["message"]["reasoning_content"].is_null() ? json("") : c["message"]["reasoning_content"]);
    EXPECT_EQ(m["content"], c["message"]["content"].is_null() ? json("") : c["message"]["content"]);
    EXPECT_EQ(m["token_ids"], c["token_ids"]);
    EXPECT_EQ(m["logprobs"], c["logprobs"]["content"]);
    EXPECT_EQ(m["finish_reason"], c["finish_reason"]);
  }
  EXPECT_EQ(events[events.size() - 2]["usage"], whole["usage"]);
}

TEST_F(ChatParsingServerTest, RequestsWithToolsGetTheToolParser) {
  for (auto* h : {plain_, r1_}) {
    const bool reasoning = h == r1_;
    json req = request();
    req["tools"] = kTools;
    const auto r = post_json(h->port(), "/v1/chat/completions", req);
    ASSERT_EQ(r.status, 200) << r.body;
    const json choice = r.json()["choices"][0];
    const auto ids = choice["token_ids"].get<std::vector<int32_t>>();
    json message = choice["message"];
    if (message.contains("tool_calls")) {
      for (auto& tc : message["tool_calls"]) tc.erase("id");
    }
    EXPECT_EQ(message, expected_message({.reasoning = reasoning, .tools = true}, ids));
    // tool_choice "none": the plain answer (the markers, special in this tokenizer, are skipped again).
    req["tool_choice"] = "none";
    const auto none = post_json(h->port(), "/v1/chat/completions", req);
    ASSERT_EQ(none.status, 200) << none.body;
    EXPECT_EQ(none.json()["choices"][0]["message"], expected_message({.reasoning = reasoning}, ids));
  }
}

TEST_F(ChatParsingServerTest, ToolCallsStreamedAddUpToTheNonStreamedAnswer) {
  json req = request(12);
  req["tools"] = kTools;
  req["tool_choice"] = "auto";
  const json whole = post_json(r1_->port(), "/v1/chat/completions", req).json();
  req["stream"] = true;
  const auto events = testing::sse_events(post_json(r1_->port(), "/v1/chat/completions", req).body);
  const auto folded = fold_stream(events);
  ASSERT_EQ(folded.size(), 1u);
  const json& m = folded.at(0);
  const json& c = whole["choices"][0];
  EXPECT_EQ(m["token_ids"], c["token_ids"]);
  EXPECT_EQ(m["finish_reason"], c["finish_reason"]);
  EXPECT_EQ(m["content"], c["message"]["content"].is_null() ? json("") : c["message"]["content"]);
  EXPECT_EQ(m["tool_calls"].size(), c["message"].value("tool_calls", json::array()).size());
}

TEST_F(ChatParsingServerTest, UnsupportedToolChoiceIs400) {
  const std::vector<json> bad = {
      {{"tools", kTools}, {"tool_choice", "required"}},
      {{"tools", kTools}, {"tool_choice", {{"type", "function"}, {"function", {{"name", "get_weather"}}}}}},
      {{"tools", kTools}, {"tool_choice", "always"}},
      {{"tool_choice", "auto"}},
  };
  for (const json& extra : bad) {
    json req = request();
    req.update(extra);
    const auto r = post_json(plain_->port(), "/v1/chat/completions", req);
    EXPECT_EQ(r.status, 400) << extra.dump();
    EXPECT_EQ(r.json()["error"]["param"], "tool_choice") << r.body;
  }
  json req = request();
  req["tool_choice"] = "none";  // without tools: fine, as in vLLM
  EXPECT_EQ(post_json(plain_->port(), "/v1/chat/completions", req).status, 200);
}

TEST_F(ChatParsingServerTest, IncludeReasoningFalseDropsIt) {
  json req = request();
  req["include_reasoning"] = false;
  const auto r = post_json(r1_->port(), "/v1/chat/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  const json message = r.json()["choices"][0]["message"];
  EXPECT_TRUE(message["reasoning_content"].is_null());
}

// ---------------------------------------------------------------------------------------------------------
// The scripted model.

class ScriptedChatTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::ifstream in(kScriptedDir + "/expected.json");
    expected_ = new json(json::parse(in));
    r1_ = start("deepseek_r1", kScriptedDir);
    plain_ = start("", kScriptedDir);
  }
  static void TearDownTestSuite() {
    delete r1_;
    delete plain_;
    delete expected_;
  }
  static const json& script() { return (*expected_)["script"]; }
  static const json& scripted_case(const std::string& name) {
    for (const auto& c : (*expected_)["cases"])
      if (c["name"] == name) return c;
    throw std::runtime_error("expected.json has no case " + name);
  }
  static json chat(const json& c, bool with_tools = true) {
    json req = {{"messages", c["messages"]}, {"temperature", 0}, {"return_token_ids", true}};
    if (with_tools) req["tools"] = c["tools"];
    return req;
  }
  static json the_call() {
    return {{"type", "function"},
            {"function", {{"name", script()["tool_name"]}, {"arguments", script()["tool_arguments"]}}}};
  }
  // The tool calls without their ids (checked to be call_...).
  static json without_ids(json calls) {
    for (auto& tc : calls) {
      EXPECT_TRUE(tc["id"].get<std::string>().starts_with("call_")) << tc.dump();
      tc.erase("id");
    }
    return calls;
  }

  static json* expected_;
  static testing::ServerHarness* r1_;
  static testing::ServerHarness* plain_;
};
json* ScriptedChatTest::expected_ = nullptr;
testing::ServerHarness* ScriptedChatTest::r1_ = nullptr;
testing::ServerHarness* ScriptedChatTest::plain_ = nullptr;

TEST_F(ScriptedChatTest, ReasoningContentAndToolCall) {
  const json& c = scripted_case("tool_call_turn");
  const auto r = post_json(r1_->port(), "/v1/chat/completions", chat(c));
  ASSERT_EQ(r.status, 200) << r.body;
  const json body = r.json();
  EXPECT_EQ(body["prompt_token_ids"], c["prompt_ids"]);
  const json& choice = body["choices"][0];
  EXPECT_EQ(choice["token_ids"], c["token_ids"]);
  const json& m = choice["message"];
  EXPECT_EQ(m["role"], "assistant");
  EXPECT_EQ(m["reasoning_content"], script()["reasoning"]);
  EXPECT_EQ(m["content"], script()["content"]);
  EXPECT_EQ(without_ids(m["tool_calls"]), json::array({the_call()}));
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_EQ(body["usage"]["completion_tokens"], c["token_ids"].size());
}

TEST_F(ScriptedChatTest, StreamedDeltasAddUpToTheSameAnswerAndNoMarkerLeaks) {
  const json& c = scripted_case("tool_call_turn");
  json req = chat(c);
  req["stream"] = true;
  req["logprobs"] = true;
  req["n"] = 2;
  const auto r = post_json(r1_->port(), "/v1/chat/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  const auto events = testing::sse_events(r.body);
  std::vector<std::string> order;  // the kinds of delta of choice 0, in order
  for (const auto& e : events) {
    if (!e.is_object() || e["choices"].empty() || e["choices"][0]["index"] != 0) continue;
    const json& d = e["choices"][0]["delta"];
    for (const char* f : {"reasoning_content", "content"}) {
      if (!d.contains(f)) continue;
      const std::string text = d[f];
      for (const char* marker : {"<think>", "</think>", "<｜", "｜>"})
        EXPECT_EQ(text.find(marker), std::string::npos) << f << ": " << text;
      if (!text.empty() && (order.empty() || order.back() != f)) order.push_back(f);
    }
    if (d.contains("tool_calls")) {
      const json& tc = d["tool_calls"][0];
      if (tc.contains("id")) {
        EXPECT_EQ(tc["function"]["arguments"], "");
        EXPECT_EQ(tc["type"], "function");
        order.push_back("tool_call");
      } else {
        EXPECT_FALSE(tc["function"].contains("name"));
        order.push_back("arguments");
      }
    }
  }
  EXPECT_EQ(order, (std::vector<std::string>{"reasoning_content", "content", "tool_call", "arguments"}));
  const auto folded = fold_stream(events);
  ASSERT_EQ(folded.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const json& m = folded.at(i);
    EXPECT_EQ(m["reasoning_content"], script()["reasoning"]);
    EXPECT_EQ(m["content"], script()["content"]);
    EXPECT_EQ(without_ids(m["tool_calls"]), json::array({the_call()}));
    EXPECT_EQ(m["finish_reason"], "tool_calls");
    EXPECT_EQ(m["token_ids"], c["token_ids"]);
    EXPECT_EQ(m["logprobs"].size(), c["token_ids"].size());
  }
}

TEST_F(ScriptedChatTest, WithoutTheReasoningParserTheThinkingIsContent) {
  const json& c = scripted_case("tool_call_turn");
  const auto r = post_json(plain_->port(), "/v1/chat/completions", chat(c));
  ASSERT_EQ(r.status, 200) << r.body;
  const json choice = r.json()["choices"][0];
  EXPECT_FALSE(choice["message"].contains("reasoning_content"));
  EXPECT_EQ(choice["message"]["content"], "<think>" + script()["reasoning"].get<std::string>() + "</think>" +
                                              script()["content"].get<std::string>());
  EXPECT_EQ(without_ids(choice["message"]["tool_calls"]), json::array({the_call()}));
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
}

TEST_F(ScriptedChatTest, WithNeitherParserTheAnswerIsHuggingFacesText) {
  // No tools (or tool_choice none) and no reasoning parser: exactly the text HF decodes with
  // skip_special_tokens, the tool markers (special in this tokenizer) skipped.
  const json& c = scripted_case("tool_call_turn");
  for (const bool none : {false, true}) {
    json req = chat(c, none);
    if (none) req["tool_choice"] = "none";
    const auto r = post_json(plain_->port(), "/v1/chat/completions", req);
    ASSERT_EQ(r.status, 200) << r.body;
    const json choice = r.json()["choices"][0];
    EXPECT_EQ(choice["message"], (json{{"role", "assistant"}, {"content", c["text"]}}));
    EXPECT_EQ(choice["finish_reason"], "stop");
  }
}

TEST_F(ScriptedChatTest, TheToolResultGoesBackForTheAnswer) {
  const json& c = scripted_case("after_tool_result");
  const auto r = post_json(plain_->port(), "/v1/chat/completions", chat(c));
  ASSERT_EQ(r.status, 200) << r.body;
  const json body = r.json();
  EXPECT_EQ(body["prompt_token_ids"], c["prompt_ids"]);
  const json& choice = body["choices"][0];
  EXPECT_EQ(choice["token_ids"], c["token_ids"]);
  EXPECT_EQ(choice["message"], (json{{"role", "assistant"}, {"content", script()["answer_after_tool"]}}));
  EXPECT_EQ(choice["finish_reason"], "stop");
  // With the R1 parser, an answer that never closes a thinking block is all reasoning (vLLM's deepseek_r1).
  const json split = post_json(r1_->port(), "/v1/chat/completions", chat(c)).json()["choices"][0];
  EXPECT_EQ(split["message"]["reasoning_content"], script()["answer_after_tool"]);
  EXPECT_TRUE(split["message"]["content"].is_null());
  EXPECT_EQ(split["finish_reason"], "stop");
}

TEST_F(ScriptedChatTest, CutShortTheToolCallStaysText) {
  // max_tokens ends the answer inside the call (after <｜tool▁sep｜>): no call, the raw text is content.
  const json& c = scripted_case("tool_call_turn");
  json req = chat(c);
  req["max_tokens"] = 9;  // ... <｜tool▁sep｜> get_weather
  const auto r = post_json(r1_->port(), "/v1/chat/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  const json choice = r.json()["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "length");
  EXPECT_FALSE(choice["message"].contains("tool_calls"));
  EXPECT_EQ(choice["message"]["reasoning_content"], script()["reasoning"]);
  EXPECT_EQ(choice["message"]["content"], script()["content"].get<std::string>() +
                                              std::string(ToolCallParser::kCallsBegin) +
                                              std::string(ToolCallParser::kCallBegin) + "function" +
                                              std::string(ToolCallParser::kSep) + "get_weather");
  req["stream"] = true;
  const auto folded =
      fold_stream(testing::sse_events(post_json(r1_->port(), "/v1/chat/completions", req).body));
  EXPECT_EQ(folded.at(0)["content"], choice["message"]["content"]);
  EXPECT_TRUE(folded.at(0)["tool_calls"].empty());
  EXPECT_EQ(folded.at(0)["finish_reason"], "length");
}

}  // namespace
}  // namespace ds::server
