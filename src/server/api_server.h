// The OpenAI-compatible server: the route table over an Engine, authentication, /metrics, the access log,
// and the shutdown sequence (SIGTERM).
//
// Routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, POST /tokenize, POST /detokenize,
// GET /metrics (authenticated), GET /health and GET /version (open).
//
// Auth: API keys and JWTs (auth.h), reloaded with reload() (SIGHUP) along with the TLS certificate; requests
// in flight and open connections are not disturbed. --max-requests-per-user: generation requests in flight
// per user, 429 + Retry-After past it.
//
// Shutdown (drain): /health answers 503 and new generation requests 503 with Retry-After at once; requests in
// flight get `timeout` to finish; those still running then end with finish_reason "abort".
#pragma once

#include <chrono>
#include <memory>

#include "server/access_log.h"
#include "server/api_context.h"
#include "server/auth.h"
#include "server/gpu_metrics.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/user_limits.h"

namespace ds::server {

class ApiServer {
 public:
  // The engine (started by the caller) and the tokenizer (nullptr: token ids only) must outlive the server.
  ApiServer(Engine& engine, const tokenizer::Tokenizer* tokenizer, ChatRenderer chat_renderer, ApiConfig api,
            HttpServerConfig http);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Empty keys: no authentication. Call before start().
  void set_api_keys(ApiKeys keys);
  // API keys and/or JWT (nullptr or !enabled(): no authentication). Call before start().
  void set_auth(std::shared_ptr<Auth> auth);
  // Generation requests (completions, chat) in flight per user; 0: unlimited. Call before start().
  void set_max_requests_per_user(int64_t max);
  // SIGHUP: re-reads the API key file, the JWKS and the TLS certificate and key. What fails keeps its old
  // contents and is logged; returns true when everything reloaded.
  bool reload();
  // nullptr: no access log. It must outlive the server.
  void set_access_log(AccessLog* log) { access_log_ = log; }
  // GPU metrics in /metrics from this monitor (nullptr: none). It must outlive the server.
  void set_gpu_monitor(const GpuMonitor* monitor) { gpu_monitor_ = monitor; }

  void start();
  [[nodiscard]] uint16_t port() const { return http_.port(); }

  // /health 503 and new requests 503 from now on.
  void begin_drain();
  // begin_drain, then waits up to `timeout` for the requests in flight, aborts the rest and waits (a few
  // seconds at most) for their answers to go out. Returns the number of requests that had to be aborted.
  size_t drain(std::chrono::milliseconds timeout);
  void stop();  // closes every connection

  [[nodiscard]] bool draining() const { return api_.draining.load(); }
  [[nodiscard]] size_t num_requests_in_flight() const { return api_.jobs.size(); }
  [[nodiscard]] int64_t num_connections() const { return http_.num_connections(); }
  // HTTP requests handed to a route and not yet fully written out.
  [[nodiscard]] int64_t num_answering() const { return http_.num_answering(); }

 private:
  void add_routes();
  // Runs `handler`, answering whatever it throws with the error reply. `generation`: counted against
  // --max-requests-per-user while it runs.
  Handler wrap(void (*handler)(ApiContext&, const std::shared_ptr<Exchange>&), bool generation = false);

  ApiContext api_;
  HttpServer http_;
  std::shared_ptr<Auth> auth_;
  std::shared_ptr<UserLimiter> limiter_ = std::make_shared<UserLimiter>(0);
  UserCounters users_;
  AccessLog* access_log_ = nullptr;
  const GpuMonitor* gpu_monitor_ = nullptr;
  HttpCounters counters_;
  const int64_t started_ = 0;
};

}  // namespace ds::server
