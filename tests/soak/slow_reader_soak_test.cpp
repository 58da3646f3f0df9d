// Soak (ctest label `soak`, RELIABILITY.md "client that stops reading a stream"): the real `deepserve serve`
// on the embedded tiny chat fixture gets 10 streams of n 16, top_logprobs 20, max_tokens 1,000 whose clients
// never read a byte, and keeps them for 60 s. Before backpressure this held the whole answer per stream
// (about 31 MB each; RSS 171 -> 547 MB in 33 s). Now generation pauses once --max-pending-bytes are queued:
// RSS must grow by less than kRssBound, another client's latency must stay within 2x of its idle latency,
// and when --write-timeout fires every stream is aborted and its KV blocks freed.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <algorithm>
#include <fstream>
#include <thread>

#include "../unit/server/server_harness.h"

namespace ds::server {
namespace {

using nlohmann::json;
using testing::Connection;
using testing::request_text;
using Clock = std::chrono::steady_clock;

constexpr int kStreams = 10;
constexpr int kSamples = 16;
constexpr int kWindowS = 60;
constexpr int kWriteTimeoutS = 60;
// What 10 paused streams may hold: each at most --max-pending-bytes (1 MiB) of queued events plus the one
// that crossed it, the deltas of one engine step (16 x about 2 KiB) and its choices' text and token ids
// (16 x a few hundred tokens): under 2 MiB a stream. Plus the KV pages their sequences touched and the
// allocator's high-water mark for a step of 160 sequences: 64 MiB in all. Measured on 2 cores: +33.5 MiB
// (22 -> 56 MiB), the streams paused after 4 to 5 s having generated 25,744 tokens (about 160 a sample).
constexpr int64_t kRssBound = 64ll << 20;

int64_t rss_bytes(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return -1;
}

// The value of an (unlabelled but for model_name) gauge in /metrics, or -1.
double metric(uint16_t port, const std::string& name) {
  const auto r = testing::http(port, "GET", "/metrics");
  const size_t at = r.body.find("\n" + name + "{");
  if (at == std::string::npos) return -1;
  const size_t space = r.body.find("} ", at);
  return std::stod(r.body.substr(space + 2, r.body.find('\n', space) - space - 2));
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A short chat request, as another user would send it: its latency in seconds.
double small_request_latency(uint16_t port) {
  const json body = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                     {"max_tokens", 8},
                     {"temperature", 0},
                     {"ignore_eos", true}};
  const auto t0 = Clock::now();
  const auto r = testing::post_json(port, "/v1/chat/completions", body);
  const double took = seconds_since(t0);
  EXPECT_EQ(r.status, 200) << r.body;
  return took;
}

TEST(SlowReaderSoakTest, TenStreamsThatNeverReadHoldBoundedMemoryAndEndAtTheWriteTimeout) {
  testing::ServeProcess serve(
      {"--threads", "2", "--access-log", "", "--write-timeout", std::to_string(kWriteTimeoutS)});
  const uint16_t port = serve.port();
  for (int i = 0; i < 3; ++i) (void)small_request_latency(port);  // warm-up
  std::vector<double> idle;
  for (int i = 0; i < 7; ++i) idle.push_back(small_request_latency(port));
  const double idle_latency = median(idle);
  const int64_t rss0 = rss_bytes(serve.pid());

  const json stream = {{"messages", {{{"role", "user"}, {"content", "Tell me a long story."}}}},
                       {"max_tokens", 1000},
                       {"n", kSamples},
                       {"logprobs", true},
                       {"top_logprobs", 20},
                       {"temperature", 1.0},
                       {"ignore_eos", true},
                       {"stream", true}};
  const auto t0 = Clock::now();
  std::vector<std::unique_ptr<Connection>> stalled;
  for (int i = 0; i < kStreams; ++i) {
    auto c = std::make_unique<Connection>(port, std::chrono::seconds(5));
    const int small = 4096;
    ASSERT_EQ(::setsockopt(c->fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    ASSERT_TRUE(c->send(request_text("POST", "/v1/chat/completions", stream.dump())));
    stalled.push_back(std::move(c));
  }
  // Every sample pauses.
  while (metric(port, "deepserve:num_requests_paused") < kStreams * kSamples && seconds_since(t0) < 30)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const double paused_after = seconds_since(t0);
  ASSERT_EQ(metric(port, "deepserve:num_requests_paused"), kStreams * kSamples);
  const double generated = metric(port, "deepserve:generation_tokens_total");

  int64_t rss_max = rss_bytes(serve.pid());
  std::vector<double> during;
  while (seconds_since(t0) < kWindowS) {
    rss_max = std::max(rss_max, rss_bytes(serve.pid()));
    during.push_back(small_request_latency(port));
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  }
  // The other clients' requests are all that was generated while the streams were held.
  const double generated_later = metric(port, "deepserve:generation_tokens_total");
  EXPECT_EQ(generated_later - generated, 8.0 * static_cast<double>(during.size()));
  EXPECT_GT(metric(port, "deepserve:kv_cache_usage_perc"), 0.0);  // held while paused
  const double during_latency = median(during);
  EXPECT_LE(during_latency, 2 * idle_latency);
  EXPECT_LT(rss_max - rss0, kRssBound);

  // The write timeout fires: every stream is aborted and its blocks freed.
  while ((metric(port, "deepserve:kv_cache_usage_perc") != 0.0 ||
          metric(port, "deepserve:num_requests_paused") != 0.0) &&
         seconds_since(t0) < kWriteTimeoutS + paused_after + 15)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const double freed_after = seconds_since(t0);
  EXPECT_EQ(metric(port, "deepserve:kv_cache_usage_perc"), 0.0);
  EXPECT_EQ(metric(port, "deepserve:num_requests_paused"), 0.0);
  EXPECT_GE(freed_after, kWriteTimeoutS);
  // Their connections are gone too: the one left open is the probe's own. One reading per probe, because the
  // previous probe's connection may not be reaped yet when the next one asks.
  const auto t_closed = Clock::now();
  double open = metric(port, "deepserve:num_http_connections");
  while (open > 1.0 && seconds_since(t_closed) < 10) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    open = metric(port, "deepserve:num_http_connections");
  }
  EXPECT_EQ(open, 1.0);
  std::printf(
      "[ slow readers ] paused after %.1f s with %.0f tokens generated; RSS %.1f -> max %.1f MiB (+%.1f); "
      "other clients' latency %.1f ms idle, %.1f ms median while held (%zu requests); KV freed at %.1f s\n",
      paused_after, generated, static_cast<double>(rss0) / (1 << 20),
      static_cast<double>(rss_max) / (1 << 20), static_cast<double>(rss_max - rss0) / (1 << 20),
      idle_latency * 1000, during_latency * 1000, during.size(), freed_after);
}

}  // namespace
}  // namespace ds::server
