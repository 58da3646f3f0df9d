// The OpenAI server under hostile load (RELIABILITY.md "Connections and load"): a flood of idle connections
// never keeps /health or /metrics out, HEAD /health and /version are open, a request that could never be
// admitted is a 400, and a stream whose client stops reading pauses its generation, then is aborted by the
// write timeout with its KV blocks freed. The 60-second version of the last: tests/soak.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <atomic>
#include <thread>

#include "server_harness.h"

namespace ds::server {
namespace {

using nlohmann::json;
using testing::Connection;
using testing::request_text;
using testing::wait_for;
using Clock = std::chrono::steady_clock;

constexpr const char* kKey = "sk-overload-test-key";

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int64_t finished(const EngineStats& s, const char* reason) {
  const auto it = s.finished.find(reason);
  return it == s.finished.end() ? 0 : it->second;
}

// 2,000 connections that never send a byte, opened as fast as the kernel takes them (the server's cap is
// 1,024): /health (GET and HEAD, no credentials) and /metrics (with them) answer 200 within 1 s throughout,
// because the connections idle the longest are closed to make room. Before, everything past 1,088
// connections was reset at accept, the liveness probe included.
TEST(OverloadTest, HealthAnswersWithinOneSecondThroughAFloodOf2000IdleConnections) {
  rlimit limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  const rlim_t needed = 6000;  // 2,000 client ends + up to 1,088 server ends + the rest of the process
  if (limit.rlim_cur < needed) {
    ASSERT_GE(limit.rlim_max, needed) << "the hard RLIMIT_NOFILE is too low for this test";
    limit.rlim_cur = needed;
    ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &limit), 0);
  }
  testing::HarnessOptions o;
  o.api_keys = {kKey};
  testing::ServerHarness h(o);
  const uint16_t port = h.port();

  std::atomic<bool> flooded{false};
  std::atomic<int> opened{0};
  std::vector<std::unique_ptr<Connection>> flood;
  std::thread flooder([&] {
    for (int i = 0; i < 2000; ++i) {
      try {
        flood.push_back(std::make_unique<Connection>(port, std::chrono::seconds(2)));
        ++opened;
      } catch (const std::exception&) {
        break;  // counted below
      }
    }
    flooded = true;
  });

  double worst = 0.0;
  int probes = 0, failures = 0;
  auto probe = [&](const std::string& method, const std::string& path, std::vector<std::string> headers) {
    const auto t0 = Clock::now();
    int status = 0;
    try {
      Connection c(port, std::chrono::seconds(2));
      c.send(request_text(method, path, "", headers));
      status = c.read_reply().status;
    } catch (const std::exception&) {
    }
    const double took = seconds_since(t0);
    worst = std::max(worst, took);
    ++probes;
    if (status != 200 || took > 1.0) {
      ++failures;
      ADD_FAILURE() << method << " " << path << ": status " << status << " after " << took << " s, with "
                    << opened << " flood connections open";
    }
  };
  const std::vector<std::string> auth = {std::string("Authorization: Bearer ") + kKey};
  Clock::time_point flood_done;
  bool done_seen = false;
  while (!done_seen || seconds_since(flood_done) < 1.0) {
    if (!done_seen && flooded) {
      done_seen = true;
      flood_done = Clock::now();
    }
    probe("GET", "/health", {});
    probe("HEAD", "/health", {});
    probe("GET", "/metrics", auth);
    if (failures > 5) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  flooder.join();
  EXPECT_EQ(opened, 2000);
  EXPECT_EQ(failures, 0);
  EXPECT_LT(worst, 1.0);
  EXPECT_GE(probes, 30);
  // The server held no more than its cap: the flood's oldest connections were closed.
  EXPECT_LE(h.server().num_connections(), 1024 + 64);
  std::printf("[ flood ] %d connections opened, %d probes, slowest %.1f ms, server holds %lld\n",
              opened.load(), probes, worst * 1000, static_cast<long long>(h.server().num_connections()));
}

TEST(OverloadTest, HeadHealthAndVersionNeedNoCredentialsAndHaveNoBody) {
  testing::HarnessOptions o;
  o.api_keys = {kKey};
  testing::ServerHarness h(o);
  for (const std::string path : {"/health", "/version"}) {
    Connection c(h.port());
    c.send(request_text("HEAD", path, ""));
    const std::string all = c.read_until("(read until the server closes)");
    EXPECT_EQ(all.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << all;
    EXPECT_EQ(all.size(), all.find("\r\n\r\n") + 4) << path << " sent a body: " << all;
  }
  // /metrics is not open, HEAD or not.
  Connection c(h.port());
  c.send(request_text("HEAD", "/metrics", ""));
  const std::string all = c.read_until("(read until the server closes)");
  EXPECT_EQ(all.rfind("HTTP/1.1 401 Unauthorized\r\n", 0), 0u) << all;
  EXPECT_EQ(all.size(), all.find("\r\n\r\n") + 4) << all;
}

// prompts x n above --max-queue-len can never be admitted, even on an idle server: a 400 naming the limit,
// not a 503 with Retry-After that a client would retry forever.
TEST(OverloadTest, RequestThatCanNeverBeAdmittedIs400NamingTheLimit) {
  testing::HarnessOptions o;
  o.engine.max_queue_len = 6;
  testing::ServerHarness h(o);
  json body = {{"prompt", {{1, 2}, {3, 4}}}, {"max_tokens", 2}, {"n", 4}};
  auto r = testing::post_json(h.port(), "/v1/completions", body);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.header("retry-after"), "");
  EXPECT_EQ(r.body,
            json({{"error",
                   {{"message",
                     "this request asks for 8 samples (2 prompt(s) x n=4), more than this server ever queues "
                     "(--max-queue-len 6); send fewer prompts or a smaller n"},
                    {"type", "invalid_request_error"},
                    {"param", "prompt"},
                    {"code", "too_many_samples"}}}})
                .dump());
  body["prompt"] = {1, 2};
  body["n"] = 7;
  r = testing::post_json(h.port(), "/v1/completions", body);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json()["error"]["param"], "n");
  // What fits is served, and nothing was left in the engine.
  body["n"] = 6;
  EXPECT_EQ(testing::post_json(h.port(), "/v1/completions", body).status, 200);
  EXPECT_TRUE(h.wait_engine_idle());
}

// The short version of the soak test: a chat stream (n 8, top_logprobs 20) whose client never reads. Its
// generation pauses once --max-pending-bytes are queued (and the kernel's socket buffers are full), other
// clients are served meanwhile, and the write timeout aborts it and frees its KV blocks.
TEST(OverloadTest, StreamWhoseClientStopsReadingPausesThenTheWriteTimeoutFreesItsKv) {
  testing::HarnessOptions o;
  o.model_dir = std::string(DS_FIXTURES_DIR) + "/deepseek_v3_tiny_chat";
  o.with_model_tokenizer = true;
  o.api.served_model_names = {testing::kModelName};
  o.api.max_model_len = 1024;
  o.api.vocab_size = 0;  // the model's
  o.engine.max_model_len = 1024;
  o.engine.num_gpu_blocks = 1024;
  o.http.max_pending_bytes = 64 * 1024;
  o.http.write_timeout = std::chrono::milliseconds(2000);
  testing::ServerHarness h(o);
  const json request = {{"messages", {{{"role", "user"}, {"content", "Tell me a long story."}}}},
                        {"max_tokens", 900},
                        {"n", 8},
                        {"logprobs", true},
                        {"top_logprobs", 20},
                        {"temperature", 1.0},
                        {"ignore_eos", true},
                        {"stream", true}};
  Connection stalled(h.port());
  const int small = 4096;
  ASSERT_EQ(::setsockopt(stalled.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  ASSERT_TRUE(stalled.send(request_text("POST", "/v1/chat/completions", request.dump())));
  // Every sample leaves the batch.
  ASSERT_TRUE(wait_for([&] { return h.engine().stats().num_paused == 8; }, std::chrono::seconds(20)))
      << "paused: " << h.engine().stats().num_paused
      << ", tokens generated: " << h.engine().stats().generation_tokens;
  const auto t_paused = Clock::now();
  const int64_t generated = h.engine().stats().generation_tokens;
  EXPECT_LT(generated, 8 * 900 / 2) << "most of the answer was generated for a client that reads nothing";
  EXPECT_GT(h.engine().stats().kv_cache_usage, 0.0);  // paused, not freed: it may resume
  // Another client is served meanwhile.
  const auto t0 = Clock::now();
  const auto other = testing::post_json(h.port(), "/v1/chat/completions",
                                        {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                                         {"max_tokens", 4},
                                         {"temperature", 0},
                                         {"ignore_eos", true}});
  EXPECT_EQ(other.status, 200);
  EXPECT_LT(seconds_since(t0), 2.0);
  EXPECT_EQ(h.engine().stats().generation_tokens, generated + 4) << "the stalled stream generated more";
  // The write timeout (2 s) ends it: aborted, every block freed.
  ASSERT_TRUE(wait_for([&] { return h.server().num_requests_in_flight() == 0; }, std::chrono::seconds(10)));
  EXPECT_TRUE(h.wait_engine_idle());
  const EngineStats s = h.engine().stats();
  EXPECT_EQ(s.kv_cache_usage, 0.0);
  EXPECT_EQ(s.num_paused, 0);
  EXPECT_EQ(finished(s, "abort"), 8);
  const double ended = seconds_since(t_paused);
  EXPECT_LT(ended, 6.0);
  std::printf("[ stalled ] %lld tokens generated before the pause, aborted %.1f s after it\n",
              static_cast<long long>(generated), ended);
}

}  // namespace
}  // namespace ds::server
