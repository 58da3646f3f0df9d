// Requests against the clock: a client that leaves aborts its request within one engine step, a full queue
// answers 503, and shutdown (the drain method, and SIGTERM to a real `deepserve serve`) lets short requests
// finish and ends the rest with finish_reason "abort".
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <future>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "server_harness.h"

extern char** environ;

namespace ds::server {
namespace {

using nlohmann::json;
using testing::Connection;
using testing::request_text;
using testing::wait_for;

json long_request(bool stream, int max_tokens = 200) {
  return {{"prompt", {1, 2, 3, 4}},
          {"max_tokens", max_tokens},
          {"temperature", 0},
          {"ignore_eos", true},
          {"stream", stream}};
}

int64_t finished(const EngineStats& s, const char* reason) {
  const auto it = s.finished.find(reason);
  return it == s.finished.end() ? 0 : it->second;
}

// The engine is stepped by the test, so "within one step" can be checked exactly.
class ManualEngineTest : public ::testing::TestWithParam<bool> {};

TEST_P(ManualEngineTest, ClosedConnectionFreesTheBlocksInTheNextStep) {
  const bool stream = GetParam();
  testing::HarnessOptions o;
  o.start_engine = false;
  testing::ServerHarness h(o);
  Engine& engine = h.engine();
  auto c = std::make_unique<Connection>(h.port());
  c->send(request_text("POST", "/v1/completions", long_request(stream).dump()));
  ASSERT_TRUE(wait_for([&] { return engine.has_work(); }));
  for (int i = 0; i < 3; ++i) (void)engine.step();
  if (stream) {
    EXPECT_NE(c->read_until("data: ").find("data: "), std::string::npos);
  }
  EngineStats s = engine.stats();
  ASSERT_EQ(s.num_running, 1);
  ASSERT_GT(s.kv_cache_usage, 0.0);
  ASSERT_EQ(s.generation_tokens, 3);

  c->close();
  // The server notices the closed socket and hands the abort to the engine...
  ASSERT_TRUE(wait_for([&] { return h.server().num_requests_in_flight() == 0; }));
  // ...which frees the request's blocks in the very next step.
  (void)engine.step();
  s = engine.stats();
  EXPECT_EQ(s.num_running, 0);
  EXPECT_EQ(s.num_waiting, 0);
  EXPECT_EQ(s.kv_cache_usage, 0.0);
  EXPECT_EQ(finished(s, "abort"), 1);
  EXPECT_EQ(s.generation_tokens, 3);
  engine.check_invariants();
}

INSTANTIATE_TEST_SUITE_P(StreamAndNot, ManualEngineTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Streamed" : "NotStreamed"; });

TEST(LifecycleTest, StreamsCancelledAtRandomMomentsLeaveNoKvBehind) {
  testing::ServerHarness h;
  std::atomic<int> cut{0};
  auto client = [&](unsigned seed) {
    std::mt19937 rng(seed);
    for (int i = 0; i < 50; ++i) {
      Connection c(h.port());
      c.send(request_text("POST", "/v1/completions", long_request(true, 120).dump()));
      // Leave after a random number of chunks (0: right after sending).
      const int chunks = std::uniform_int_distribution<int>(0, 30)(rng);
      if (chunks > 0) (void)c.read_until_count("\n\n", chunks);
      ++cut;
    }
  };
  std::vector<std::thread> clients;
  for (unsigned t = 0; t < 4; ++t) clients.emplace_back(client, 1000 + t);
  for (auto& t : clients) t.join();
  EXPECT_EQ(cut, 200);
  ASSERT_TRUE(h.wait_engine_idle(std::chrono::seconds(20)));
  const EngineStats s = h.engine().stats();
  EXPECT_EQ(s.kv_cache_usage, 0.0);
  EXPECT_GT(finished(s, "abort"), 0);
  EXPECT_EQ(h.server().num_requests_in_flight(), 0u);
  // The next request is served at once.
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = testing::post_json(h.port(), "/v1/completions", long_request(false, 4));
  EXPECT_EQ(r.status, 200);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
}

TEST(LifecycleTest, FullQueueIs503WithRetryAfterAndNIsAllOrNothing) {
  testing::HarnessOptions o;
  o.start_engine = false;  // nothing leaves the queue
  o.engine.max_queue_len = 3;
  testing::ServerHarness h(o);
  json first = long_request(true);
  first["n"] = 2;
  Connection a(h.port());
  a.send(request_text("POST", "/v1/completions", first.dump()));
  EXPECT_NE(a.read_until("\r\n\r\n").find("200 OK"), std::string::npos);
  // 2 queued + 2 more > 3: refused whole.
  auto r = testing::post_json(h.port(), "/v1/completions", first);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.json()["error"]["code"], "overloaded");
  EXPECT_EQ(r.header("retry-after"), "1");
  // One more sample still fits.
  Connection b(h.port());
  b.send(request_text("POST", "/v1/completions", long_request(true).dump()));
  EXPECT_NE(b.read_until("\r\n\r\n").find("200 OK"), std::string::npos);
  EXPECT_EQ(testing::post_json(h.port(), "/v1/completions", long_request(false)).status, 503);
  // /health is not affected by a full queue.
  EXPECT_EQ(testing::http(h.port(), "GET", "/health").status, 200);
}

TEST(LifecycleTest, ListOfPromptsIsAdmittedAllOrNothing) {
  testing::HarnessOptions o;
  o.start_engine = false;
  o.engine.max_queue_len = 4;
  testing::ServerHarness h(o);
  // One sample queued; then 2 prompts x 2 samples (4 <= 4: admissible on an idle server, so 503 and not 400):
  // the first prompt fits (1 + 2), the second does not (3 + 2 > 4), and the first is taken back.
  Connection first(h.port());
  first.send(request_text("POST", "/v1/completions", long_request(true, 4).dump()));
  EXPECT_NE(first.read_until("\r\n\r\n").find("200 OK"), std::string::npos);
  json two = long_request(false, 2);
  two["prompt"] = {{1, 2}, {3, 4}};
  two["n"] = 2;
  auto r = testing::post_json(h.port(), "/v1/completions", two);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.json()["error"]["code"], "overloaded");
  // The taken-back prompt leaves the engine in its next step: only the first request runs.
  (void)h.engine().step();
  EXPECT_EQ(h.engine().stats().num_running, 1);
  h.engine().start();
  EXPECT_NE(first.read_until("data: [DONE]").find("data: [DONE]"), std::string::npos);
  ASSERT_TRUE(h.wait_engine_idle());
  r = testing::post_json(h.port(), "/v1/completions", two);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.json()["choices"].size(), 4u);
}

TEST(LifecycleTest, DrainFinishesShortRequestsAndAbortsTheRest) {
  testing::HarnessOptions o;
  o.start_engine = false;
  testing::ServerHarness h(o);
  // A slow engine: one step every 5 ms.
  std::atomic<bool> stop{false};
  std::thread stepper([&] {
    while (!stop) {
      (void)h.engine().step();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  Connection long_stream(h.port());
  long_stream.send(request_text("POST", "/v1/completions", long_request(true, 200).dump()));
  EXPECT_NE(long_stream.read_until("data: ").find("data: "), std::string::npos);
  auto short_reply = std::async(std::launch::async, [&] {
    return testing::post_json(h.port(), "/v1/completions", long_request(false, 3));
  });
  ASSERT_TRUE(wait_for([&] { return h.server().num_requests_in_flight() == 2; }));

  auto drained =
      std::async(std::launch::async, [&] { return h.server().drain(std::chrono::milliseconds(400)); });
  ASSERT_TRUE(wait_for([&] { return h.server().draining(); }));
  auto health = testing::http(h.port(), "GET", "/health");
  EXPECT_EQ(health.status, 503);
  EXPECT_EQ(health.header("retry-after"), "1");
  const auto refused = testing::post_json(h.port(), "/v1/completions", long_request(false, 2));
  EXPECT_EQ(refused.status, 503);
  EXPECT_EQ(refused.json()["error"]["code"], "shutting_down");
  EXPECT_EQ(refused.header("retry-after"), "1");

  const auto short_done = short_reply.get();
  ASSERT_EQ(short_done.status, 200);
  EXPECT_EQ(short_done.json()["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(drained.get(), 1u);  // only the long one had to be aborted
  const auto rest = long_stream.read_until("data: [DONE]");
  EXPECT_NE(rest.find("\"finish_reason\":\"abort\""), std::string::npos);
  EXPECT_NE(rest.find("data: [DONE]"), std::string::npos);
  stop = true;
  stepper.join();
}

// A fault inside the engine (here: a KV cache shrunk behind its back, so a step fails its slot check, as a
// device fault would) kills the engine: a stream in flight ends with an error event and [DONE], a
// non-streamed request with a 500, both with a generic message (the check's file:line goes to the log only);
// from then on /health and new requests answer 503.
TEST(LifecycleTest, EngineFailureEndsEveryRequestAndMarksTheServerDead) {
  testing::HarnessOptions o;
  o.start_engine = false;
  testing::ServerHarness h(o);
  h.model().allocate_kv_cache(1, 16);  // the engine still believes it has 256 blocks
  json req = long_request(true, 40);
  req["prompt"] = std::vector<int>(20, 3);  // two blocks: one of them is past the shrunk cache
  Connection stream(h.port());
  stream.send(request_text("POST", "/v1/completions", req.dump(), {"X-Request-Id: streamed-1"}));
  req.erase("stream");
  Connection whole(h.port());
  whole.send(request_text("POST", "/v1/completions", req.dump(), {"X-Request-Id: whole-1"}));
  ASSERT_TRUE(wait_for([&] { return h.server().num_requests_in_flight() == 2; }));
  EXPECT_EQ(testing::http(h.port(), "GET", "/health").status, 200);
  h.engine().start();

  const auto streamed = stream.read_reply();
  ASSERT_EQ(streamed.status, 200);
  const auto events = testing::sse_events(streamed.body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  const json& error = events[events.size() - 2];
  ASSERT_TRUE(error.contains("error")) << error.dump();
  EXPECT_EQ(error["error"]["type"], "server_error");
  EXPECT_EQ(error["error"]["code"], "engine_error");
  EXPECT_EQ(error["error"]["message"], "internal error (request id streamed-1)");

  const auto answer = whole.read_reply();
  EXPECT_EQ(answer.status, 500);
  EXPECT_EQ(answer.json()["error"]["code"], "engine_error");
  EXPECT_EQ(answer.json()["error"]["message"], "internal error (request id whole-1)");
  EXPECT_EQ(answer.body.find(".cpp"), std::string::npos) << answer.body;

  ASSERT_TRUE(h.engine().dead());
  EXPECT_NE(h.engine().failure().find("check failed"), std::string::npos) << h.engine().failure();
  const auto health = testing::http(h.port(), "GET", "/health");
  EXPECT_EQ(health.status, 503);
  EXPECT_EQ(health.json()["error"]["code"], "engine_dead");
  const auto refused = testing::post_json(h.port(), "/v1/completions", long_request(false, 2));
  EXPECT_EQ(refused.status, 503);
  EXPECT_EQ(refused.json()["error"]["code"], "engine_dead");
  EXPECT_EQ(refused.header("retry-after"), "1");
  // A job leaves the registry just after its answer was handed to the connection.
  EXPECT_TRUE(wait_for([&] { return h.server().num_requests_in_flight() == 0; }));
  EXPECT_EQ(finished(h.engine().stats(), "error"), 2);
}

// Requests still in the engine's inbox when it fails end with an error too (fault injected at the first
// step, before the inbox is read), and submit() refuses new ones.
TEST(LifecycleTest, EngineFailureEndsQueuedRequestsToo) {
  testing::HarnessOptions o;
  o.start_engine = false;
  o.engine.fail_at_step = 1;
  testing::ServerHarness h(o);
  json req = long_request(false, 4);
  req["n"] = 3;
  Connection c(h.port());
  c.send(request_text("POST", "/v1/completions", req.dump()));
  ASSERT_TRUE(wait_for([&] { return h.engine().has_work(); }));
  h.engine().start();
  const auto r = c.read_reply();
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.json()["error"]["code"], "engine_error");
  EXPECT_TRUE(wait_for([&] { return h.engine().dead(); }));
  EXPECT_EQ(finished(h.engine().stats(), "error"), 3);
  EngineRequest again;
  again.prompt_ids = {1, 2};
  EXPECT_THROW((void)h.engine().submit(again), EngineDeadError);
}

// The real binary: after its engine fails it answers the requests in flight, then exits non-zero so that a
// supervisor restarts it.
TEST(LifecycleTest, ServeExitsNonZeroAfterTheEngineFails) {
  testing::ServeProcess serve({"--model", std::string(DS_FIXTURES_DIR) + "/deepseek_v2_tiny_bf16",
                               "--threads", "1", "--kv-cache-gib", "0.01"},
                              {"DEEPSERVE_TEST_FAIL_AT_STEP=5"});
  Connection stream(serve.port());
  stream.send(request_text("POST", "/v1/completions", long_request(true, 200).dump()));
  const auto reply = stream.read_reply();
  ASSERT_EQ(reply.status, 200);
  const auto events = testing::sse_events(reply.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(events[events.size() - 2]["error"]["code"], "engine_error");
  const auto code = serve.wait_exit(std::chrono::seconds(10));
  ASSERT_TRUE(code.has_value()) << "still running after its engine failed";
  EXPECT_EQ(*code, 1);
  const std::string log = serve.stderr_text();
  EXPECT_NE(log.find("the engine failed"), std::string::npos) << log;
  EXPECT_NE(log.find("injected engine fault at step 5"), std::string::npos) << log;
}

// SIGTERM to the real binary.
TEST(LifecycleTest, SigtermDrainsAndExitsZero) {
  const std::string log = ::testing::TempDir() + "deepserve_sigterm_" + std::to_string(::getpid()) + ".log";
  const std::string model = std::string(DS_FIXTURES_DIR) + "/deepseek_v2_tiny_bf16";
  std::vector<std::string> args = {DS_BINARY,
                                   "serve",
                                   "--model",
                                   model,
                                   "--port",
                                   "0",
                                   "--threads",
                                   "1",
                                   "--max-num-seqs",
                                   "1",
                                   "--shutdown-timeout",
                                   "0.2",
                                   "--access-log",
                                   "",
                                   "--kv-cache-gib",
                                   "0.01"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, DS_BINARY, &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);

  uint16_t port = 0;
  ASSERT_TRUE(wait_for(
      [&] {
        std::ifstream in(log);
        std::stringstream text;
        text << in.rdbuf();
        std::smatch m;
        const std::string s = text.str();
        if (!std::regex_search(s, m, std::regex("listening on http://127\\.0\\.0\\.1:(\\d+)"))) return false;
        port = static_cast<uint16_t>(std::stoi(m[1]));
        return true;
      },
      std::chrono::seconds(30)));

  // 8 samples of 250 tokens, one sequence per step: seconds of work, far more than --shutdown-timeout.
  json req = long_request(true, 250);
  req["n"] = 8;
  Connection stream(port);
  stream.send(request_text("POST", "/v1/completions", req.dump()));
  EXPECT_NE(stream.read_until("data: ").find("data: "), std::string::npos);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(pid, SIGTERM), 0);

  bool saw_health_503 = false;
  ASSERT_TRUE(wait_for([&] {
    try {
      saw_health_503 = testing::http(port, "GET", "/health").status == 503;
    } catch (const std::exception&) {
      return true;  // already gone
    }
    return saw_health_503;
  }));
  EXPECT_TRUE(saw_health_503);
  try {
    const auto refused = testing::post_json(port, "/v1/completions", long_request(false, 2));
    EXPECT_EQ(refused.status, 503);
    EXPECT_FALSE(refused.header("retry-after").empty());
  } catch (const std::exception&) {
    ADD_FAILURE() << "the server stopped listening before --shutdown-timeout";
  }

  const std::string rest = stream.read_until("data: [DONE]");
  int aborted = 0;
  for (size_t pos = 0; (pos = rest.find("\"finish_reason\":\"abort\"", pos)) != std::string::npos; ++pos)
    ++aborted;
  EXPECT_EQ(aborted, 8);
  EXPECT_NE(rest.find("data: [DONE]"), std::string::npos);

  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(took, 5.0);
  EXPECT_GE(took, 0.15);  // in-flight requests had their --shutdown-timeout
  std::remove(log.c_str());
}

}  // namespace
}  // namespace ds::server
