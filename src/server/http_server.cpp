#include "server/http_server.h"

#include <spdlog/spdlog.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <nlohmann/json.hpp>

#include <mutex>
#include <thread>
#include <unordered_map>

#include "server/http_session.h"
#include "server/tls.h"
#include "util/check.h"

namespace ds::server {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;

}  // namespace

namespace detail {

void IdleConnections::mark_idle(const std::shared_ptr<SessionHandle>& session) {
  std::lock_guard lock(mutex_);
  if (session->idle_) idle_.erase(session->idle_pos_);
  session->idle_pos_ = idle_.insert(idle_.end(), session);
  session->idle_ = true;
}

void IdleConnections::mark_busy(SessionHandle& session) {
  std::lock_guard lock(mutex_);
  if (!session.idle_) return;
  idle_.erase(session.idle_pos_);
  session.idle_ = false;
}

bool IdleConnections::evict_oldest() {
  std::shared_ptr<SessionHandle> oldest;
  {
    std::lock_guard lock(mutex_);
    // An entry that cannot be locked belongs to a session being destroyed: its destructor erases it.
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
      oldest = it->lock();
      if (!oldest) continue;
      oldest->idle_ = false;
      idle_.erase(it);
      break;
    }
  }
  if (!oldest) return false;
  oldest->evict();
  return true;
}

size_t IdleConnections::size() const {
  std::lock_guard lock(mutex_);
  return idle_.size();
}

}  // namespace detail

std::string_view HttpRequest::header(std::string_view name) const {
  for (const auto& [key, value] : headers)
    if (detail::iequals(key, name)) return value;
  return {};
}

void Exchange::reply_json(int status, const nlohmann::json& body, const Headers& headers) {
  reply(status, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), "application/json",
        headers);
}

void Exchange::reply_error(const ErrorReply& error) {
  Headers headers;
  if (error.retry_after_s) headers.emplace_back("Retry-After", std::to_string(*error.retry_after_s));
  if (error.status == 401) headers.emplace_back("WWW-Authenticate", "Bearer");
  reply_json(error.status, error.body(), headers);
}

class HttpServer::Impl {
 public:
  explicit Impl(HttpServerConfig config) : acceptor_(ioc_) { shared_->config = std::move(config); }

  void start() {
    const auto& c = shared_->config;
    DS_REQUIRE(c.io_threads >= 1, InvalidArgument, "the server needs at least one I/O thread");
    if (c.tls) shared_->tls_context = make_tls_context(*c.tls);
    boost::system::error_code ec;
    tcp::resolver resolver(ioc_);
    const auto results = resolver.resolve(c.host, std::to_string(c.port), ec);
    DS_REQUIRE(!ec && !results.empty(), UserError, "cannot resolve --host {}: {}", c.host, ec.message());
    const tcp::endpoint endpoint = results.begin()->endpoint();
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    DS_REQUIRE(!ec, UserError, "cannot listen on {}:{}: {}", c.host, c.port, ec.message());
    port_ = acceptor_.local_endpoint().port();
    accept();
    for (int i = 0; i < c.io_threads; ++i) threads_.emplace_back([this] { ioc_.run(); });
  }

  void stop() {
    if (stopped_) return;
    stopped_ = true;
    net::post(ioc_, [this] {
      boost::system::error_code ec;
      acceptor_.close(ec);
    });
    work_.reset();
    ioc_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    // Break the session <-> exchange <-> handler cycles so that every session is freed with the io_context.
    std::lock_guard lock(sessions_mutex_);
    for (auto& [ptr, weak] : sessions_)
      if (auto s = weak.lock()) s->close_now();
    sessions_.clear();
  }

  void accept() {
    acceptor_.async_accept(net::make_strand(ioc_), [this](boost::system::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
      if (ec) {
        // Out of file descriptors and the like: wait a moment instead of spinning.
        spdlog::warn("accept failed: {}", ec.message());
        auto timer = std::make_shared<net::steady_timer>(ioc_, std::chrono::milliseconds(50));
        timer->async_wait([this, timer](boost::system::error_code) { accept(); });
        return;
      }
      int64_t count = ++shared_->connections;
      const auto& c = shared_->config;
      // At the cap, a connection that waits for a request makes room (the one idle the longest, which gives
      // its slot back at once): idle connections, however many are opened, never keep a new one (a liveness
      // probe) out. Only busy ones do.
      if (count > c.max_connections && shared_->idle.evict_oldest()) count = shared_->connections.load();
      if (count > c.max_connections + c.extra_connections) {
        --shared_->connections;
        boost::system::error_code ignored;
        socket.close(ignored);
      } else {
        remember(detail::start_session(std::move(socket), shared_, count > c.max_connections));
      }
      accept();
    });
  }

  void remember(const std::shared_ptr<detail::SessionHandle>& session) {
    std::lock_guard lock(sessions_mutex_);
    if (++sessions_added_ % 256 == 0) {
      for (auto it = sessions_.begin(); it != sessions_.end();)
        it = it->second.expired() ? sessions_.erase(it) : ++it;
    }
    sessions_[session.get()] = session;
  }

  std::shared_ptr<detail::ServerState> shared_ = std::make_shared<detail::ServerState>();
  net::io_context ioc_;
  net::executor_work_guard<net::io_context::executor_type> work_ = net::make_work_guard(ioc_);
  tcp::acceptor acceptor_;
  std::vector<std::thread> threads_;
  uint16_t port_ = 0;
  bool stopped_ = false;
  std::mutex sessions_mutex_;
  std::unordered_map<detail::SessionHandle*, std::weak_ptr<detail::SessionHandle>> sessions_;
  uint64_t sessions_added_ = 0;
};

HttpServer::HttpServer(HttpServerConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}

HttpServer::~HttpServer() {
  stop();
}

void HttpServer::add_route(std::string method, std::string path, Handler handler, bool authenticated) {
  impl_->shared_->routes.push_back({std::move(method), std::move(path), std::move(handler), authenticated});
}

void HttpServer::set_authenticator(Authenticator authenticator) {
  impl_->shared_->authenticator = std::move(authenticator);
}

void HttpServer::set_completion_hook(std::function<void(const ExchangeSummary&)> hook) {
  impl_->shared_->hook = std::move(hook);
}

void HttpServer::start() {
  impl_->start();
}
void HttpServer::reload_tls() {
  auto& shared = *impl_->shared_;
  if (!shared.config.tls) return;
  auto context = make_tls_context(*shared.config.tls);  // throws: the old context stays
  std::lock_guard lock(shared.tls_mutex);
  shared.tls_context = std::move(context);
}
bool HttpServer::tls() const {
  return impl_->shared_->config.tls.has_value();
}
uint16_t HttpServer::port() const {
  return impl_->port_;
}
void HttpServer::stop() {
  impl_->stop();
}
int64_t HttpServer::num_connections() const {
  return impl_->shared_->connections.load();
}
int64_t HttpServer::num_idle_connections() const {
  return static_cast<int64_t>(impl_->shared_->idle.size());
}
int64_t HttpServer::num_answering() const {
  return impl_->shared_->answering.load();
}

}  // namespace ds::server
