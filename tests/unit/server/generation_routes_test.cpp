// The OpenAI routes answering real generations of the tiny V2 checkpoint: every answer is checked against the
// model's greedy tokens from the offline generate() (or against the same request answered another way).
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "server_harness.h"

namespace ds::server {
namespace {

using nlohmann::json;
using testing::post_json;

std::vector<int32_t> ids_of(const json& j) {
  return j.get<std::vector<int32_t>>();
}

json greedy(json prompt, int max_tokens) {
  return {
      {"prompt", std::move(prompt)}, {"max_tokens", max_tokens}, {"temperature", 0}, {"ignore_eos", true}};
}

// Token ids only: the fixture as it is (no tokenizer.json).
class CompletionsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { harness_ = new testing::ServerHarness(); }
  static void TearDownTestSuite() {
    delete harness_;
    harness_ = nullptr;
  }
  static uint16_t port() { return harness_->port(); }
  static testing::ServerHarness* harness_;
};
testing::ServerHarness* CompletionsTest::harness_ = nullptr;

TEST_F(CompletionsTest, NonStreamedAnswerIsTheGreedyContinuationWithUsage) {
  const auto r = post_json(port(), "/v1/completions", greedy({1, 2, 3, 4}, 8));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  const json body = r.json();
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["model"], "tiny");
  EXPECT_EQ(body["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  ASSERT_EQ(body["choices"].size(), 1u);
  const json& choice = body["choices"][0];
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["finish_reason"], "length");
  EXPECT_EQ(choice["text"], "");  // no tokenizer: the tokens are the answer
  EXPECT_EQ(ids_of(choice["token_ids"]), testing::reference_greedy({1, 2, 3, 4}, 8));
  EXPECT_EQ(ids_of(choice["prompt_token_ids"]), (std::vector<int32_t>{1, 2, 3, 4}));
  EXPECT_EQ(body["usage"], (json{{"prompt_tokens", 4}, {"completion_tokens", 8}, {"total_tokens", 12}}));
}

TEST_F(CompletionsTest, SeveralPromptsAndNSamples) {
  json req = greedy({{1, 2, 3}, {4, 5, 6, 7}}, 5);
  req["n"] = 2;
  const auto r = post_json(port(), "/v1/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  const json body = r.json();
  ASSERT_EQ(body["choices"].size(), 4u);
  const auto first = testing::reference_greedy({1, 2, 3}, 5),
             second = testing::reference_greedy({4, 5, 6, 7}, 5);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(body["choices"][i]["index"], i);
    EXPECT_EQ(ids_of(body["choices"][i]["token_ids"]), i < 2 ? first : second) << i;
  }
  // Each prompt counted once; every sample's tokens counted.
  EXPECT_EQ(body["usage"]["prompt_tokens"], 7);
  EXPECT_EQ(body["usage"]["completion_tokens"], 20);
}

TEST_F(CompletionsTest, StreamedChunksAddUpToTheSameAnswer) {
  json req = greedy({1, 2, 3, 4}, 6);
  req["stream"] = true;
  req["stream_options"] = {{"include_usage", true}};
  const auto r = post_json(port(), "/v1/completions", req);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "text/event-stream");
  const auto events = testing::sse_events(r.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  const json& usage_chunk = events[events.size() - 2];
  EXPECT_TRUE(usage_chunk["choices"].empty());
  EXPECT_EQ(usage_chunk["usage"],
            (json{{"prompt_tokens", 4}, {"completion_tokens", 6}, {"total_tokens", 10}}));
  std::vector<int32_t> tokens;
  std::set<std::string> ids;
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    const json& chunk = events[i];
    EXPECT_EQ(chunk["object"], "text_completion");
    EXPECT_TRUE(chunk.contains("usage") && chunk["usage"].is_null());
    ids.insert(chunk["id"].get<std::string>());
    ASSERT_EQ(chunk["choices"].size(), 1u);
    const auto part = ids_of(chunk["choices"][0]["token_ids"]);
    tokens.insert(tokens.end(), part.begin(), part.end());
    // Only the last chunk carries the finish reason.
    EXPECT_EQ(chunk["choices"][0]["finish_reason"].is_null(), i + 3 < events.size()) << chunk.dump();
  }
  ids.insert(usage_chunk["id"].get<std::string>());
  EXPECT_EQ(ids.size(), 1u);  // one id for the whole stream
  EXPECT_EQ(events[events.size() - 3]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(tokens, testing::reference_greedy({1, 2, 3, 4}, 6));
}

TEST_F(CompletionsTest, StreamWithoutIncludeUsageHasNoUsageChunk) {
  json req = greedy({9, 8, 7}, 3);
  req["stream"] = true;
  const auto events = testing::sse_events(post_json(port(), "/v1/completions", req).body);
  ASSERT_EQ(events.size(), 4u);  // three tokens, [DONE]
  for (size_t i = 0; i < 3; ++i) EXPECT_FALSE(events[i].contains("usage"));
}

TEST_F(CompletionsTest, StreamedSamplesCarryTheirIndex) {
  json req = greedy({{1, 2}, {3, 4}}, 3);
  req["n"] = 2;
  req["stream"] = true;
  const auto events = testing::sse_events(post_json(port(), "/v1/completions", req).body);
  std::map<int, std::vector<int32_t>> tokens;
  std::map<int, int> finishes;
  for (const auto& e : events) {
    if (e == "[DONE]") continue;
    for (const auto& c : e["choices"]) {
      const auto part = ids_of(c["token_ids"]);
      tokens[c["index"]].insert(tokens[c["index"]].end(), part.begin(), part.end());
      if (!c["finish_reason"].is_null()) ++finishes[c["index"]];
    }
  }
  ASSERT_EQ(tokens.size(), 4u);
  EXPECT_EQ(tokens[0], testing::reference_greedy({1, 2}, 3));
  EXPECT_EQ(tokens[3], testing::reference_greedy({3, 4}, 3));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(finishes[i], 1) << i;
}

TEST_F(CompletionsTest, SeedMakesSamplingReproducible) {
  json req = {
      {"prompt", {5, 6, 7}}, {"max_tokens", 12}, {"temperature", 1.0}, {"seed", 1234}, {"ignore_eos", true}};
  const auto a = post_json(port(), "/v1/completions", req).json();
  const auto b = post_json(port(), "/v1/completions", req).json();
  EXPECT_EQ(a["choices"][0]["token_ids"], b["choices"][0]["token_ids"]);
  req["seed"] = 99;
  const auto c = post_json(port(), "/v1/completions", req).json();
  EXPECT_NE(a["choices"][0]["token_ids"], c["choices"][0]["token_ids"]);
  // n samples of one seeded request differ from each other but not between runs.
  req["n"] = 3;
  const auto d = post_json(port(), "/v1/completions", req).json();
  const auto e = post_json(port(), "/v1/completions", req).json();
  EXPECT_EQ(d["choices"], e["choices"]);
  EXPECT_NE(d["choices"][0]["token_ids"], d["choices"][1]["token_ids"]);
}

TEST_F(CompletionsTest, StopTokenIdsEndTheAnswer) {
  const auto ref = testing::reference_greedy({1, 2, 3, 4}, 8);
  json req = greedy({1, 2, 3, 4}, 8);
  req["stop_token_ids"] = {ref[2]};
  req["stop"] = {"never appears"};
  const json body = post_json(port(), "/v1/completions", req).json();
  const auto tokens = ids_of(body["choices"][0]["token_ids"]);
  const auto first = std::find(ref.begin(), ref.end(), ref[2]) - ref.begin();
  EXPECT_EQ(tokens, std::vector<int32_t>(ref.begin(), ref.begin() + first + 1));
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
}

TEST_F(CompletionsTest, LegacyLogprobs) {
  json req = greedy({1, 2, 3, 4}, 4);
  req["logprobs"] = 3;
  const json body = post_json(port(), "/v1/completions", req).json();
  const json& lp = body["choices"][0]["logprobs"];
  const auto tokens = ids_of(body["choices"][0]["token_ids"]);
  ASSERT_EQ(lp["tokens"].size(), 4u);
  size_t offset = 0;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(lp["tokens"][i], "token_id:" + std::to_string(tokens[i]));
    const double logprob = lp["token_logprobs"][i];
    EXPECT_LE(logprob, 0.0);
    // Greedy: the chosen token is the most likely one, so it is among the top 3 and has their largest
    // logprob.
    const json& top = lp["top_logprobs"][i];
    EXPECT_EQ(top.size(), 3u);
    double best = -1e9;
    for (const auto& [token, value] : top.items()) best = std::max(best, value.get<double>());
    EXPECT_DOUBLE_EQ(best, logprob);
    EXPECT_EQ(top[lp["tokens"][i].get<std::string>()], logprob);
    EXPECT_EQ(lp["text_offset"][i], offset);  // where the token's text starts in the choice's text
    offset += lp["tokens"][i].get<std::string>().size();
  }
}

TEST_F(CompletionsTest, EchoWithMaxTokensZeroScoresThePrompt) {
  // The prompt is the greedy continuation of [1, 2, 3, 4]: its scored logprobs must equal those reported when
  // the same tokens were generated.
  json gen = greedy({1, 2, 3, 4}, 3);
  gen["logprobs"] = 0;
  const json generated = post_json(port(), "/v1/completions", gen).json()["choices"][0];
  const auto g = ids_of(generated["token_ids"]);
  std::vector<int32_t> prompt = {1, 2, 3, 4, g[0], g[1], g[2]};
  const auto r = post_json(port(), "/v1/completions",
                           {{"prompt", prompt}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 1}});
  ASSERT_EQ(r.status, 200) << r.body;
  const json body = r.json();
  const json& choice = body["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "length");
  EXPECT_TRUE(choice["token_ids"].empty());
  EXPECT_EQ(body["usage"]["completion_tokens"], 0);
  EXPECT_EQ(body["usage"]["prompt_tokens"], 7);
  const json& lp = choice["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 7u);
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(lp["token_logprobs"][4 + i].get<double>(),
                generated["logprobs"]["token_logprobs"][i].get<double>(), 1e-3)
        << i;
  }
  for (int i = 1; i < 7; ++i) EXPECT_LE(lp["token_logprobs"][i].get<double>(), 0.0);
}

TEST_F(CompletionsTest, EchoPrependsThePromptAndItsLogprobs) {
  json req = greedy({1, 2, 3}, 2);
  req["echo"] = true;
  req["logprobs"] = 0;
  const json choice = post_json(port(), "/v1/completions", req).json()["choices"][0];
  const json& lp = choice["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 5u);  // 3 prompt + 2 generated
  EXPECT_EQ(lp["tokens"][0], "token_id:1");
  const auto gen = testing::reference_greedy({1, 2, 3}, 2);
  EXPECT_EQ(lp["tokens"][3], "token_id:" + std::to_string(gen[0]));
}

// Streamed echo + logprobs + n > 1: the first chunk of every choice carries the echoed prompt and the
// prompt's logprobs, the same as the non-streamed answer's. The non-streamed request ran first, so the
// streamed ones find the prompt's two full blocks in the prefix cache: those positions used to come back
// null for every choice.
TEST_F(CompletionsTest, StreamedEchoGivesEveryChoiceThePromptLogprobs) {
  std::vector<int32_t> prompt;
  for (int i = 0; i < 37; ++i) prompt.push_back(1 + (i * 7) % 50);
  json req = {{"prompt", prompt}, {"max_tokens", 3}, {"temperature", 1.0}, {"seed", 7},
              {"n", 3},           {"echo", true},    {"logprobs", 2},      {"ignore_eos", true}};
  const json whole = post_json(port(), "/v1/completions", req).json();
  const json& expected = whole["choices"][0]["logprobs"];
  const size_t len = prompt.size();
  ASSERT_EQ(expected["tokens"].size(), len + 3);
  EXPECT_TRUE(expected["token_logprobs"][0].is_null());
  for (size_t i = 1; i < len; ++i) ASSERT_TRUE(expected["token_logprobs"][i].is_number()) << whole.dump();
  for (const int n : {3, 5}) {
    req["n"] = n;
    req["stream"] = true;
    const auto events = testing::sse_events(post_json(port(), "/v1/completions", req).body);
    std::map<int, json> first;
    for (const auto& e : events) {
      if (e == "[DONE]") continue;
      for (const auto& c : e["choices"])
        if (!first.contains(c["index"])) first[c["index"]] = c;
    }
    ASSERT_EQ(first.size(), static_cast<size_t>(n));
    for (const auto& [index, c] : first) {
      const json& lp = c["logprobs"];
      ASSERT_GE(lp["tokens"].size(), len) << "choice " << index << ": " << c.dump();
      for (size_t i = 0; i < len; ++i) {
        EXPECT_EQ(lp["tokens"][i], "token_id:" + std::to_string(prompt[i])) << index;
        EXPECT_EQ(lp["token_logprobs"][i], expected["token_logprobs"][i])
            << "choice " << index << " token " << i;
        EXPECT_EQ(lp["top_logprobs"][i], expected["top_logprobs"][i]) << "choice " << index << " token " << i;
        EXPECT_EQ(lp["text_offset"][i], expected["text_offset"][i]) << index;
      }
    }
  }
}

TEST_F(CompletionsTest, ReturnTokensAsTokenIds) {
  json req = greedy({1, 2}, 2);
  req["logprobs"] = 1;
  req["return_tokens_as_token_ids"] = true;
  const json lp = post_json(port(), "/v1/completions", req).json()["choices"][0]["logprobs"];
  EXPECT_EQ(lp["tokens"][0].get<std::string>().rfind("token_id:", 0), 0u);
}

TEST_F(CompletionsTest, TextNeedsATokenizer) {
  const auto r = post_json(port(), "/v1/completions", {{"prompt", "hello"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.json()["error"]["message"].get<std::string>().find("tokenizer"), std::string::npos);
  EXPECT_EQ(post_json(port(), "/tokenize", {{"prompt", "hello"}}).status, 400);
  EXPECT_EQ(post_json(port(), "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}})
                .status,
            400);
}

TEST_F(CompletionsTest, ModelsVersionHealth) {
  auto r = testing::http(port(), "GET", "/v1/models");
  ASSERT_EQ(r.status, 200);
  const json models = r.json();
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0]["id"], "tiny");
  EXPECT_EQ(models["data"][0]["object"], "model");
  EXPECT_EQ(models["data"][0]["max_model_len"], 256);
  r = testing::http(port(), "GET", "/version");
  EXPECT_EQ(r.json()["version"], DEEPSERVE_VERSION);
  EXPECT_EQ(testing::http(port(), "GET", "/health").status, 200);
}

TEST_F(CompletionsTest, MetricsUseVllmNamesUnderTheDeepservePrefix) {
  (void)post_json(port(), "/v1/completions", greedy({1, 2, 3}, 4));
  // The gauges are those of the end of the engine's last step, which may come just after the answer.
  ASSERT_TRUE(harness_->wait_engine_idle());
  const auto r = testing::http(port(), "GET", "/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type").rfind("text/plain; version=0.0.4", 0), 0u);
  const std::string& m = r.body;
  for (const char* name :
       {"# TYPE deepserve:num_requests_running gauge", "# TYPE deepserve:num_requests_waiting gauge",
        "# TYPE deepserve:kv_cache_usage_perc gauge", "# TYPE deepserve:prefix_cache_queries_total counter",
        "# TYPE deepserve:prefix_cache_hits_total counter", "# TYPE deepserve:prompt_tokens_total counter",
        "# TYPE deepserve:generation_tokens_total counter", "# TYPE deepserve:request_success_total counter",
        "# TYPE deepserve:time_to_first_token_seconds histogram",
        "# TYPE deepserve:inter_token_latency_seconds histogram",
        "# TYPE deepserve:e2e_request_latency_seconds histogram",
        "# TYPE deepserve:request_queue_time_seconds histogram",
        "# TYPE deepserve:kv_cache_fragmentation_ratio gauge",
        "# TYPE deepserve:batch_wait_time_seconds histogram",
        "deepserve:batch_wait_time_seconds_count{model_name=\"tiny\"}",
        "deepserve:num_requests_running{model_name=\"tiny\"} 0",
        "deepserve:time_to_first_token_seconds_bucket{model_name=\"tiny\",le=\"+Inf\"}",
        "deepserve:request_success_total{model_name=\"tiny\",finished_reason=\"length\"}"}) {
    EXPECT_NE(m.find(name), std::string::npos) << name;
  }
  // Counters that moved: read one value back.
  const std::string key = "deepserve:generation_tokens_total{model_name=\"tiny\"} ";
  const auto pos = m.find(key);
  ASSERT_NE(pos, std::string::npos);
  EXPECT_GE(std::stod(m.substr(pos + key.size())), 4.0);
  const EngineStats stats = harness_->engine().stats();
  EXPECT_NE(m.find(key + std::to_string(stats.generation_tokens)), std::string::npos);
}

// With the tiny hand-written tokenizer (ids 0..267) and a test chat renderer.
class TextRoutesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::HarnessOptions o;
    o.with_tokenizer = true;
    o.with_chat_template = true;
    harness_ = new testing::ServerHarness(o);
  }
  static void TearDownTestSuite() {
    delete harness_;
    harness_ = nullptr;
  }
  static uint16_t port() { return harness_->port(); }
  static const tokenizer::Tokenizer& tok() { return *harness_->tokenizer(); }
  static testing::ServerHarness* harness_;
};
testing::ServerHarness* TextRoutesTest::harness_ = nullptr;

TEST_F(TextRoutesTest, StringPromptsGoThroughTheTokenizer) {
  json req = greedy("the 12", 5);
  req["return_token_ids"] = true;
  req["echo"] = true;
  const json body = post_json(port(), "/v1/completions", req).json();
  const auto prompt_ids = tok().encode("the 12", true);
  EXPECT_EQ(prompt_ids.front(), 262);  // BOS from the post-processor
  const json& choice = body["choices"][0];
  EXPECT_EQ(ids_of(choice["prompt_token_ids"]), std::vector<int32_t>(prompt_ids.begin(), prompt_ids.end()));
  const auto tokens = ids_of(choice["token_ids"]);
  EXPECT_EQ(tokens, testing::reference_greedy({prompt_ids.begin(), prompt_ids.end()}, 5));
  // The text is the echoed prompt, then the detokenized continuation.
  EXPECT_EQ(choice["text"], "the 12" + tok().decode(tokens, true));
  EXPECT_EQ(body["usage"]["prompt_tokens"], prompt_ids.size());
}

TEST_F(TextRoutesTest, ChatNonStreamed) {
  json req = {
      {"messages", {{{"role", "system"}, {"content", "be brief"}}, {{"role", "user"}, {"content", "the"}}}},
      {"max_tokens", 6},
      {"temperature", 0},
      {"ignore_eos", true},
      {"return_token_ids", true}};
  const auto r = post_json(port(), "/v1/chat/completions", req);
  ASSERT_EQ(r.status, 200) << r.body;
  const json body = r.json();
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  ChatRenderInput in;
  in.messages = nlohmann::ordered_json::parse(req["messages"].dump());
  const auto prompt_ids = tok().encode(testing::render_test_chat(in), false);
  EXPECT_EQ(ids_of(body["prompt_token_ids"]), std::vector<int32_t>(prompt_ids.begin(), prompt_ids.end()));
  const json& choice = body["choices"][0];
  EXPECT_EQ(choice["message"]["role"], "assistant");
  const auto tokens = ids_of(choice["token_ids"]);
  EXPECT_EQ(tokens, testing::reference_greedy({prompt_ids.begin(), prompt_ids.end()}, 6));
  EXPECT_EQ(choice["message"]["content"], tok().decode(tokens, true));
  EXPECT_EQ(choice["finish_reason"], "length");
  EXPECT_EQ(body["usage"]["prompt_tokens"], prompt_ids.size());
  EXPECT_EQ(body["usage"]["completion_tokens"], 6);
}

TEST_F(TextRoutesTest, ChatStreamedAsOpenAiDoes) {
  json req = {{"messages", {{{"role", "user"}, {"content", "the 12"}}}},
              {"max_tokens", 5},
              {"temperature", 0},
              {"ignore_eos", true},
              {"stream", true},
              {"stream_options", {{"include_usage", true}}}};
  const auto events = testing::sse_events(post_json(port(), "/v1/chat/completions", req).body);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.front()["object"], "chat.completion.chunk");
  EXPECT_EQ(events.front()["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(events.back(), "[DONE]");
  const json& usage = events[events.size() - 2];
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 5);
  std::string content;
  for (size_t i = 1; i + 2 < events.size(); ++i) {
    const json& c = events[i]["choices"][0];
    EXPECT_FALSE(c["delta"].contains("role"));
    content += c["delta"].value("content", "");
    EXPECT_EQ(c["finish_reason"].is_null(), i + 3 < events.size());
  }
  EXPECT_EQ(events[events.size() - 3]["choices"][0]["finish_reason"], "length");
  req.erase("stream");
  req.erase("stream_options");
  const json whole = post_json(port(), "/v1/chat/completions", req).json();
  EXPECT_EQ(content, whole["choices"][0]["message"]["content"].get<std::string>());
}

TEST_F(TextRoutesTest, ChatLogprobs) {
  json req = {{"messages", {{{"role", "user"}, {"content", "the"}}}},
              {"max_tokens", 3},
              {"temperature", 0},
              {"ignore_eos", true},
              {"logprobs", true},
              {"top_logprobs", 2}};
  const json choice = post_json(port(), "/v1/chat/completions", req).json()["choices"][0];
  const json& content = choice["logprobs"]["content"];
  ASSERT_EQ(content.size(), 3u);
  for (const auto& entry : content) {
    ASSERT_EQ(entry["top_logprobs"].size(), 2u);
    EXPECT_EQ(entry["top_logprobs"][0]["logprob"], entry["logprob"]);  // greedy: the best one
    EXPECT_TRUE(entry["bytes"].is_array());
  }
}

TEST_F(TextRoutesTest, TokenizeAndDetokenize) {
  auto r = post_json(port(), "/tokenize", {{"prompt", "the 12"}, {"return_token_strs", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  json body = r.json();
  const auto expected = tok().encode("the 12", true);
  EXPECT_EQ(ids_of(body["tokens"]), std::vector<int32_t>(expected.begin(), expected.end()));
  EXPECT_EQ(body["count"], expected.size());
  EXPECT_EQ(body["max_model_len"], 256);
  EXPECT_EQ(body["token_strs"][0], "<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>");
  r = post_json(port(), "/tokenize", {{"prompt", "the"}, {"add_special_tokens", false}});
  EXPECT_EQ(r.json()["tokens"], json({'t', 257}));  // no BOS; "t" + the merge "he"
  r = post_json(port(), "/tokenize", {{"messages", {{{"role", "user"}, {"content", "the"}}}}});
  ChatRenderInput in;
  in.messages = nlohmann::ordered_json::parse(R"([{"role":"user","content":"the"}])");
  const auto chat_ids = tok().encode(testing::render_test_chat(in), false);
  EXPECT_EQ(ids_of(r.json()["tokens"]), std::vector<int32_t>(chat_ids.begin(), chat_ids.end()));
  r = post_json(port(), "/detokenize", {{"tokens", body["tokens"]}});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.json()["prompt"], "<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>the 12");
}

}  // namespace
}  // namespace ds::server
