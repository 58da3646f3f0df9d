// The HTTP layer alone (no model), as a hostile client sees it (RELIABILITY.md "Connections and load"):
// framing per RFC 9112, HEAD, idle connections (making room, keep-alive timeout, requests without
// credentials) and backpressure for a client that stops reading.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <atomic>
#include <thread>

#include "server/http_server.h"
#include "server_harness.h"

namespace ds::server {
namespace {

using testing::Connection;
using testing::request_text;
using testing::wait_for;
using Clock = std::chrono::steady_clock;

class HttpConnectionsTest : public ::testing::Test {
 protected:
  void start(HttpServerConfig config = {}, bool with_auth = false) {
    config.host = "127.0.0.1";
    config.port = 0;
    server_ = std::make_unique<HttpServer>(config);
    server_->post("/echo", [this](const std::shared_ptr<Exchange>& ex) {
      ++handled_;
      ex->reply(200, ex->request().body, "text/plain");
    });
    server_->get(
        "/health", [](const std::shared_ptr<Exchange>& ex) { ex->reply(200, "ok", "text/plain"); }, false);
    server_->get("/who",
                 [](const std::shared_ptr<Exchange>& ex) { ex->reply(200, ex->user(), "text/plain"); });
    server_->get("/events", [](const std::shared_ptr<Exchange>& ex) {
      ex->start_events();
      ex->send_event("{\"n\":1}");
      ex->end_events();
    });
    // Events of 1 KiB for as long as the client takes them; stops while backlogged.
    server_->get("/firehose", [this](const std::shared_ptr<Exchange>& ex) {
      ex->start_events();
      ex->on_disconnect([this] { ++disconnects_; });
      pump(ex);
    });
    if (with_auth) {
      server_->set_authenticator([](std::string_view authorization) {
        AuthResult r;
        if (authorization == "Bearer right") r.user = "alice";
        return r;
      });
    }
    server_->start();
    port_ = server_->port();
  }
  void pump(const std::shared_ptr<Exchange>& ex) {
    const std::string event(1024, 'x');
    while (!ex->backlogged() && !ex->disconnected()) {
      ex->send_event(event);
      produced_ += static_cast<int64_t>(event.size());
    }
    ++pauses_;
    ex->on_writable([this, ex] { pump(ex); });
  }
  void TearDown() override {
    if (server_) server_->stop();
  }

  std::unique_ptr<HttpServer> server_;
  uint16_t port_ = 0;
  std::atomic<int> handled_{0};
  std::atomic<int> disconnects_{0};
  std::atomic<int64_t> produced_{0};
  std::atomic<int> pauses_{0};
};

// ---- Framing (RFC 9112 section 6). ----

class TransferEncodingTest : public HttpConnectionsTest, public ::testing::WithParamInterface<const char*> {};

// What would follow as the body is a whole request: Beast alone took "chunked, identity" as "no body" and
// answered it as a second request (request smuggling behind a proxy that reads the body).
TEST_P(TransferEncodingTest, IsA400AndTheBodyIsNeverReadAsARequest) {
  start();
  Connection c(port_);
  const std::string smuggled = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_TRUE(c.send(std::string("POST /echo HTTP/1.1\r\nHost: x\r\n") + GetParam() + "\r\n\r\n" + smuggled));
  const auto r = c.read_reply();
  ASSERT_EQ(r.status, 400);
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_EQ(r.json()["error"]["type"], "invalid_request_error");
  EXPECT_EQ(r.json()["error"]["code"], "bad_transfer_encoding");
  EXPECT_EQ(r.json()["error"]["param"], nullptr);
  EXPECT_TRUE(c.closed_by_peer(std::chrono::seconds(3)));
  EXPECT_EQ(c.read_until("HTTP/1.1").find("HTTP/1.1"), std::string::npos) << "a second answer came";
  EXPECT_EQ(handled_, 0);
}

INSTANTIATE_TEST_SUITE_P(NotOneChunked, TransferEncodingTest,
                         ::testing::Values("Transfer-Encoding: chunked, identity", "Transfer-Encoding: gzip",
                                           "Transfer-Encoding: identity",
                                           "Transfer-Encoding: chunked, chunked",
                                           "Transfer-Encoding: gzip, chunked",
                                           "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked",
                                           "Transfer-Encoding: gzip\r\nContent-Length: 5"));

TEST_F(HttpConnectionsTest, TransferEncodingMessageNamesTheCodings) {
  start();
  Connection c(port_);
  c.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n");
  const auto r = c.read_reply();
  EXPECT_EQ(
      r.body,
      "{\"error\":{\"code\":\"bad_transfer_encoding\",\"message\":\"Transfer-Encoding 'chunked, identity' is "
      "not supported: this server accepts only 'chunked', once and as the only coding\",\"param\":null,"
      "\"type\":\"invalid_request_error\"}}");
}

TEST_F(HttpConnectionsTest, OneChunkedCodingIsRead) {
  start();
  Connection c(port_);
  c.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
  const auto r = c.read_reply();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello");
  EXPECT_EQ(handled_, 1);
}

// ---- HEAD. ----

// The answer GET would give, headers only: the bytes right after the header are the next answer's.
TEST_F(HttpConnectionsTest, HeadAnswersWithTheHeadersOfGetAndNoBody) {
  start({}, /*with_auth=*/true);
  Connection c(port_);
  c.send(request_text("HEAD", "/health", "", {}, true) + request_text("HEAD", "/who", "", {}, true) +
         request_text("HEAD", "/events", "", {"Authorization: Bearer right"}, true) +
         request_text("GET", "/health", "", {}, false));
  (void)c.read_until_count("HTTP/1.1 ", 4);
  const std::string all = c.read_until("(read until the server closes)");
  std::vector<std::string> answers;
  for (size_t pos = all.find("HTTP/1.1 "); pos != std::string::npos;) {
    const size_t next = all.find("HTTP/1.1 ", pos + 1);
    answers.push_back(all.substr(pos, next == std::string::npos ? std::string::npos : next - pos));
    pos = next;
  }
  ASSERT_EQ(answers.size(), 4u) << all;
  // Open route: 200, no credentials needed, Content-Length of GET's body ("ok"), nothing after the header.
  EXPECT_EQ(answers[0].rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << answers[0];
  EXPECT_NE(answers[0].find("Content-Length: 2\r\n"), std::string::npos) << answers[0];
  EXPECT_EQ(answers[0].size(), answers[0].find("\r\n\r\n") + 4) << answers[0];
  // An authenticated route without credentials: 401, still no body.
  EXPECT_EQ(answers[1].rfind("HTTP/1.1 401 Unauthorized\r\n", 0), 0u) << answers[1];
  EXPECT_EQ(answers[1].size(), answers[1].find("\r\n\r\n") + 4) << answers[1];
  // Server-sent events: the headers, not one event.
  EXPECT_EQ(answers[2].rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << answers[2];
  EXPECT_NE(answers[2].find("Content-Type: text/event-stream\r\n"), std::string::npos) << answers[2];
  EXPECT_EQ(answers[2].size(), answers[2].find("\r\n\r\n") + 4) << answers[2];
  // GET after it: the body.
  EXPECT_EQ(answers[3].substr(answers[3].find("\r\n\r\n") + 4), "ok");
}

// ---- Idle connections. ----

TEST_F(HttpConnectionsTest, AtTheCapTheLongestIdleConnectionMakesRoom) {
  HttpServerConfig config;
  config.max_connections = 2;
  config.extra_connections = 0;
  start(config);
  Connection a(port_);
  ASSERT_TRUE(wait_for([&] { return server_->num_idle_connections() == 1; }));
  Connection b(port_);
  ASSERT_TRUE(wait_for([&] { return server_->num_idle_connections() == 2; }));
  // A third connection is served in full; a (idle the longest) was closed for it, b was not.
  const auto r = testing::http(port_, "POST", "/echo", "in");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "in");
  EXPECT_TRUE(a.closed_by_peer(std::chrono::seconds(2)));
  ASSERT_TRUE(b.send(request_text("POST", "/echo", "b")));
  EXPECT_EQ(b.read_reply().body, "b");
}

TEST_F(HttpConnectionsTest, IdleKeepAliveConnectionIsClosedAfterTheKeepAliveTimeout) {
  HttpServerConfig config;
  config.keep_alive_timeout = std::chrono::milliseconds(200);
  start(config);
  Connection c(port_);
  ASSERT_TRUE(c.send(request_text("POST", "/echo", "1", {}, true)));
  EXPECT_EQ(c.read_reply().header("connection"), "keep-alive");
  const auto t0 = Clock::now();
  EXPECT_TRUE(c.closed_by_peer(std::chrono::seconds(2)));
  const double idle = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_GT(idle, 0.15);
  EXPECT_LT(idle, 1.0);  // not the 10 s header timeout
}

TEST_F(HttpConnectionsTest, RequestsWithoutCredentialsPerConnectionAreBounded) {
  HttpServerConfig config;
  config.max_requests_without_credentials = 3;
  start(config, /*with_auth=*/true);
  Connection anonymous(port_);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(anonymous.send(request_text("GET", i == 2 ? "/who" : "/health", "", {}, true)));
    const auto r = anonymous.read_reply();
    EXPECT_EQ(r.status, i == 2 ? 401 : 200);
    EXPECT_EQ(r.header("connection"), i < 3 ? "keep-alive" : "close") << "request " << i;
  }
  EXPECT_TRUE(anonymous.closed_by_peer(std::chrono::seconds(2)));
  // With credentials there is no such bound.
  Connection alice(port_);
  for (int i = 1; i <= 6; ++i) {
    ASSERT_TRUE(alice.send(request_text("GET", "/who", "", {"Authorization: Bearer right"}, true)));
    const auto r = alice.read_reply();
    EXPECT_EQ(r.body, "alice");
    EXPECT_EQ(r.header("connection"), "keep-alive") << "request " << i;
  }
}

// ---- Backpressure. ----

// A client that stops reading: production stops once max_pending_bytes are queued (plus what the kernel's
// socket buffers took), and the stalled write ends the connection after write_timeout.
TEST_F(HttpConnectionsTest, ClientThatStopsReadingPausesTheProducerThenTimesOut) {
  HttpServerConfig config;
  config.max_pending_bytes = 64 * 1024;
  config.write_timeout = std::chrono::milliseconds(600);
  start(config);
  Connection c(port_);
  const int small = 4096;
  ASSERT_EQ(::setsockopt(c.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  ASSERT_TRUE(c.send(request_text("GET", "/firehose", "", {}, true)));
  ASSERT_TRUE(wait_for([&] { return pauses_ > 0; }, std::chrono::seconds(5)));
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  const int64_t held = produced_;
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(produced_, held) << "the producer went on while nobody read";
  // The kernel's buffers on both ends (a few MB at most on loopback) plus the 64 KiB queue.
  EXPECT_LT(held, 16 << 20);
  const auto t0 = Clock::now();
  ASSERT_TRUE(wait_for([&] { return disconnects_ == 1; }, std::chrono::seconds(5)));
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 1.5);
  EXPECT_TRUE(wait_for([&] { return server_->num_connections() == 0; }));
}

// A client that reads, slowly: the producer is resumed each time the queue drains, and everything arrives.
TEST_F(HttpConnectionsTest, SlowReaderGetsEverythingAsItDrains) {
  HttpServerConfig config;
  config.host = "127.0.0.1";
  config.port = 0;
  config.max_pending_bytes = 16 * 1024;
  server_ = std::make_unique<HttpServer>(config);
  auto sent = std::make_shared<std::atomic<int>>(0);
  auto waits = std::make_shared<std::atomic<int>>(0);
  std::function<void(std::shared_ptr<Exchange>)> pump_some = [sent, waits,
                                                              &pump_some](std::shared_ptr<Exchange> ex) {
    while (!ex->backlogged() && *sent < 2000) {
      ex->send_event(std::string(512, 'a' + static_cast<char>(*sent % 26)));
      ++*sent;
    }
    if (*sent == 2000) return ex->end_events();
    ++*waits;
    ex->on_writable([ex, &pump_some] { pump_some(ex); });
  };
  server_->get("/some", [&](const std::shared_ptr<Exchange>& ex) {
    ex->start_events();
    pump_some(ex);
  });
  server_->start();
  Connection c(server_->port());
  ASSERT_TRUE(c.send(request_text("GET", "/some", "")));
  const auto r = c.read_reply();
  ASSERT_EQ(r.status, 200);
  const auto events = r.body.size();
  EXPECT_EQ(events, 2000u * (6 + 512 + 2) + std::string("data: [DONE]\n\n").size());
  EXPECT_EQ(*sent, 2000);
  EXPECT_GE(*waits, 1000 * 520 / (16 * 1024));  // 1 MB through a 16 KiB queue: it waited, again and again
}

}  // namespace
}  // namespace ds::server
