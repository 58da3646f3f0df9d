// RELIABILITY.md "Requests": every bad input is a 400 (404 for an unknown model, 413/431 for size) with the
// OpenAI error body naming the field, and nothing else is affected (the engine holds no request afterwards).
#include <gtest/gtest.h>

#include "server_harness.h"
#include "util/check.h"

namespace ds::server {
namespace {

using nlohmann::json;
using testing::post_json;

class RequestErrorsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::HarnessOptions o;
    o.with_tokenizer = true;
    o.with_chat_template = true;
    o.http.max_request_bytes = 64 * 1024;
    harness_ = new testing::ServerHarness(o);
  }
  static void TearDownTestSuite() {
    delete harness_;
    harness_ = nullptr;
  }
  void TearDown() override {
    // Nothing leaked into the engine by a refused request.
    EXPECT_TRUE(harness_->wait_engine_idle(std::chrono::seconds(5)));
  }

  // Posts `body` and checks a 400 invalid_request_error naming `param`; returns the error object.
  static json expect_400(const std::string& path, const std::string& body, const std::string& param) {
    const auto r = testing::http(harness_->port(), "POST", path, body);
    EXPECT_EQ(r.status, 400) << body << " -> " << r.body;
    if (r.status != 400) return {};
    const json error = r.json().at("error");
    EXPECT_EQ(error["type"], "invalid_request_error") << r.body;
    EXPECT_FALSE(error["message"].get<std::string>().empty());
    if (param.empty()) {
      EXPECT_TRUE(error["param"].is_null()) << r.body;
    } else {
      EXPECT_EQ(error["param"], param) << body << " -> " << r.body;
    }
    return error;
  }
  static json completion_400(json fields, const std::string& param) {
    json body = {{"prompt", {1, 2, 3}}, {"max_tokens", 4}};
    body.update(fields);
    return expect_400("/v1/completions", body.dump(), param);
  }
  static json chat_400(json fields, const std::string& param) {
    json body = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 4}};
    body.update(fields);
    return expect_400("/v1/chat/completions", body.dump(), param);
  }

  static testing::ServerHarness* harness_;
};

testing::ServerHarness* RequestErrorsTest::harness_ = nullptr;

TEST_F(RequestErrorsTest, MalformedJson) {
  const json e = expect_400("/v1/completions", "{\"prompt\": [1, 2", "");
  EXPECT_NE(e["message"].get<std::string>().find("not valid JSON"), std::string::npos);
  expect_400("/v1/chat/completions", "not json at all", "");
  expect_400("/v1/completions", "[1, 2, 3]", "");  // JSON, but not an object
  expect_400("/v1/completions", "", "");
}

TEST_F(RequestErrorsTest, WrongTypesNameTheField) {
  completion_400({{"max_tokens", "4"}}, "max_tokens");
  completion_400({{"temperature", "hot"}}, "temperature");
  completion_400({{"stream", "yes"}}, "stream");
  completion_400({{"echo", 1}}, "echo");
  completion_400({{"n", 1.5}}, "n");
  completion_400({{"seed", "x"}}, "seed");
  completion_400({{"stop", 5}}, "stop");
  completion_400({{"stop", {"a", 5}}}, "stop");
  completion_400({{"logprobs", true}}, "logprobs");
  completion_400({{"model", 7}}, "model");
  completion_400({{"stream", true}, {"stream_options", "usage"}}, "stream_options");
  completion_400({{"stream_options", {{"include_usage", true}}}}, "stream_options");  // without stream
  chat_400({{"logprobs", 3}}, "logprobs");
}

TEST_F(RequestErrorsTest, PromptShapes) {
  completion_400({{"prompt", nullptr}}, "prompt");
  expect_400("/v1/completions", R"({"max_tokens": 4})", "prompt");
  completion_400({{"prompt", 42}}, "prompt");
  completion_400({{"prompt", {{"a"}, 1}}}, "prompt");
  completion_400({{"prompt", {1, "a"}}}, "prompt");
  completion_400({{"prompt", {{1, 2}, {{3}}}}}, "prompt");
}

TEST_F(RequestErrorsTest, MessagesShapes) {
  expect_400("/v1/chat/completions", R"({"max_tokens": 4})", "messages");
  chat_400({{"messages", "hello"}}, "messages");
  chat_400({{"messages", json::array({json::object()})}}, "messages[0].role");
  chat_400({{"messages", {{{"role", "wizard"}, {"content", "hi"}}}}}, "messages[0].role");
  chat_400({{"messages", {{{"role", 3}, {"content", "hi"}}}}}, "messages[0].role");
  chat_400({{"messages", {"just a string"}}}, "messages[0]");
  chat_400({{"messages", {{{"role", "user"}}}}}, "messages[0].content");
  chat_400({{"messages", {{{"role", "user"}, {"content", 5}}}}}, "messages[0].content");
  chat_400(
      {{"messages",
        {{{"role", "user"}, {"content", "a"}}, {{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}}},
      "messages[1].content[0].type");
}

TEST_F(RequestErrorsTest, EmptyPromptAndEmptyMessages) {
  completion_400({{"prompt", ""}}, "prompt");
  completion_400({{"prompt", json::array()}}, "prompt");
  completion_400({{"prompt", {json::array()}}}, "prompt");
  completion_400({{"prompt", {"ok", ""}}}, "prompt");
  chat_400({{"messages", json::array()}}, "messages");
}

TEST_F(RequestErrorsTest, ContextLengthExceededGivesBothNumbers) {
  std::vector<int> prompt(200, 5);
  json e = completion_400({{"prompt", prompt}, {"max_tokens", 100}}, "prompt");
  EXPECT_EQ(e["code"], "context_length_exceeded");
  const std::string m = e["message"];
  EXPECT_NE(m.find("256"), std::string::npos) << m;  // the limit
  EXPECT_NE(m.find("300"), std::string::npos) << m;  // what was asked
  EXPECT_NE(m.find("200 in the prompt"), std::string::npos) << m;
  EXPECT_NE(m.find("100 for the completion"), std::string::npos) << m;
  // A prompt that alone fills the context, in chat (no max_tokens: it would have no room for one token).
  e = chat_400(
      {{"messages", {{{"role", "user"}, {"content", std::string(300, 'x')}}}}, {"max_tokens", nullptr}},
      "messages");
  EXPECT_EQ(e["code"], "context_length_exceeded");
}

TEST_F(RequestErrorsTest, MaxTokensAndNRanges) {
  completion_400({{"max_tokens", 0}}, "max_tokens");  // 0 is only for scoring with echo
  completion_400({{"max_tokens", -1}}, "max_tokens");
  completion_400({{"max_tokens", 2.5}}, "max_tokens");
  chat_400({{"max_completion_tokens", 0}, {"max_tokens", nullptr}}, "max_tokens");
  completion_400({{"n", 0}}, "n");
  completion_400({{"n", -3}}, "n");
  const json e = completion_400({{"n", 9}}, "n");  // --max-n is 8 here
  EXPECT_NE(e["message"].get<std::string>().find("8"), std::string::npos);
  chat_400({{"n", 100}}, "n");
}

TEST_F(RequestErrorsTest, LogprobsRanges) {
  completion_400({{"logprobs", 21}}, "logprobs");
  completion_400({{"logprobs", -1}}, "logprobs");
  chat_400({{"logprobs", true}, {"top_logprobs", 21}}, "top_logprobs");
  chat_400({{"logprobs", true}, {"top_logprobs", -1}}, "top_logprobs");
  chat_400({{"top_logprobs", 3}}, "top_logprobs");  // without logprobs: true
}

TEST_F(RequestErrorsTest, SamplingRanges) {
  // NaN and Inf cannot be written in JSON: they are refused as malformed (or out-of-range) numbers.
  expect_400("/v1/completions", R"({"prompt": [1], "temperature": NaN})", "");
  expect_400("/v1/completions", R"({"prompt": [1], "temperature": Infinity})", "");
  const auto r =
      testing::http(harness_->port(), "POST", "/v1/completions", R"({"prompt": [1], "temperature": 1e999})");
  EXPECT_EQ(r.status, 400) << r.body;
  completion_400({{"temperature", -0.5}}, "temperature");
  completion_400({{"top_p", 0}}, "top_p");
  completion_400({{"top_p", 1.5}}, "top_p");
  completion_400({{"top_p", -0.1}}, "top_p");
  completion_400({{"top_k", -2}}, "top_k");
  completion_400({{"min_p", -0.1}}, "min_p");
  completion_400({{"min_p", 1.01}}, "min_p");
  completion_400({{"presence_penalty", 2.5}}, "presence_penalty");
  completion_400({{"presence_penalty", -2.01}}, "presence_penalty");
  completion_400({{"frequency_penalty", 3}}, "frequency_penalty");
  completion_400({{"frequency_penalty", -3}}, "frequency_penalty");
  completion_400({{"repetition_penalty", 0}}, "repetition_penalty");
  chat_400({{"temperature", -1}}, "temperature");
  chat_400({{"top_p", 2}}, "top_p");
}

TEST_F(RequestErrorsTest, TokenIdsOutsideTheVocabulary) {
  completion_400({{"prompt", {1, -5, 3}}}, "prompt");
  json e = completion_400({{"prompt", {1, 1024, 3}}}, "prompt");  // the fixture's vocabulary is 1024
  EXPECT_NE(e["message"].get<std::string>().find("1024"), std::string::npos);
  completion_400({{"prompt", {{1, 2}, {3, 5000}}}}, "prompt");
  completion_400({{"prompt", {1, 4294967296}}}, "prompt");
  expect_400("/detokenize", R"({"tokens": [1, 99999]})", "tokens");
  expect_400("/detokenize", R"({"tokens": [-1]})", "tokens");
}

TEST_F(RequestErrorsTest, InvalidUtf8InAnyString) {
  const std::string bad = "\xff\xfe";
  expect_400("/v1/completions", "{\"prompt\": \"a" + bad + "\", \"max_tokens\": 2}", "");
  expect_400("/v1/chat/completions",
             "{\"messages\": [{\"role\": \"user\", \"content\": \"x" + bad + "\"}], \"max_tokens\": 2}", "");
  expect_400("/v1/completions", "{\"prompt\": [1], \"stop\": [\"\xc3\"]}", "");  // truncated 2-byte character
  expect_400("/v1/completions", R"({"prompt": "\ud800 lone surrogate"})", "");
  expect_400("/tokenize", "{\"prompt\": \"\xed\xa0\x80\"}", "");  // a surrogate encoded as UTF-8
}

TEST_F(RequestErrorsTest, StopStringLimits) {
  std::vector<std::string> many(17, "x");
  json e = completion_400({{"stop", many}}, "stop");
  EXPECT_NE(e["message"].get<std::string>().find("16"), std::string::npos);
  completion_400({{"stop", std::string(257, 'x')}}, "stop[0]");
  completion_400({{"stop", {"ok", ""}}}, "stop[1]");
  chat_400({{"stop", many}}, "stop");
  // The limits themselves are allowed.
  json body = {
      {"prompt", {1, 2}}, {"max_tokens", 1}, {"stop", std::vector<std::string>(16, std::string(256, 'y'))}};
  EXPECT_EQ(post_json(harness_->port(), "/v1/completions", body).status, 200);
}

TEST_F(RequestErrorsTest, UnknownModelIs404) {
  for (const char* path : {"/v1/completions", "/v1/chat/completions"}) {
    json body = {{"model", "gpt-17"}, {"prompt", {1}}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
    const auto r = post_json(harness_->port(), path, body);
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(r.json()["error"]["code"], "model_not_found");
    EXPECT_EQ(r.json()["error"]["param"], "model");
    EXPECT_NE(r.json()["error"]["message"].get<std::string>().find("gpt-17"), std::string::npos);
  }
  // The served name works, and so does no name at all.
  EXPECT_EQ(
      post_json(harness_->port(), "/v1/completions", {{"model", "tiny"}, {"prompt", {1}}, {"max_tokens", 1}})
          .status,
      200);
  EXPECT_EQ(post_json(harness_->port(), "/v1/completions", {{"prompt", {1}}, {"max_tokens", 1}}).status, 200);
}

TEST_F(RequestErrorsTest, BodyAndHeaderSizeLimits) {
  testing::Connection c(harness_->port());
  c.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
  auto r = c.read_reply();
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.json()["error"]["type"], "invalid_request_error");
  testing::Connection d(harness_->port());
  d.send("GET /v1/models HTTP/1.1\r\nHost: x\r\nCookie: " + std::string(17 * 1024, 'c') + "\r\n\r\n");
  EXPECT_EQ(d.read_reply().status, 431);
}

TEST_F(RequestErrorsTest, UnsupportedFieldsAreRefusedNotIgnored) {
  completion_400({{"suffix", "end"}}, "suffix");
  completion_400({{"best_of", 3}}, "best_of");
  chat_400({{"add_generation_prompt", true}, {"continue_final_message", true}}, "continue_final_message");
}

TEST_F(RequestErrorsTest, OtherRequestsKeepWorkingAfterErrors) {
  const auto r = post_json(harness_->port(), "/v1/completions",
                           {{"prompt", {1, 2, 3}},
                            {"max_tokens", 3},
                            {"temperature", 0},
                            {"ignore_eos", true},
                            {"return_token_ids", true}});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.json()["choices"][0]["token_ids"].get<std::vector<int32_t>>(),
            testing::reference_greedy({1, 2, 3}, 3));
}

// A body nested 100,000 levels deep in any field of any POST route: 400 naming the limit, and the server
// keeps serving (without the limit, writing the error message or copying the value overflowed the stack).
TEST(DeepJsonTest, DeeplyNestedFieldsAre400OnEveryPostRoute) {
  testing::HarnessOptions o;
  o.with_tokenizer = true;
  o.with_chat_template = true;  // the default 16 MiB body limit: 100k levels are 200 KB
  testing::ServerHarness h(o);
  constexpr int kLevels = 100000;
  const std::string deep_array = std::string(kLevels, '[') + std::string(kLevels, ']');
  std::string deep_object;
  for (int i = 0; i < kLevels; ++i) deep_object += "{\"a\":";
  deep_object += '1';
  deep_object.append(kLevels, '}');
  const std::string messages = R"([{"role": "user", "content": "hi"}])";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"/v1/completions", R"({"prompt": )" + deep_array + "}"},
      {"/v1/completions", R"({"prompt": [)" + deep_array + "]}"},
      {"/v1/completions", R"({"prompt": [1], "stop": )" + deep_array + "}"},
      {"/v1/completions", R"({"prompt": [1], "logit_bias": )" + deep_object + "}"},
      {"/v1/completions", R"({"prompt": [1], "max_tokens": )" + deep_array + "}"},
      {"/v1/completions", R"({"prompt": [1], "unknown_field": )" + deep_object + "}"},
      {"/v1/chat/completions", R"({"messages": )" + deep_array + "}"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": )" + deep_array + "}]}"},
      {"/v1/chat/completions", R"({"messages": [)" + deep_object + "]}"},
      {"/v1/chat/completions", R"({"messages": )" + messages + R"(, "tools": )" + deep_array + "}"},
      {"/v1/chat/completions", R"({"messages": )" + messages + R"(, "tools": [)" + deep_object + "]}"},
      {"/v1/chat/completions", R"({"messages": )" + messages + R"(, "stop": )" + deep_array + "}"},
      {"/v1/chat/completions", R"({"messages": )" + messages + R"(, "logit_bias": )" + deep_object + "}"},
      {"/v1/chat/completions", R"({"messages": )" + messages + R"(, "logprobs": )" + deep_array + "}"},
      {"/v1/chat/completions",
       R"({"messages": )" + messages + R"(, "chat_template_kwargs": )" + deep_object + "}"},
      {"/tokenize", R"({"prompt": )" + deep_array + "}"},
      {"/tokenize", R"({"messages": [)" + deep_object + "]}"},
      {"/detokenize", R"({"tokens": )" + deep_array + "}"},
      {"/detokenize", R"({"tokens": [1, )" + deep_object + "]}"},
  };
  for (const auto& [path, body] : cases) {
    const auto r = testing::http(h.port(), "POST", path, body);
    ASSERT_EQ(r.status, 400) << path << " " << body.substr(0, 80) << " -> " << r.body.substr(0, 200);
    const json error = r.json().at("error");
    EXPECT_EQ(error["type"], "invalid_request_error");
    EXPECT_NE(error["message"].get<std::string>().find("more than 64 levels"), std::string::npos) << r.body;
    EXPECT_LT(r.body.size(), 400u);
  }
  // 64 levels are fine as far as depth goes (and then refused for their type, quoted briefly).
  const std::string at_limit =
      R"({"prompt": [1], "max_tokens": )" + std::string(63, '[') + std::string(63, ']') + "}";
  const auto r = testing::http(h.port(), "POST", "/v1/completions", at_limit);
  ASSERT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.json()["error"]["param"], "max_tokens");
  EXPECT_NE(r.json()["error"]["message"].get<std::string>().find("got [[[...]]]"), std::string::npos)
      << r.body;
  // Still serving.
  EXPECT_EQ(post_json(h.port(), "/v1/completions", {{"prompt", {1, 2}}, {"max_tokens", 2}}).status, 200);
  EXPECT_EQ(testing::http(h.port(), "GET", "/health").status, 200);
  EXPECT_TRUE(h.wait_engine_idle());
}

// A bug of ours inside a route (here: a chat renderer whose check fails) answers 500 with the request id
// only; the check's text stays in the log.
TEST(InternalErrorTest, FiveHundredNamesTheRequestIdNotTheCheck) {
  testing::HarnessOptions o;
  o.with_tokenizer = true;
  o.chat_renderer = [](const ChatRenderInput&) -> std::string {
    DS_CHECK(false, "renderer invariant {}", 7);
    return {};
  };
  testing::ServerHarness h(o);
  const testing::CapturedLog log;
  const auto r = testing::http(h.port(), "POST", "/v1/chat/completions",
                               R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})",
                               {"X-Request-Id: chat-bug-1"});
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.json()["error"]["type"], "server_error");
  EXPECT_EQ(r.json()["error"]["code"], "internal_error");
  EXPECT_EQ(r.json()["error"]["message"], "internal error (request id chat-bug-1)");
  EXPECT_EQ(r.body.find("renderer invariant"), std::string::npos) << r.body;
  EXPECT_EQ(r.body.find("check failed"), std::string::npos) << r.body;
  EXPECT_NE(log.text().find("request chat-bug-1: internal error:"), std::string::npos) << log.text();
  EXPECT_NE(log.text().find("renderer invariant 7"), std::string::npos) << log.text();
  EXPECT_TRUE(h.wait_engine_idle());
}

// Error messages quote a value briefly, however large it is.
TEST_F(RequestErrorsTest, ErrorMessagesQuoteValuesBriefly) {
  const json e = completion_400({{"max_tokens", std::vector<int>(5000, 1)}}, "max_tokens");
  EXPECT_LT(e["message"].get<std::string>().size(), 200u) << e.dump();
  const json f = completion_400({{"prompt", {1, std::string(10000, 'x')}}}, "prompt");
  EXPECT_LT(f["message"].get<std::string>().size(), 300u) << f.dump();
}

}  // namespace
}  // namespace ds::server
