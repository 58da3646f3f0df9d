// --max-requests-per-user: 429 + Retry-After for a user past the limit while other users go on; the count is
// given back however a request ends. The user label of /metrics stays bounded.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "server/user_limits.h"
#include "server_harness.h"

namespace ds::server {
namespace {

using nlohmann::json;
using testing::Connection;
using testing::request_text;
using testing::wait_for;

json request(bool stream, int max_tokens) {
  return {{"prompt", {1, 2, 3, 4}},
          {"max_tokens", max_tokens},
          {"temperature", 0},
          {"ignore_eos", true},
          {"stream", stream}};
}

TEST(UserLimiterTest, CountsPerUserAndReleasesOnce) {
  auto limiter = std::make_shared<UserLimiter>(2);
  auto a1 = limiter->try_acquire("a");
  auto a2 = limiter->try_acquire("a");
  ASSERT_TRUE(a1 && a2);
  EXPECT_EQ(limiter->try_acquire("a"), nullptr);
  auto b1 = limiter->try_acquire("b");
  EXPECT_NE(b1, nullptr);
  a1->release();
  a1->release();  // once only
  EXPECT_EQ(limiter->in_flight("a"), 1);
  a1.reset();  // the destructor does not release again
  EXPECT_EQ(limiter->in_flight("a"), 1);
  EXPECT_NE(limiter->try_acquire("a"), nullptr);  // taken and given back at once (a temporary)
  a2.reset();
  EXPECT_EQ(limiter->in_flight("a"), 0);
  auto unlimited = std::make_shared<UserLimiter>(0);
  std::vector<std::shared_ptr<UserLimiter::Slot>> many;
  for (int i = 0; i < 1000; ++i) many.push_back(unlimited->try_acquire("x"));
  EXPECT_NE(many.back(), nullptr);
}

TEST(UserCountersTest, AtMost64UsersAreLabelled) {
  UserCounters c;
  for (int round = 0; round < 2; ++round)
    for (int i = 0; i < 100; ++i) c.record("user-" + std::to_string(i));
  c.record("with \"quote\"\n");
  const auto snap = c.snapshot();
  EXPECT_EQ(snap.size(), 65u);  // 64 names + "other"
  EXPECT_EQ(snap.at("user-0"), 2);
  EXPECT_EQ(snap.at("other"), 36 * 2 + 1);
  const std::string text = c.render("tiny");
  EXPECT_NE(text.find("deepserve:requests_by_user_total{model_name=\"tiny\",user=\"user-0\"} 2\n"),
            std::string::npos);
  EXPECT_NE(text.find("user=\"other\"} 73\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE deepserve:requests_by_user_total counter"), std::string::npos);
}

TEST(PerUserLimitTest, ASecondRequestOfTheSameUserIs429AnotherUserGoesOn) {
  testing::HarnessOptions o;
  o.api_keys = {"alice-key", "bob-key"};  // users "user-ali" and "user-bob"
  o.max_requests_per_user = 1;
  o.start_engine = false;  // the test steps the engine: the first request is certainly in flight
  testing::ServerHarness h(o);
  const std::string alice = "Authorization: Bearer alice-key";
  const std::string bob = "Authorization: Bearer bob-key";

  auto first = std::make_unique<Connection>(h.port());
  first->send(request_text("POST", "/v1/completions", request(true, 50).dump(), {alice}));
  ASSERT_NE(first->read_until("\r\n\r\n").find("200 OK"), std::string::npos);

  const auto refused = testing::post_json(h.port(), "/v1/chat/completions",
                                          {{"messages", {{{"role", "user"}, {"content", "hi"}}}}}, {alice});
  EXPECT_EQ(refused.status, 429);
  EXPECT_EQ(refused.header("retry-after"), "1");
  EXPECT_EQ(refused.json()["error"]["code"], "rate_limit_exceeded");
  EXPECT_EQ(refused.json()["error"]["type"], "rate_limit_error");
  EXPECT_EQ(testing::post_json(h.port(), "/v1/completions", request(false, 1), {alice}).status, 429);
  // Other routes are not generation requests: not limited.
  EXPECT_EQ(testing::http(h.port(), "GET", "/v1/models", "", {alice}).status, 200);

  // Bob has his own count.
  Connection bobs(h.port());
  bobs.send(request_text("POST", "/v1/completions", request(true, 50).dump(), {bob}));
  EXPECT_NE(bobs.read_until("\r\n\r\n").find("200 OK"), std::string::npos);
  EXPECT_EQ(testing::post_json(h.port(), "/v1/completions", request(false, 1), {bob}).status, 429);

  // Alice leaves: her count is given back (no engine step needed).
  first->close();
  ASSERT_TRUE(wait_for([&] { return h.server().num_requests_in_flight() == 1; }));
  Connection again(h.port());
  again.send(request_text("POST", "/v1/completions", request(true, 3).dump(), {alice}));
  EXPECT_NE(again.read_until("\r\n\r\n").find("200 OK"), std::string::npos);

  // Finishing gives it back too; one request after another never meets its predecessor's count.
  std::atomic<bool> stop{false};
  std::thread stepper([&] {
    while (!stop) {
      if (h.engine().has_work()) {
        (void)h.engine().step();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    }
  });
  EXPECT_NE(again.read_until("data: [DONE]").find("data: [DONE]"), std::string::npos);
  for (int i = 0; i < 20; ++i) {
    const auto r = testing::post_json(h.port(), "/v1/completions", request(i % 2 == 0, 2), {alice});
    EXPECT_EQ(r.status, 200) << i << " " << r.body;
  }
  // Errors give it back as well.
  EXPECT_EQ(
      testing::post_json(h.port(), "/v1/completions", {{"prompt", "x"}, {"max_tokens", -1}}, {alice}).status,
      400);
  EXPECT_EQ(testing::post_json(h.port(), "/v1/completions", request(false, 1), {alice}).status, 200);
  EXPECT_NE(bobs.read_until("data: [DONE]").find("data: [DONE]"), std::string::npos);
  stop = true;
  stepper.join();

  // The user is a label of /metrics.
  const auto metrics = testing::http(h.port(), "GET", "/metrics", "", {bob});
  EXPECT_NE(metrics.body.find("deepserve:requests_by_user_total{model_name=\"tiny\",user=\"user-ali\"}"),
            std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find("user=\"user-bob\"}"), std::string::npos);
}

TEST(PerUserLimitTest, WithoutAuthEveryoneIsAnonymous) {
  testing::HarnessOptions o;
  o.max_requests_per_user = 1;
  o.start_engine = false;
  testing::ServerHarness h(o);
  Connection first(h.port());
  first.send(request_text("POST", "/v1/completions", request(true, 50).dump()));
  ASSERT_NE(first.read_until("\r\n\r\n").find("200 OK"), std::string::npos);
  const auto r = testing::post_json(h.port(), "/v1/completions", request(false, 1));
  EXPECT_EQ(r.status, 429);
  EXPECT_NE(r.json()["error"]["message"].get<std::string>().find("anonymous"), std::string::npos);
}

}  // namespace
}  // namespace ds::server
