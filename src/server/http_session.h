// Internal to the HTTP server: one connection's session (reading requests within the limits, routing, writing
// answers and server-sent events, noticing a client that leaves) and the state the sessions share.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "server/http_protocol.h"
#include "server/http_server.h"

namespace ds::server::detail {

struct RouteEntry {
  std::string method;
  std::string path;
  Handler handler;
  bool authenticated = true;
};

class SessionHandle;

// The connections waiting for a request (new ones, and keep-alive ones between requests), the longest-waiting
// first: the ones to close when a new connection needs room. Any thread.
class IdleConnections {
 public:
  // To the end of the list (again); `session` must stay alive until mark_busy or its eviction.
  void mark_idle(const std::shared_ptr<SessionHandle>& session);
  void mark_busy(SessionHandle& session);
  // Takes the connection idle the longest off the list and evicts it (SessionHandle::evict); false when none
  // is idle.
  bool evict_oldest();
  [[nodiscard]] size_t size() const;

 private:
  mutable std::mutex mutex_;
  std::list<std::weak_ptr<SessionHandle>> idle_;
};

struct ServerState {
  HttpServerConfig config;
  std::vector<RouteEntry> routes;
  Authenticator authenticator;
  std::function<void(const ExchangeSummary&)> hook;
  std::atomic<int64_t> connections{0};  // accepted and holding a slot (an evicted one gives its slot back)
  std::atomic<int64_t> answering{0};    // requests handed to a handler and not yet answered
  IdleConnections idle;
  // TLS: the context new connections get (a reload swaps it; a session keeps the one it started with).
  mutable std::mutex tls_mutex;
  std::shared_ptr<boost::asio::ssl::context> tls_context;  // nullptr: plain HTTP
};

// A session as the server sees it: started once, closed at once when the server stops.
class SessionHandle {
 public:
  virtual ~SessionHandle() = default;
  // Closes the socket and drops the handler's callbacks (the server is stopping; io threads are joined).
  virtual void close_now() = 0;
  // Any thread: chosen to make room while it was idle. Gives its connection slot back at once and closes on
  // its strand (after the answer, if a request arrived meanwhile).
  virtual void evict() = 0;

 private:
  friend class IdleConnections;
  // Guarded by IdleConnections' mutex.
  bool idle_ = false;
  std::list<std::weak_ptr<SessionHandle>>::iterator idle_pos_;
};

// Serves an accepted connection until it closes (TLS when the state has a context: the handshake first).
// `limited`: past --max-connections, only /health is answered.
[[nodiscard]] std::shared_ptr<SessionHandle> start_session(boost::asio::ip::tcp::socket socket,
                                                           std::shared_ptr<ServerState> state, bool limited);

}  // namespace ds::server::detail
