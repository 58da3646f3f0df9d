// An asynchronous HTTP/1.1 server (Boost.Beast) with a route table, in the manner of llama.cpp's server:
// post("/v1/completions", handler). The limits a public endpoint needs are enforced here, before a handler
// ever runs: header size (431), body size (413, decided from Content-Length before the body is read; a
// chunked body is cut off at the limit), framing per RFC 9112 (a Transfer-Encoding other than one `chunked`
// is a 400 and the connection closes: never a body read as the next request), header and body read timeouts
// (slowloris), and a connection cap. Authentication is decided by the route, never by a URL prefix; with an
// authenticator set, a path no route has needs credentials too (401 before 404). With TLS (config.tls) every
// connection starts with a handshake within header_timeout; the limits are the same. HEAD is answered by the
// GET route of the path, with its headers and no body.
//
// Connection floods: a connection waiting for a request (new, or idle between keep-alive requests) holds no
// work, so at max_connections the one idle the longest is closed to make room for a new one; only when every
// connection is busy do new ones get the limited treatment (only /health) and, past extra_connections, a
// close at accept. Idle keep-alive connections close after keep_alive_timeout, and a connection whose
// requests carry no credentials (with an authenticator set) closes after max_requests_without_credentials.
//
// Backpressure: an answer's bytes not yet written to the client are counted; at max_pending_bytes the
// exchange is backlogged() and a producer waits for on_writable() (GenerationJob pauses its engine request).
// A write that makes no progress for write_timeout closes the connection, which runs on_disconnect.
//
// A handler gets an Exchange and answers through it, now or later: reply() once, or start_events() then
// send_event()... end_events() for server-sent events. Every Exchange method must run on the exchange's own
// strand: inside the handler, or inside a function given to post(), which any thread may call. When the
// client goes away before the answer is complete, on_disconnect's callback runs (once, on the strand).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/errors.h"

namespace ds::server {

// TLS (--ssl-certfile, --ssl-keyfile, --ssl-min-version): PEM files, read at start and on reload_tls().
struct TlsConfig {
  std::string certfile;  // the certificate chain, leaf first
  std::string keyfile;
  int min_version = 13;  // 13: TLS 1.3 only; 12: TLS 1.2 and 1.3
};

struct HttpServerConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 8000;  // 0: any free port (see HttpServer::port)
  int io_threads = 2;
  uint64_t max_request_bytes = 16ull << 20;
  uint32_t max_header_bytes = 16 * 1024;
  // The first request's header must arrive within header_timeout of the connection opening, the whole body
  // within body_timeout of the header. Between keep-alive requests a connection may be idle for
  // keep_alive_timeout; a header begun then must be complete within header_timeout of it.
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds body_timeout{30'000};
  std::chrono::milliseconds keep_alive_timeout{5'000};
  // A write to a client that stopped reading fails after this long without completing; the connection is
  // closed and the request aborted.
  std::chrono::milliseconds write_timeout{30'000};
  // Bytes of one answer queued for a client and not yet written before the exchange is backlogged().
  uint64_t max_pending_bytes = 1ull << 20;
  int64_t max_connections = 1024;
  // With every one of max_connections busy (none idle to close), this many more connections are accepted to
  // answer /health (and 503 to the rest); beyond that a connection is closed at accept.
  int64_t extra_connections = 64;
  // With an authenticator set: requests one connection may make without valid credentials (open routes,
  // 401s) before it is closed, so that an anonymous client cannot keep a connection for free.
  int64_t max_requests_without_credentials = 8;
  // TLS when set: every connection starts with a handshake, which must end within header_timeout.
  std::optional<TlsConfig> tls;
};

using Headers = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;
  std::string target;  // as sent: path and query
  std::string path;
  std::string query;
  Headers headers;
  std::string body;
  std::string remote;  // address:port of the client

  // The first header of that name (case-insensitive), or empty.
  [[nodiscard]] std::string_view header(std::string_view name) const;
};

// What the completion hook (access log, metrics) learns about each answered request.
struct ExchangeSummary {
  std::string request_id;
  std::string user;
  std::string method;
  std::string route;  // the route's pattern, or "unknown"
  std::string remote;
  int status = 0;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double latency_s = 0.0;
  bool client_disconnected = false;
  // --log-requests: what the route chose to log about the request (prompt, sampling params); else null.
  std::shared_ptr<const nlohmann::json> request_details;
};

class Exchange {
 public:
  virtual ~Exchange() = default;
  [[nodiscard]] virtual const HttpRequest& request() const = 0;
  [[nodiscard]] virtual const std::string& request_id() const = 0;
  [[nodiscard]] virtual const std::string& user() const = 0;

  // A complete answer. Later calls (and calls after the client left) do nothing.
  virtual void reply(int status, std::string body, std::string content_type, const Headers& headers = {}) = 0;
  void reply_json(int status, const nlohmann::json& body, const Headers& headers = {});
  void reply_error(const ErrorReply& error);

  // Server-sent events: 200 with text/event-stream, chunked; each event is "data: <data>\n\n".
  virtual void start_events() = 0;
  virtual void send_event(std::string_view data) = 0;
  // "data: [DONE]" and the end of the answer.
  virtual void end_events() = 0;
  [[nodiscard]] virtual bool events_started() const = 0;

  // Backpressure: true while the bytes queued for the client and not yet written are at max_pending_bytes or
  // more. A producer then stops producing and waits for on_writable.
  [[nodiscard]] virtual bool backlogged() const = 0;
  // Runs `callback` once on the strand when the queued bytes have fallen to half of max_pending_bytes or less
  // (posted at once when they are there already). Dropped when the client leaves.
  virtual void on_writable(std::function<void()> callback) = 0;

  // Runs once on the strand if the client disconnects before the answer is complete.
  virtual void on_disconnect(std::function<void()> callback) = 0;
  [[nodiscard]] virtual bool disconnected() const = 0;
  // Any thread: run `fn` on this exchange's strand (dropped when the connection is already gone).
  virtual void post(std::function<void()> fn) = 0;
  // For the access log.
  virtual void set_tokens(int64_t prompt_tokens, int64_t completion_tokens) = 0;
  virtual void set_request_details(nlohmann::json details) = 0;
};

using Handler = std::function<void(const std::shared_ptr<Exchange>&)>;

// The user for an Authorization header value, or (user empty) why not: 401 with that message and code.
struct AuthResult {
  std::optional<std::string> user;
  std::string error;  // short and safe to send: never key material
  std::string code = "invalid_api_key";
};
using Authenticator = std::function<AuthResult(std::string_view authorization)>;

class HttpServer {
 public:
  explicit HttpServer(HttpServerConfig config);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Routes are matched on the exact path (the query string aside). `authenticated` routes need the
  // authenticator's approval when one is set. Add every route before start().
  void add_route(std::string method, std::string path, Handler handler, bool authenticated = true);
  void get(std::string path, Handler handler, bool authenticated = true) {
    add_route("GET", std::move(path), std::move(handler), authenticated);
  }
  void post(std::string path, Handler handler, bool authenticated = true) {
    add_route("POST", std::move(path), std::move(handler), authenticated);
  }
  void set_authenticator(Authenticator authenticator);
  void set_completion_hook(std::function<void(const ExchangeSummary&)> hook);

  // Binds and listens (throws UserError when the address cannot be bound, or when TLS is configured and its
  // certificate or key cannot be used), then serves on io_threads.
  void start();
  // Re-reads the TLS certificate and key: connections accepted from now on use them, open ones keep theirs.
  // Throws UserError (naming the file) and keeps the old ones when the new ones cannot be used. Does nothing
  // without TLS.
  void reload_tls();
  [[nodiscard]] bool tls() const;
  [[nodiscard]] uint16_t port() const;
  // Closes the listener and every connection and joins the threads. Idempotent.
  void stop();
  [[nodiscard]] int64_t num_connections() const;
  // Connections waiting for a request (new or between keep-alive requests).
  [[nodiscard]] int64_t num_idle_connections() const;
  // Requests handed to a handler whose answer has not been written out yet.
  [[nodiscard]] int64_t num_answering() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ds::server
