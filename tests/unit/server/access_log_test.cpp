// The access log: without --log-requests it never holds a prompt (text or token ids) or a sampling
// parameter; with it, each generation request's line carries its prompts (at most 4 KiB) and parameters.
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "server/request_log.h"
#include "server_harness.h"

namespace ds::server {
namespace {

using nlohmann::json;

class AccessLogTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    path_ = ::testing::TempDir() + "deepserve_access_log_" + std::to_string(::getpid()) + ".jsonl";
    std::remove(path_.c_str());
  }
  void TearDown() override { std::remove(path_.c_str()); }

  // The log's lines once `count` of them are there (a line is written once its answer has gone out).
  std::vector<json> lines(size_t count) const {
    std::vector<json> out;
    for (int attempt = 0; attempt < 500; ++attempt) {
      out.clear();
      std::ifstream in(path_);
      std::string line;
      while (std::getline(in, line)) out.push_back(json::parse(line));
      if (out.size() >= count) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return out;
  }
  static json by_id(const std::vector<json>& lines, const std::string& id) {
    for (const auto& l : lines)
      if (l["request_id"] == id) return l;
    return nullptr;
  }

  std::string path_;
};

TEST_P(AccessLogTest, PromptsAndParamsOnlyWithLogRequests) {
  const bool log_requests = GetParam();
  testing::HarnessOptions o;
  o.with_tokenizer = true;
  o.with_chat_template = true;
  o.access_log = path_;
  o.api.log_requests = log_requests;
  testing::ServerHarness h(o);
  const uint16_t port = h.port();
  struct Sent {
    std::string id, path;
    json body;
  };
  const std::vector<Sent> sent = {
      {"text",
       "/v1/completions",
       {{"prompt", "the SECRET prompt"},
        {"max_tokens", 2},
        {"temperature", 0.5},
        {"seed", 11},
        {"stop", {"qq"}}}},
      {"ids", "/v1/completions", {{"prompt", {{101, 102, 103}, {104, 105}}}, {"max_tokens", 1}, {"n", 2}}},
      {"chat",
       "/v1/chat/completions",
       {{"messages", {{{"role", "user"}, {"content", "a CHATSECRET question"}}}}, {"max_tokens", 2}}},
      {"stream", "/v1/completions", {{"prompt", "streamed SECRET"}, {"max_tokens", 2}, {"stream", true}}},
  };
  for (const auto& s : sent) {
    const auto r = testing::http(port, "POST", s.path, s.body.dump(), {"X-Request-Id: " + s.id});
    ASSERT_EQ(r.status, 200) << s.id << ": " << r.body;
  }
  const auto log = lines(sent.size());
  ASSERT_EQ(log.size(), sent.size());

  if (!log_requests) {
    for (const auto& line : log) {
      EXPECT_FALSE(line.contains("request")) << line.dump();
      const std::string text = line.dump();
      EXPECT_EQ(text.find("SECRET"), std::string::npos) << text;
      EXPECT_EQ(text.find("temperature"), std::string::npos);
      EXPECT_EQ(text.find("101"), std::string::npos);
    }
    EXPECT_EQ(by_id(log, "text")["prompt_tokens"], h.tokenizer()->encode("the SECRET prompt", true).size());
    return;
  }

  const json text = by_id(log, "text")["request"];
  ASSERT_EQ(text["prompts"].size(), 1u);
  EXPECT_EQ(text["prompts"][0]["text"], "the SECRET prompt");
  EXPECT_EQ(text["prompts"][0]["token_ids"].get<std::vector<int32_t>>(),
            h.tokenizer()->encode("the SECRET prompt", true));
  EXPECT_EQ(text["prompt_truncated"], false);
  EXPECT_EQ(text["params"]["temperature"], 0.5);
  EXPECT_EQ(text["params"]["max_tokens"], 2);
  EXPECT_EQ(text["params"]["seed"], 11);
  EXPECT_EQ(text["params"]["stop"], json::array({"qq"}));
  EXPECT_EQ(text["params"]["n"], 1);

  // Token-id prompts: the ids, and their text through the tokenizer.
  const json ids = by_id(log, "ids")["request"];
  ASSERT_EQ(ids["prompts"].size(), 2u);
  EXPECT_EQ(ids["prompts"][0]["token_ids"], json::array({101, 102, 103}));
  EXPECT_EQ(ids["prompts"][1]["token_ids"], json::array({104, 105}));
  const std::vector<int32_t> first = {101, 102, 103};
  EXPECT_EQ(ids["prompts"][0]["text"], h.tokenizer()->decode(first, false));
  EXPECT_EQ(ids["params"]["n"], 2);

  // Chat: the prompt the template rendered.
  const json chat = by_id(log, "chat")["request"];
  EXPECT_NE(chat["prompts"][0]["text"].get<std::string>().find("a CHATSECRET question"), std::string::npos)
      << chat.dump();
  EXPECT_FALSE(chat["prompts"][0]["token_ids"].empty());
  EXPECT_EQ(by_id(log, "stream")["request"]["prompts"][0]["text"], "streamed SECRET");
}

INSTANTIATE_TEST_SUITE_P(Flag, AccessLogTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "WithLogRequests" : "Default"; });

// The real binary writes its access log to stdout: no prompt there by default; with log-requests (here from a
// config file) the prompt's token ids and the params are.
TEST(AccessLogBinaryTest, ServeLogsPromptsOnlyWithLogRequests) {
  const std::string model = std::string(DS_FIXTURES_DIR) + "/deepseek_v2_tiny_bf16";
  const std::string config = ::testing::TempDir() + "deepserve_log_requests.yaml";
  std::ofstream(config) << "log_requests: true\n";
  const json req = {{"prompt", {911, 912, 913}}, {"max_tokens", 2}, {"temperature", 0.75}};
  for (const bool with_flag : {false, true}) {
    std::vector<std::string> args = {"--model", model, "--threads", "1"};
    if (with_flag) args.insert(args.end(), {"--config", config});
    testing::ServeProcess serve(args);
    ASSERT_EQ(testing::post_json(serve.port(), "/v1/completions", req).status, 200);
    std::string out;
    for (int i = 0; i < 500 && out.find("/v1/completions") == std::string::npos; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      out = serve.stdout_text();
    }
    const json line = json::parse(out.substr(0, out.find('\n')));
    EXPECT_EQ(line["route"], "/v1/completions");
    EXPECT_EQ(line["prompt_tokens"], 3);
    if (with_flag) {
      EXPECT_EQ(line["request"]["prompts"][0]["token_ids"], json::array({911, 912, 913})) << out;
      EXPECT_EQ(line["request"]["params"]["temperature"], 0.75);
    } else {
      EXPECT_FALSE(line.contains("request")) << out;
      EXPECT_EQ(out.find("911"), std::string::npos) << out;
    }
  }
  std::remove(config.c_str());
}

// A prompt of 10,000 characters is cut to 4 KiB, which leaves no room for its ids or for the next prompt.
TEST(RequestLogTest, LongTextIsCutToTheBudget) {
  PromptInput p;
  p.text = std::string(10000, 'z');
  p.ids.assign(2500, 7);
  SamplingParams params;
  params.temperature = 0.25;
  const json d = request_log_details({p, p}, params, nullptr);
  ASSERT_EQ(d["prompts"].size(), 1u);
  EXPECT_EQ(d["prompts"][0]["text"], std::string(kLoggedPromptBytes, 'z') + "...");
  EXPECT_TRUE(d["prompts"][0]["token_ids"].empty());
  EXPECT_EQ(d["prompt_truncated"], true);
  EXPECT_EQ(d["params"]["temperature"], 0.25);
  EXPECT_LT(d.dump().size(), kLoggedPromptBytes + 1024);
}

// Token ids without a tokenizer share the same 4 KiB.
TEST(RequestLogTest, TokenIdsAreCutToTheBudget) {
  PromptInput p;
  p.ids.assign(5000, 123);  // "123," is 4 bytes: 1024 of them fit
  SamplingParams params;
  const json d = request_log_details({p, p}, params, nullptr);
  EXPECT_EQ(d["prompts"].size(), 1u);  // nothing left for the second
  EXPECT_EQ(d["prompts"][0]["text"], "");
  EXPECT_EQ(d["prompts"][0]["token_ids"].size(), 1024u);
  EXPECT_EQ(d["prompt_truncated"], true);
  EXPECT_EQ(d["params"]["max_tokens"], 16);
  EXPECT_TRUE(d["params"]["seed"].is_null());
}

}  // namespace
}  // namespace ds::server
