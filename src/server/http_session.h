// Internal to the HTTP server: one connection's session (reading requests within the limits, routing, writing
// answers and server-sent events, noticing a client that leaves) and the state the sessions share.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "server/http_server.h"

namespace ds::server::detail {

struct RouteEntry {
  std::string method;
  std::string path;
  Handler handler;
  bool authenticated = true;
};

struct ServerState {
  HttpServerConfig config;
  std::vector<RouteEntry> routes;
  Authenticator authenticator;
  std::function<void(const ExchangeSummary&)> hook;
  std::atomic<int64_t> connections{0};
  std::atomic<int64_t> answering{0};  // requests handed to a handler and not yet answered
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
};

// Serves an accepted connection until it closes (TLS when the state has a context: the handshake first).
// `limited`: past --max-connections, only /health is answered.
[[nodiscard]] std::shared_ptr<SessionHandle> start_session(boost::asio::ip::tcp::socket socket,
                                                           std::shared_ptr<ServerState> state, bool limited);

[[nodiscard]] bool iequals(std::string_view a, std::string_view b);

}  // namespace ds::server::detail
