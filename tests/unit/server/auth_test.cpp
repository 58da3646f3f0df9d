// API keys (hash compare over every key, names as users), the routes they guard, and the access log.
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "server/auth.h"
#include "server_harness.h"
#include "util/check.h"

namespace ds::server {
namespace {

using nlohmann::json;

TEST(Sha256Test, KnownDigest) {
  // FIPS 180-2 test vector.
  const Sha256 d = sha256("abc");
  EXPECT_EQ(d[0], 0xba);
  EXPECT_EQ(d[1], 0x78);
  EXPECT_EQ(d[31], 0xad);
}

TEST(ApiKeysTest, AcceptsEveryKeyAndNothingElse) {
  ApiKeys keys;
  keys.add("alice", "sk-alice");
  keys.add("bob", "sk-bob");
  EXPECT_EQ(keys.authenticate("Bearer sk-alice"), "alice");
  EXPECT_EQ(keys.authenticate("Bearer sk-bob"), "bob");
  EXPECT_EQ(keys.authenticate("bearer sk-bob"), "bob");  // the scheme is case-insensitive
  EXPECT_EQ(keys.authenticate("Bearer sk-carol"), std::nullopt);
  EXPECT_EQ(keys.authenticate("Bearer sk-alice "), std::nullopt);
  EXPECT_EQ(keys.authenticate("Bearer "), std::nullopt);
  EXPECT_EQ(keys.authenticate("sk-alice"), std::nullopt);
  EXPECT_EQ(keys.authenticate("Basic sk-alice"), std::nullopt);
  EXPECT_EQ(keys.authenticate(""), std::nullopt);
  EXPECT_THROW(keys.add("empty", ""), InvalidArgument);
}

TEST(ApiKeysTest, FileWithNamesCommentsAndBlankLines) {
  const std::string path = ::testing::TempDir() + "deepserve_keys_test.txt";
  std::ofstream(path) << "# team keys\n\nalice   sk-1\nsk-2\n  bob\tsk-3  \n";
  ApiKeys keys;
  keys.add_file(path);
  EXPECT_EQ(keys.size(), 3u);
  EXPECT_EQ(keys.authenticate("Bearer sk-1"), "alice");
  EXPECT_EQ(keys.authenticate("Bearer sk-2"), "key-2");
  EXPECT_EQ(keys.authenticate("Bearer sk-3"), "bob");
  std::ofstream(path) << "alice sk-1 extra\n";
  ApiKeys bad;
  try {
    bad.add_file(path);
    FAIL() << "a malformed line must be refused";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("line 1"), std::string::npos);
  }
  EXPECT_THROW(bad.add_file(::testing::TempDir() + "no_such_keys_file"), InvalidArgument);
  std::remove(path.c_str());
}

TEST(ApiKeysTest, AKeyFileThatIsNotTextIsRefusedAndReloadKeepsTheOldKeys) {
  // Issue 19: a key file of binary garbage loaded, and on SIGHUP replaced the keys in use.
  const std::string path = ::testing::TempDir() + "deepserve_binary_keys_test.txt";
  std::ofstream(path, std::ios::binary) << std::string("alice sk-1\nbob sk-\x01\xff\x00z\n", 19);
  ApiKeys keys;
  try {
    keys.add_file(path);
    FAIL() << "a binary key file must be refused";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()), "--api-key-file " + path +
                                         " line 2: byte 0x01 is not printable ASCII; the file must be text, "
                                         "one 'KEY' or 'NAME KEY' a line");
  }
  EXPECT_EQ(keys.size(), 0u);  // nothing of it was taken
  EXPECT_THROW(keys.add("carol", "sk-\x7f"), InvalidArgument);
  EXPECT_THROW(keys.add("caról", "sk-3"), InvalidArgument);

  std::ofstream(path, std::ios::trunc) << "alice sk-1\n";
  AuthOptions o;
  o.api_key_file = path;
  Auth auth(o);
  EXPECT_EQ(auth.authenticate("Bearer sk-1").user, "alice");
  std::ofstream(path, std::ios::binary | std::ios::trunc) << std::string(
      "\x7f"
      "ELF\x02\x01\x01\x00",
      8);
  EXPECT_FALSE(auth.reload());
  EXPECT_EQ(auth.authenticate("Bearer sk-1").user, "alice");  // the old keys stay
  // At start, the same file is an error.
  EXPECT_THROW({ Auth again(o); }, InvalidArgument);
  std::remove(path.c_str());
}

TEST(ServerAuthTest, EveryRouteButHealthAndVersionNeedsAKey) {
  testing::HarnessOptions o;
  o.with_tokenizer = true;
  o.api_keys = {"abc-secret"};
  o.access_log = ::testing::TempDir() + "deepserve_access_" + std::to_string(::getpid()) + ".jsonl";
  std::remove(o.access_log.c_str());
  {
    testing::ServerHarness h(o);
    const std::vector<std::string> good = {"Authorization: Bearer abc-secret"};
    const std::vector<std::string> bad = {"Authorization: Bearer abc-secreT"};
    EXPECT_EQ(testing::http(h.port(), "GET", "/health").status, 200);
    EXPECT_EQ(testing::http(h.port(), "GET", "/version").status, 200);
    const json completion = {{"prompt", {1, 2}}, {"max_tokens", 2}};
    struct Route {
      const char* method;
      const char* path;
      std::string body;
    };
    for (const Route& r : std::vector<Route>{{"GET", "/v1/models", ""},
                                             {"GET", "/metrics", ""},
                                             {"POST", "/v1/completions", completion.dump()},
                                             {"POST", "/v1/chat/completions", "{}"},
                                             {"POST", "/tokenize", R"({"prompt": "the"})"},
                                             {"POST", "/detokenize", R"({"tokens": [1]})"}}) {
      for (const auto& headers : {std::vector<std::string>{}, bad}) {
        const auto reply = testing::http(h.port(), r.method, r.path, r.body, headers);
        EXPECT_EQ(reply.status, 401) << r.path;
        EXPECT_EQ(reply.json()["error"]["type"], "authentication_error") << r.path;
      }
    }
    // The Host header and a path prefix change nothing.
    EXPECT_EQ(testing::http(h.port(), "GET", "/v1/models", "", {"X-Forwarded-Host: localhost"}).status, 401);
    EXPECT_EQ(testing::http(h.port(), "GET", "/health/../v1/models").status, 401);

    EXPECT_EQ(testing::http(h.port(), "GET", "/v1/models", "", good).status, 200);
    EXPECT_EQ(testing::http(h.port(), "GET", "/metrics", "", good).status, 200);
    const auto r = testing::http(h.port(), "POST", "/v1/completions", completion.dump(),
                                 {"Authorization: Bearer abc-secret", "X-Request-Id: req-42"});
    EXPECT_EQ(r.status, 200);
    // A request is logged once its answer has been written, which may be just after the client read it.
    for (int i = 0; i < 400 && h.server().num_answering() > 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // The access log: one JSON object per line, with the user (the key's name) and the tokens.
  std::ifstream in(o.access_log);
  std::string line;
  json completion_line;
  int lines = 0;
  while (std::getline(in, line)) {
    const json entry = json::parse(line);
    ++lines;
    for (const char* key : {"ts", "request_id", "user", "route", "status", "prompt_tokens",
                            "completion_tokens", "latency_ms", "method", "remote"}) {
      EXPECT_TRUE(entry.contains(key)) << key << " in " << line;
    }
    if (entry["request_id"] == "req-42") completion_line = entry;
  }
  EXPECT_EQ(lines, 19);  // every request above, answered or refused
  ASSERT_FALSE(completion_line.is_null());
  EXPECT_EQ(completion_line["user"], "user-abc");
  EXPECT_EQ(completion_line["route"], "/v1/completions");
  EXPECT_EQ(completion_line["status"], 200);
  EXPECT_EQ(completion_line["prompt_tokens"], 2);
  EXPECT_EQ(completion_line["completion_tokens"], 2);
  std::remove(o.access_log.c_str());
}

}  // namespace
}  // namespace ds::server
