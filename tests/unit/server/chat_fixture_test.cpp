// The server on tests/fixtures/deepseek_v3_tiny_chat (tokenizer.json + DeepSeek-V3's chat template + weights)
// against HuggingFace's own reference (expected.json, made by tools/fixtures with transformers): the prompt
// ids of a text and of a conversation, the greedy tokens and their logprobs, and the text.
#include <gtest/gtest.h>

#include <chrono>

#include <fstream>

#include "server_harness.h"

namespace ds::server {
namespace {

using nlohmann::json;
using testing::post_json;

const std::string kChatDir = std::string(DS_FIXTURES_DIR) + "/deepseek_v3_tiny_chat";

std::vector<int32_t> ids_of(const json& j) {
  return j.get<std::vector<int32_t>>();
}

class ChatFixtureTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::ifstream in(kChatDir + "/expected.json");
    expected_ = new json(json::parse(in));
    testing::HarnessOptions o;
    o.model_dir = kChatDir;
    o.with_model_tokenizer = true;
    o.api.vocab_size = 0;     // from the model
    o.api.max_model_len = 0;  // from the engine (the model's 1024)
    o.engine.max_model_len = 0;
    harness_ = new testing::ServerHarness(o);
  }
  static void TearDownTestSuite() {
    delete harness_;
    delete expected_;
  }
  static uint16_t port() { return harness_->port(); }
  static const json& chat_case() {
    for (const auto& c : (*expected_)["cases"])
      if (c["kind"] == "chat") return c;
    throw std::runtime_error("expected.json has no chat case");
  }
  // HF's greedy tokens up to (and with) the first one whose top-1/top-2 margin is within 1e-2: past it a
  // different but equally valid choice may follow (DESIGN.md's numerics contract).
  static std::vector<int32_t> decided_prefix(const json& greedy) {
    std::vector<int32_t> out;
    for (const auto& g : greedy) {
      out.push_back(g["token"]);
      if (g["margin"].get<double>() <= 1e-2) break;
    }
    return out;
  }
  static bool all_decided(const json& greedy) {
    for (const auto& g : greedy)
      if (g["margin"].get<double>() <= 1e-2) return false;
    return true;
  }

  static testing::ServerHarness* harness_;
  static json* expected_;
};
testing::ServerHarness* ChatFixtureTest::harness_ = nullptr;
json* ChatFixtureTest::expected_ = nullptr;

TEST_F(ChatFixtureTest, ChatMatchesTransformers) {
  const json& c = chat_case();
  const json req = {{"messages", c["messages"]}, {"max_tokens", c["greedy"].size()},
                    {"temperature", 0},          {"ignore_eos", true},
                    {"logprobs", true},          {"return_token_ids", true}};
  const auto r = post_json(port(), "/v1/chat/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  const json body = r.json();
  EXPECT_EQ(ids_of(body["prompt_token_ids"]), ids_of(c["prompt_ids"]));
  EXPECT_EQ(body["usage"]["prompt_tokens"], c["prompt_ids"].size());
  const json& choice = body["choices"][0];
  const auto tokens = ids_of(choice["token_ids"]);
  const auto decided = decided_prefix(c["greedy"]);
  ASSERT_GE(tokens.size(), decided.size());
  EXPECT_EQ(std::vector<int32_t>(tokens.begin(), tokens.begin() + static_cast<long>(decided.size())),
            decided);
  for (size_t i = 0; i < decided.size(); ++i) {
    EXPECT_NEAR(choice["logprobs"]["content"][i]["logprob"].get<double>(),
                c["greedy"][i]["logprob"].get<double>(), 1e-3)
        << i;
  }
  if (all_decided(c["greedy"])) {
    EXPECT_EQ(choice["message"]["content"], c["text_out"]);
  }
}

TEST_F(ChatFixtureTest, ChatStreamedEqualsNonStreamed) {
  const json& c = chat_case();
  json req = {{"messages", c["messages"]}, {"max_tokens", 12}, {"temperature", 0}, {"ignore_eos", true}};
  const json whole = post_json(port(), "/v1/chat/completions", req).json();
  req["stream"] = true;
  req["stream_options"] = {{"include_usage", true}};
  const auto events = testing::sse_events(post_json(port(), "/v1/chat/completions", req).body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.front()["choices"][0]["delta"]["role"], "assistant");
  std::string content;
  for (const auto& e : events)
    if (e.is_object() && !e["choices"].empty()) content += e["choices"][0]["delta"].value("content", "");
  EXPECT_EQ(content, whole["choices"][0]["message"]["content"].get<std::string>());
  EXPECT_EQ(events[events.size() - 2]["usage"], whole["usage"]);
}

TEST_F(ChatFixtureTest, TextCompletionMatchesTransformers) {
  for (const auto& c : (*expected_)["cases"]) {
    if (c["kind"] != "text") continue;
    const json req = {{"prompt", c["text"]}, {"max_tokens", c["greedy"].size()}, {"temperature", 0},
                      {"ignore_eos", true},  {"return_token_ids", true},         {"logprobs", 0}};
    const auto r = post_json(port(), "/v1/completions", req);
    ASSERT_EQ(r.status, 200) << r.body;
    const json body = r.json();
    const json& choice = body["choices"][0];
    EXPECT_EQ(ids_of(choice["prompt_token_ids"]), ids_of(c["prompt_ids"])) << c["text"];
    const auto tokens = ids_of(choice["token_ids"]);
    const auto decided = decided_prefix(c["greedy"]);
    EXPECT_EQ(std::vector<int32_t>(tokens.begin(), tokens.begin() + static_cast<long>(decided.size())),
              decided)
        << c["text"];
    if (all_decided(c["greedy"])) {
      EXPECT_EQ(choice["text"], c["text_out"]) << c["text"];
    }
  }
}

TEST_F(ChatFixtureTest, StopStringCutsTheText) {
  // The first case's continuation, cut at a string inside it.
  const json& c = (*expected_)["cases"][0];
  ASSERT_TRUE(all_decided(c["greedy"]));
  const std::string full = c["text_out"];
  const std::string stop = "Layer";
  ASSERT_NE(full.find(stop), std::string::npos);
  for (bool stream : {false, true}) {
    json req = {{"prompt", c["text"]}, {"max_tokens", 12}, {"temperature", 0},
                {"ignore_eos", true},  {"stop", {stop}},   {"stream", stream}};
    const auto r = post_json(port(), "/v1/completions", req);
    ASSERT_EQ(r.status, 200);
    std::string text, finish;
    if (stream) {
      for (const auto& e : testing::sse_events(r.body)) {
        if (!e.is_object()) continue;
        text += e["choices"][0]["text"].get<std::string>();
        if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
      }
    } else {
      text = r.json()["choices"][0]["text"];
      finish = r.json()["choices"][0]["finish_reason"];
    }
    EXPECT_EQ(text, full.substr(0, full.find(stop))) << (stream ? "streamed" : "whole");
    EXPECT_EQ(finish, "stop");
  }
}

TEST_F(ChatFixtureTest, TokenizeMessagesAndContinueFinalMessage) {
  const json& c = chat_case();
  auto r = post_json(port(), "/tokenize", {{"messages", c["messages"]}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(ids_of(r.json()["tokens"]), ids_of(c["prompt_ids"]));
  // continue_final_message: the prompt ends with the partial assistant message itself, no end of turn after
  // it.
  json messages = c["messages"];
  messages.push_back({{"role", "assistant"}, {"content", "Two, three and"}});
  r = post_json(port(), "/tokenize",
                {{"messages", messages}, {"add_generation_prompt", false}, {"continue_final_message", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string text = harness_->tokenizer()->decode(ids_of(r.json()["tokens"]), false);
  EXPECT_TRUE(text.ends_with("<\uFF5CAssistant\uFF5C>Two, three and")) << text;
  const auto chat = post_json(port(), "/v1/chat/completions",
                              {{"messages", messages},
                               {"add_generation_prompt", false},
                               {"continue_final_message", true},
                               {"max_tokens", 2}});
  EXPECT_EQ(chat.status, 200) << chat.body;
}

TEST_F(ChatFixtureTest, ClientChatTemplateAndKwargsAreIgnored) {
  const json& c = chat_case();
  for (const char* path : {"/tokenize", "/v1/chat/completions"}) {
    json req = {{"messages", c["messages"]},
                {"chat_template", "{% for i in range(999999999) %}x{% endfor %}"},
                {"chat_template_kwargs", {{"add_generation_prompt", false}, {"bos_token", "EVIL"}}},
                {"max_tokens", 1},
                {"return_token_ids", true}};
    const auto r = post_json(port(), path, req);
    ASSERT_EQ(r.status, 200) << r.body;
    const json body = r.json();
    EXPECT_EQ(ids_of(body.contains("tokens") ? body["tokens"] : body["prompt_token_ids"]),
              ids_of(c["prompt_ids"]));
  }
}

// --allow-client-chat-template: the request's chat_template is rendered (same sandbox and limits, the
// model's special tokens), its chat_template_kwargs become template variables, and a template error is a
// 400 naming the line and column.
class ClientChatTemplateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::HarnessOptions o;
    o.model_dir = kChatDir;
    o.with_model_tokenizer = true;
    o.api.vocab_size = 0;
    o.api.max_model_len = 0;
    o.engine.max_model_len = 0;
    o.api.allow_client_chat_template = true;
    harness_ = new testing::ServerHarness(o);
  }
  static void TearDownTestSuite() { delete harness_; }
  void TearDown() override { EXPECT_TRUE(harness_->wait_engine_idle()); }
  static uint16_t port() { return harness_->port(); }
  static std::vector<int32_t> encode(const std::string& text) {
    return harness_->encoder().tokenizer().encode(text, false);
  }
  static json error_of(const std::string& path, const json& req) {
    const auto r = post_json(port(), path, req);
    EXPECT_EQ(r.status, 400) << r.body;
    return r.status == 400 ? r.json()["error"] : json();
  }
  static testing::ServerHarness* harness_;
};
testing::ServerHarness* ClientChatTemplateTest::harness_ = nullptr;

const json kMessages = json::array({{{"role", "user"}, {"content", "Hi there"}}});

TEST_F(ClientChatTemplateTest, RequestTemplateAndKwargsAreRendered) {
  const std::string tmpl =
      "{{ bos_token }}{% for m in messages %}[{{ m.role }}|{{ m.content }}]{% endfor %}"
      "{% if add_generation_prompt %}{{ greeting }}{% endif %}";
  const json kwargs = {{"greeting", "Answer:"}};
  const std::string bos = "<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>";
  const auto expected = encode(bos + "[user|Hi there]Answer:");
  const auto tok =
      post_json(port(), "/tokenize",
                {{"messages", kMessages}, {"chat_template", tmpl}, {"chat_template_kwargs", kwargs}});
  ASSERT_EQ(tok.status, 200) << tok.body;
  EXPECT_EQ(ids_of(tok.json()["tokens"]), expected);
  const auto chat = post_json(port(), "/v1/chat/completions",
                              {{"messages", kMessages},
                               {"chat_template", tmpl},
                               {"chat_template_kwargs", kwargs},
                               {"max_tokens", 2},
                               {"return_token_ids", true}});
  ASSERT_EQ(chat.status, 200) << chat.body;
  EXPECT_EQ(ids_of(chat.json()["prompt_token_ids"]), expected);
  // Without add_generation_prompt the kwarg is not printed.
  const auto plain = post_json(port(), "/tokenize",
                               {{"messages", kMessages},
                                {"chat_template", tmpl},
                                {"chat_template_kwargs", kwargs},
                                {"add_generation_prompt", false}});
  EXPECT_EQ(ids_of(plain.json()["tokens"]), encode(bos + "[user|Hi there]"));
}

TEST_F(ClientChatTemplateTest, KwargsReachTheModelsOwnTemplate) {
  // DeepSeek-V3's template prints bos_token first; a kwarg of that name overrides the special token, as
  // transformers' apply_chat_template(**kwargs) does.
  const auto own = post_json(port(), "/tokenize", {{"messages", kMessages}});
  const auto with = post_json(port(), "/tokenize",
                              {{"messages", kMessages}, {"chat_template_kwargs", {{"bos_token", "CUSTOM"}}}});
  ASSERT_EQ(with.status, 200) << with.body;
  const std::string own_text = harness_->tokenizer()->decode(ids_of(own.json()["tokens"]), false);
  const std::string text = harness_->tokenizer()->decode(ids_of(with.json()["tokens"]), false);
  EXPECT_TRUE(text.starts_with("CUSTOM")) << text;
  EXPECT_EQ(text.substr(6), own_text.substr(own_text.find("<\uFF5CUser\uFF5C>")))
      << own_text << " / " << text;
}

TEST_F(ClientChatTemplateTest, ASlowTemplateStopsAtItsCpuTimeLimit) {
  // Issue 19: quadratic work within every other limit (a dict rebuilt 100,000 times) never finished.
  const std::string tmpl =
      "{% set ns = namespace(d={}) %}{% for i in range(100000) %}{% set ns.d = dict(ns.d, **{'k'~i: i}) %}"
      "{% endfor %}";
  const auto start = std::chrono::steady_clock::now();
  const json e =
      error_of("/v1/chat/completions", {{"messages", kMessages}, {"chat_template", tmpl}, {"max_tokens", 1}});
  // 1 s of CPU time; the wall-clock bound leaves room for a loaded machine (before: it never ended).
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(15));
  EXPECT_EQ(e["type"], "invalid_request_error");
  EXPECT_TRUE(e["param"].is_null());
  EXPECT_NE(e["message"].get<std::string>().find("LimitError at line 1, column"), std::string::npos)
      << e.dump();
  EXPECT_NE(e["message"].get<std::string>().find(
                "the template used more than its CPU-time limit of 1 s for one render"),
            std::string::npos)
      << e.dump();
}

TEST_F(ClientChatTemplateTest, TemplateErrorsAre400WithLineAndColumn) {
  json e = error_of("/v1/chat/completions",
                    {{"messages", kMessages}, {"chat_template", "ok\n{% for %}"}, {"max_tokens", 1}});
  EXPECT_EQ(e["type"], "invalid_request_error");
  EXPECT_NE(e["message"].get<std::string>().find("TemplateSyntaxError at line 2, column"), std::string::npos)
      << e.dump();
  e = error_of("/tokenize",
               {{"messages", kMessages}, {"chat_template", "a\nb\n{{ messages[0].content.nope() }}"}});
  EXPECT_NE(e["message"].get<std::string>().find("at line 3, column"), std::string::npos) << e.dump();
  e = error_of("/tokenize",
               {{"messages", kMessages}, {"chat_template", "{{ raise_exception('no tools here') }}"}});
  EXPECT_NE(e["message"].get<std::string>().find("no tools here"), std::string::npos) << e.dump();
  // The sandbox's limits hold for a client's template.
  e = error_of("/v1/chat/completions", {{"messages", kMessages},
                                        {"chat_template", "{% for i in range(999999999) %}x{% endfor %}"},
                                        {"max_tokens", 1}});
  EXPECT_NE(e["message"].get<std::string>().find("LimitError"), std::string::npos) << e.dump();
  // Wrong types name the field; a kwarg may not replace an argument.
  EXPECT_EQ(error_of("/tokenize", {{"messages", kMessages}, {"chat_template", 5}})["param"], "chat_template");
  EXPECT_EQ(
      error_of("/v1/chat/completions", {{"messages", kMessages}, {"chat_template_kwargs", "x"}})["param"],
      "chat_template_kwargs");
  e = error_of("/tokenize",
               {{"messages", kMessages}, {"chat_template_kwargs", {{"messages", json::array()}}}});
  EXPECT_NE(e["message"].get<std::string>().find("would replace an argument"), std::string::npos) << e.dump();
  // Still serving with the model's template.
  EXPECT_EQ(post_json(port(), "/v1/chat/completions", {{"messages", kMessages}, {"max_tokens", 1}}).status,
            200);
}

}  // namespace
}  // namespace ds::server
