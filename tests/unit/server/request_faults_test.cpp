// Issue 19 against the real server: sampling parameters that used to end the engine (and the process) are a
// 400 naming the field or sample fine; integers outside int64 are a 400, never wrapped; logit_bias,
// allowed_token_ids, bad_words, use_beam_search and truncate_prompt_tokens either work or are refused; and
// 200 random extreme combinations leave /health 200 and a plain request answered after each.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>

#include "server_harness.h"

namespace ds::server {
namespace {

using nlohmann::json;
using testing::post_json;

class RequestFaultsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { harness_ = new testing::ServerHarness(); }
  static void TearDownTestSuite() {
    delete harness_;
    harness_ = nullptr;
  }
  void TearDown() override {
    EXPECT_TRUE(harness_->wait_engine_idle(std::chrono::seconds(10)));
    EXPECT_FALSE(harness_->engine().dead());
  }
  static testing::HttpReply complete(json fields) {
    json body = {{"prompt", {5, 6, 7}}, {"max_tokens", 3}};
    body.update(fields);
    return post_json(harness_->port(), "/v1/completions", body);
  }
  // The exact error body of a 400.
  static json error_400(const std::string& message, const std::string& param) {
    return {{"error",
             {{"message", message}, {"type", "invalid_request_error"}, {"param", param}, {"code", nullptr}}}};
  }
  static void expect_400(json fields, const std::string& message, const std::string& param) {
    const auto r = complete(fields);
    EXPECT_EQ(r.status, 400) << fields.dump() << " -> " << r.body;
    if (r.status == 400) {
      EXPECT_EQ(r.json(), error_400(message, param)) << fields.dump();
    }
  }
  static void expect_alive() {
    EXPECT_EQ(testing::http(harness_->port(), "GET", "/health").status, 200);
    const auto plain = complete({{"temperature", 0}});
    EXPECT_EQ(plain.status, 200) << plain.body;
  }
  static testing::ServerHarness* harness_;
};

testing::ServerHarness* RequestFaultsTest::harness_ = nullptr;

TEST_F(RequestFaultsTest, ATinyRepetitionPenaltySamplesInsteadOfEndingTheEngine) {
  // Before: the sampler's "no token has any weight" check fired, the engine died, the process exited 1.
  for (const double t : {1.0, 0.0}) {
    const auto r = complete({{"repetition_penalty", 1e-300}, {"temperature", t}});
    ASSERT_EQ(r.status, 200) << r.body;
    const json choice = r.json()["choices"][0];
    EXPECT_EQ(choice["finish_reason"], "length");
    EXPECT_EQ(choice["token_ids"].size(), 3u);
    EXPECT_EQ(r.json()["usage"]["completion_tokens"], 3);
  }
  expect_alive();
}

TEST_F(RequestFaultsTest, MinTokensWithStopIdsCoveringTheVocabularyIsA400) {
  json all = json::array();
  for (int id = 0; id < 1024; ++id) all.push_back(id);
  const std::string message =
      "stop_token_ids (with EOS, covering the whole vocabulary) leaves no token to sample while min_tokens "
      "(1) "
      "masks EOS and stop_token_ids";
  for (const double t : {0.0, 1.0}) {
    expect_400({{"min_tokens", 1}, {"stop_token_ids", all}, {"temperature", t}}, message, "stop_token_ids");
  }
  expect_alive();
}

TEST_F(RequestFaultsTest, IntegersOutsideInt64AreRefusedNotWrapped) {
  // 2^64 - 1 was read as -1 (top_k off).
  expect_400(json::parse(R"({"top_k": 18446744073709551615})"),
             "'top_k' is 18446744073709551615, outside the 64-bit integers [-2^63, 2^63) this server takes",
             "top_k");
  expect_400(
      json::parse(R"({"max_tokens": 9223372036854775808})"),
      "'max_tokens' is 9223372036854775808, outside the 64-bit integers [-2^63, 2^63) this server takes",
      "max_tokens");
  expect_400(json::parse(R"({"seed": 18446744073709551615})"),
             "'seed' is 18446744073709551615, outside the 64-bit integers [-2^63, 2^63) this server takes",
             "seed");
  expect_400(json::parse(R"({"n": 100000000000000000000})"),
             "'n' is 1e+20, outside the 64-bit integers [-2^63, 2^63) this server takes", "n");
  expect_400(json::parse(R"({"stop_token_ids": [18446744073709551615]})"),
             "'stop_token_ids' must hold integer token ids in [0, 2^31), got 18446744073709551615",
             "stop_token_ids");
  // In int64 but outside the field's range.
  const auto r = complete(json::parse(R"({"max_tokens": 9223372036854775807})"));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.json()["error"]["code"], "context_length_exceeded") << r.body;
  EXPECT_EQ(r.json()["error"]["param"], "prompt") << r.body;
  expect_400(json::parse(R"({"n": 9223372036854775807})"),
             "n must be at most 2147483647, got 9223372036854775807", "n");
  expect_400({{"n", 9}}, "n must be at most 8 (--max-n), got 9", "n");
  expect_400(json::parse(R"({"top_k": -9223372036854775808})"),
             "top_k must be -1 or 0 (off) or >= 1, got -9223372036854775808", "top_k");
  EXPECT_EQ(complete(json::parse(R"({"seed": -1})")).status, 200);
  EXPECT_EQ(complete(json::parse(R"({"top_k": 9223372036854775807})")).status,
            200);  // larger than the vocabulary: off
}

TEST_F(RequestFaultsTest, LogitBiasKeysAndValuesAreChecked) {
  expect_400({{"logit_bias", {{"abc", 1}}}},
             "'logit_bias' keys must be token ids (decimal integers >= 0), got \"abc\"", "logit_bias");
  expect_400({{"logit_bias", {{"05", 1}}}},
             "'logit_bias' keys must be token ids (decimal integers >= 0), got \"05\"", "logit_bias");
  expect_400({{"logit_bias", {{"1024", 1}}}},
             "logit_bias has token id 1024, outside the vocabulary [0, 1024)", "logit_bias");
  expect_400({{"logit_bias", {{"5", 100.5}}}},
             "'logit_bias' of token 5 must be a number in [-100, 100], got 100.5", "logit_bias");
  expect_400({{"logit_bias", {{"5", "x"}}}},
             "'logit_bias' of token 5 must be a number in [-100, 100], got \"x\"", "logit_bias");
  expect_400({{"logit_bias", {1, 2}}},
             "'logit_bias' must be an object mapping token ids to biases, got [1,2]", "logit_bias");
  // +100 on one token makes greedy decoding pick it every time.
  const auto r = complete({{"logit_bias", {{"42", 100}}}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["choices"][0]["token_ids"], json({42, 42, 42}));
}

TEST_F(RequestFaultsTest, AllowedTokenIdsMaskEveryOtherToken) {
  expect_400({{"allowed_token_ids", json::array()}},
             "'allowed_token_ids' must not be empty (leave it out to allow all)", "allowed_token_ids");
  expect_400({{"allowed_token_ids", {3, 1024}}},
             "allowed_token_ids has token id 1024, outside the vocabulary [0, 1024)", "allowed_token_ids");
  expect_400({{"allowed_token_ids", {1}}, {"min_tokens", 1}},  // 1 is EOS, masked under min_tokens
             "allowed_token_ids leaves no token to sample while min_tokens (1) masks EOS and stop_token_ids",
             "allowed_token_ids");
  for (const double t : {0.0, 1.5}) {
    const auto r = complete({{"allowed_token_ids", {300, 301}}, {"temperature", t}, {"max_tokens", 6}});
    ASSERT_EQ(r.status, 200) << r.body;
    for (const auto& id : r.json()["choices"][0]["token_ids"]) EXPECT_TRUE(id == 300 || id == 301) << r.body;
  }
}

TEST_F(RequestFaultsTest, UnimplementedFieldsAreRefusedUnlessTheyAskForNothing) {
  expect_400({{"bad_words", {"x"}}}, "'bad_words' is not supported by this server; use logit_bias of -100",
             "bad_words");
  expect_400({{"use_beam_search", true}}, "'use_beam_search' is not supported by this server",
             "use_beam_search");
  expect_400({{"use_beam_search", "yes"}}, "'use_beam_search' must be true or false, got \"yes\"",
             "use_beam_search");
  EXPECT_EQ(complete({{"bad_words", json::array()}, {"use_beam_search", false}}).status, 200);
}

TEST_F(RequestFaultsTest, TruncatePromptTokensKeepsTheLastTokens) {
  const auto r = complete({{"prompt", {5, 6, 7, 8, 9}}, {"truncate_prompt_tokens", 2}, {"echo", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["usage"]["prompt_tokens"], 2);
  EXPECT_EQ(r.json()["choices"][0]["prompt_token_ids"], json({8, 9}));
  EXPECT_EQ(complete({{"truncate_prompt_tokens", -1}}).json()["usage"]["prompt_tokens"], 3);
  expect_400({{"truncate_prompt_tokens", 0}},
             "'truncate_prompt_tokens' must be -1 (the model's context, 256 tokens) or in [1, 256], got 0",
             "truncate_prompt_tokens");
  expect_400({{"truncate_prompt_tokens", 257}},
             "'truncate_prompt_tokens' must be -1 (the model's context, 256 tokens) or in [1, 256], got 257",
             "truncate_prompt_tokens");
}

// 200 bodies of random extreme sampling values, each answered 200 or 400 (never 500, never a dead engine),
// with /health 200 and a plain request answered after each.
TEST_F(RequestFaultsTest, TwoHundredRandomExtremeCombinationsLeaveTheServerServing) {
  std::mt19937_64 rng(19);
  const std::vector<json> floats = {0, 1e-300, -1e-300,   1e-45, 1e300,  -1e300,
                                    2, -2,     2.0000001, 1e-5,  9.9e-6, 0.5,
                                    1, 100,    -100,      1e38,  3.4e38, 1.7976931348623157e308};
  const std::vector<json> ints = {json(0),
                                  json(1),
                                  json(-1),
                                  json(2),
                                  json(20),
                                  json(21),
                                  json(1023),
                                  json(1024),
                                  json(INT32_MAX),
                                  json(INT64_MAX),
                                  json(INT64_MIN),
                                  json::parse("9223372036854775808"),
                                  json::parse("18446744073709551615"),
                                  json(1.5)};
  auto pick = [&](const std::vector<json>& from) { return from[rng() % from.size()]; };
  const std::vector<std::string> float_fields = {
      "temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty"};
  const std::vector<std::string> int_fields = {"top_k", "min_tokens", "n", "seed", "logprobs", "max_tokens"};
  int ok = 0, refused = 0;
  for (int i = 0; i < 200; ++i) {
    json body = {{"prompt", {5, 6, 7}}, {"max_tokens", static_cast<int>(1 + rng() % 4)}};
    for (const auto& f : float_fields)
      if (rng() % 4 == 0) body[f] = pick(floats);
    for (const auto& f : int_fields)
      if (rng() % 6 == 0) body[f] = pick(ints);
    if (rng() % 4 == 0) {
      json ids = json::array();
      const bool all = rng() % 2;
      for (int id = 0; id < 1024; ++id)
        if (all || rng() % 2) ids.push_back(id);
      body["stop_token_ids"] = ids;
    }
    if (rng() % 5 == 0) body["logit_bias"] = {{std::to_string(rng() % 1030), pick(floats)}};
    if (rng() % 5 == 0) body["allowed_token_ids"] = {rng() % 1030, 1};
    if (rng() % 4 == 0) body["stream"] = true;
    const auto r = post_json(harness_->port(), "/v1/completions", body);
    ASSERT_TRUE(r.status == 200 || r.status == 400) << body.dump() << " -> " << r.status << " " << r.body;
    if (r.status == 200 && body.value("stream", false)) {
      EXPECT_EQ(r.body.find("\"error\""), std::string::npos) << body.dump() << " -> " << r.body;
    }
    (r.status == 200 ? ok : refused) += 1;
    ASSERT_FALSE(harness_->engine().dead()) << body.dump() << ": " << harness_->engine().failure();
    ASSERT_EQ(testing::http(harness_->port(), "GET", "/health").status, 200) << body.dump();
    const auto plain = complete({{"temperature", 0}, {"max_tokens", 1}});
    ASSERT_EQ(plain.status, 200) << body.dump() << " then " << plain.body;
  }
  // Both kinds occur: the combinations are neither all refused nor all harmless.
  EXPECT_GT(ok, 30);
  EXPECT_GT(refused, 40);
  std::printf("200 random bodies: %d answered, %d refused with a 400\n", ok, refused);
}

}  // namespace
}  // namespace ds::server
