#include "server/http_session.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <deque>
#include <type_traits>

#include "server/http_exchange.h"
#include "util/check.h"

namespace ds::server::detail {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using PlainStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
template <class Stream>
constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

template <class Stream>
class Session final : public std::enable_shared_from_this<Session<Stream>>, public SessionHandle {
 public:
  Session(tcp::socket socket, std::shared_ptr<ServerState> shared, bool limited,
          std::shared_ptr<net::ssl::context> tls)
      : tls_(std::move(tls)),
        stream_(make_stream(std::move(socket), tls_)),
        hangup_timer_(stream_.get_executor()),
        shared_ptr_(std::move(shared)),
        shared_(*shared_ptr_),
        limited_(limited) {
    beast::error_code ec;
    const auto endpoint = tcp_layer().socket().remote_endpoint(ec);
    if (!ec) remote_ = fmt::format("{}:{}", endpoint.address().to_string(), endpoint.port());
  }
  ~Session() {
    shared_.idle.mark_busy(*this);
    end_answering();
    release_slot();
  }

  void start() {
    // Until its first request arrives, a connection is idle: the first to close when room is needed.
    shared_.idle.mark_idle(this->shared_from_this());
    net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (kTls<Stream>) {
        self->handshake();
      } else {
        self->await_request(/*first=*/true);
      }
    });
  }
  void evict() override {
    release_slot();
    net::post(stream_.get_executor(), [self = this->shared_from_this()] {
      if (self->closed_) return;
      if (!self->in_request_) return self->close();
      self->keep_alive_ = false;  // a request arrived meanwhile: answer it, then close
    });
  }
  // Closes at once (the server is stopping; called with the io threads joined).
  void close_now() override {
    on_disconnect_ = nullptr;
    on_writable_ = nullptr;
    exchange_.reset();
    closed_ = true;
    beast::error_code ec;
    tcp_layer().socket().close(ec);
  }

  // ---- The answer to the current request (called through ExchangeImpl, on the strand). ----
  [[nodiscard]] bool current(uint64_t generation) const { return generation == generation_ && !closed_; }
  [[nodiscard]] bool answering(uint64_t generation) const { return current(generation) && !reply_complete_; }

  void reply(uint64_t generation, int status, std::string_view body, std::string_view content_type,
             const Headers& headers) {
    if (!answering(generation) || events_started_) return;
    status_ = status;
    std::string out = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n", status,
                                  reason_phrase(status), content_type, body.size());
    append_common_headers(out, headers);
    // HEAD: the headers GET would send (its Content-Length included), never the body.
    if (!head_) out += body;
    finish_reply(std::move(out));
  }

  void start_events(uint64_t generation) {
    if (!answering(generation) || events_started_) return;
    events_started_ = true;
    status_ = 200;
    // HTTP/1.0 has no chunked encoding: the stream then ends with the connection.
    chunked_ = version_ >= 11;
    if (!chunked_) keep_alive_ = false;
    std::string out =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: "
        "no\r\n";
    if (chunked_) out += "Transfer-Encoding: chunked\r\n";
    append_common_headers(out, {});
    queue(std::move(out));
  }

  void send_event(uint64_t generation, std::string_view data) {
    if (!answering(generation) || !events_started_ || head_) return;
    queue(frame(fmt::format("data: {}\n\n", data)));
  }

  void end_events(uint64_t generation) {
    if (!answering(generation) || !events_started_) return;
    if (head_) return finish_reply({});
    std::string out = frame("data: [DONE]\n\n");
    if (chunked_) out += "0\r\n\r\n";
    finish_reply(std::move(out));
  }

  [[nodiscard]] bool events_started(uint64_t generation) const {
    return current(generation) && events_started_;
  }

  void set_on_disconnect(uint64_t generation, std::function<void()> callback) {
    if (!answering(generation)) return;
    on_disconnect_ = std::move(callback);
  }

  [[nodiscard]] bool backlogged(uint64_t generation) const {
    return current(generation) && pending_bytes_ >= shared_.config.max_pending_bytes;
  }

  void set_on_writable(uint64_t generation, std::function<void()> callback) {
    if (!answering(generation) || !callback) return;
    on_writable_ = std::move(callback);
    notify_writable();
  }

  void set_tokens(uint64_t generation, int64_t prompt_tokens, int64_t completion_tokens) {
    if (generation != generation_) return;
    summary_.prompt_tokens = prompt_tokens;
    summary_.completion_tokens = completion_tokens;
  }

  void set_request_details(uint64_t generation, nlohmann::json details) {
    if (generation != generation_) return;
    summary_.request_details = std::make_shared<const nlohmann::json>(std::move(details));
  }

  void post(std::function<void()> fn) {
    net::post(stream_.get_executor(), [self = this->shared_from_this(), fn = std::move(fn)] { fn(); });
  }

 private:
  static Stream make_stream(tcp::socket socket, const std::shared_ptr<net::ssl::context>& tls) {
    if constexpr (kTls<Stream>) {
      return Stream(std::move(socket), *tls);
    } else {
      return Stream(std::move(socket));
    }
  }
  // The TCP stream (under TLS when there is TLS): timeouts, the socket.
  beast::tcp_stream& tcp_layer() { return beast::get_lowest_layer(stream_); }

  // ---- TLS: the handshake, within the header timeout. ----
  void handshake() {
    if constexpr (kTls<Stream>) {
      tcp_layer().expires_after(shared_.config.header_timeout);
      stream_.async_handshake(net::ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (self->closed_) return;
                                if (ec) return self->close();  // not TLS, an old version, too slow, gone
                                self->await_request(/*first=*/true);
                              });
    }
  }

  // ---- Reading a request. ----
  // Between requests the connection is idle (evictable); a keep-alive connection waits keep_alive_timeout
  // for the next request to begin, then header_timeout for its header.
  void await_request(bool first) {
    reset_request();
    in_request_ = false;
    if (!first) shared_.idle.mark_idle(this->shared_from_this());
    if (first || buffer_.size() > 0) return read_header();  // a pipelined request is there already
    tcp_layer().expires_after(shared_.config.keep_alive_timeout);
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = this->shared_from_this()](beast::error_code ec, size_t n) {
                              if (self->closed_) return;
                              if (ec) return self->close();  // idle past the limit, or gone
                              self->buffer_.commit(n);
                              self->read_header();
                            });
  }

  void read_header() {
    header_parser_.emplace();
    header_parser_->header_limit(shared_.config.max_header_bytes);
    // The body's size is judged in on_header (413 with the numbers), not by the header parser.
    header_parser_->body_limit(boost::none);
    tcp_layer().expires_after(shared_.config.header_timeout);
    http::async_read_header(
        stream_, buffer_, *header_parser_,
        [self = this->shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (closed_) return;
    shared_.idle.mark_busy(*this);
    in_request_ = true;
    if (ec == http::error::header_limit) {
      return early_reply(
          431, "request_header_fields_too_large",
          fmt::format("the request header is larger than {} bytes", shared_.config.max_header_bytes));
    }
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset) {
      return close();  // idle, slow or gone: nothing to answer
    }
    if (ec) return early_reply(400, "bad_request", fmt::format("malformed HTTP request: {}", ec.message()));

    const auto& req = header_parser_->get();
    started_ = Clock::now();
    version_ = req.version();
    keep_alive_ = req.keep_alive() && keep_alive_allowed_;
    request_ = request_from_header(req, remote_);
    head_ = request_.method == "HEAD";
    request_id_ = make_request_id(request_.header("x-request-id"));
    summary_.method = request_.method;
    const bool body_pending = header_parser_->chunked() || header_parser_->content_length().value_or(0) > 0;
    if (auto problem = framing_error(req, version_)) {
      // The body's length is unknown: nothing after this header can be read as a request (RFC 9112 6.1).
      return early_reply(400, "bad_transfer_encoding", std::move(*problem));
    }

    if (limited_ && request_.path != "/health") {
      keep_alive_ = false;
      return early_reply(503, "too_many_connections",
                         fmt::format("the server has {} connections open (--max-connections {}); retry later",
                                     shared_.connections.load(), shared_.config.max_connections),
                         "server_error", 1);
    }
    const auto content_length = header_parser_->content_length();
    if (content_length && *content_length > shared_.config.max_request_bytes) {
      return early_reply(413, "request_too_large",
                         fmt::format("the request body has {} bytes; this server accepts at most {} "
                                     "(--max-request-bytes)",
                                     *content_length, shared_.config.max_request_bytes));
    }
    // The route and the credentials are decided before the body is read. HEAD takes the path's GET route.
    route_ = nullptr;
    bool path_known = false;
    const std::string_view method = head_ ? std::string_view("GET") : std::string_view(request_.method);
    for (const auto& r : shared_.routes) {
      if (r.path != request_.path) continue;
      path_known = true;
      if (r.method == method) route_ = &r;
    }
    if (route_ != nullptr) summary_.route = route_->path;
    // Credentials first: with authentication on, a route that is not open (or no route at all: an unknown
    // path is no way in, and an unauthenticated client learns nothing about the route table) needs them.
    user_ = "anonymous";
    if (shared_.authenticator && (route_ == nullptr || route_->authenticated)) {
      AuthResult auth = shared_.authenticator(request_.header("authorization"));
      if (!auth.user) {
        count_request_without_credentials();
        if (body_pending) keep_alive_ = false;
        return early_reply(
            401, std::move(auth.code),
            auth.error.empty()
                ? "missing or invalid credentials: send the header 'Authorization: Bearer <key>'"
                : std::move(auth.error),
            "authentication_error");
      }
      user_ = std::move(*auth.user);
    } else if (shared_.authenticator) {
      count_request_without_credentials();  // an open route
    }
    summary_.user = user_;
    if (route_ == nullptr) {
      if (body_pending) keep_alive_ = false;
      if (path_known) {
        return early_reply(405, "method_not_allowed",
                           fmt::format("{} is not allowed on {}", request_.method, request_.path));
      }
      return early_reply(404, "not_found",
                         fmt::format("there is no route {} {}", request_.method, request_.path),
                         "not_found_error");
    }

    body_parser_.emplace(std::move(*header_parser_));
    header_parser_.reset();
    body_parser_->body_limit(shared_.config.max_request_bytes);
    const auto expect = body_parser_->get()[http::field::expect];
    if (iequals(expect, "100-continue") && body_pending) {
      // The client waits for this before it sends the body.
      tcp_layer().expires_after(shared_.config.write_timeout);
      auto interim = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
      net::async_write(stream_, net::buffer(*interim),
                       [self = this->shared_from_this(), interim](beast::error_code ec, size_t) {
                         if (ec) return self->close();
                         self->read_body();
                       });
      return;
    }
    read_body();
  }

  void read_body() {
    tcp_layer().expires_after(shared_.config.body_timeout);
    http::async_read(stream_, buffer_, *body_parser_,
                     [self = this->shared_from_this()](beast::error_code ec, size_t) { self->on_body(ec); });
  }

  void on_body(beast::error_code ec) {
    if (closed_) return;
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      return early_reply(413, "request_too_large",
                         fmt::format("the request body is larger than {} bytes (--max-request-bytes)",
                                     shared_.config.max_request_bytes));
    }
    // A timeout has closed the socket already (Beast's stream does that): there is no one left to answer.
    if (ec) return close();
    tcp_layer().expires_never();
    request_.body = std::move(body_parser_->get().body());
    body_parser_.reset();
    dispatch();
  }

  void dispatch() {
    auto exchange = std::make_shared<ExchangeImpl<Stream>>(this->shared_from_this(), generation_,
                                                           std::move(request_), request_id_, user_);
    exchange_ = exchange;
    answering_ = true;
    ++shared_.answering;
    watch_for_disconnect();
    try {
      route_->handler(exchange);
    } catch (...) {
      exchange->reply_error(error_reply(std::current_exception(), request_id_));
    }
  }

  // With an authenticator set, a connection whose requests bring no credentials gets a bounded number of
  // them.
  void count_request_without_credentials() {
    if (++requests_without_credentials_ < shared_.config.max_requests_without_credentials) return;
    keep_alive_ = false;
    keep_alive_allowed_ = false;
  }

  // A request refused before its body was read (or without one).
  void early_reply(int status, std::string code, std::string message,
                   std::string type = "invalid_request_error",
                   std::optional<int> retry_after = std::nullopt) {
    if (status >= 400 && status != 401 && status != 404 && status != 405) keep_alive_ = false;
    ErrorReply e;
    e.status = status;
    e.type = std::move(type);
    e.message = std::move(message);
    e.code = std::move(code);
    e.retry_after_s = retry_after;
    if (summary_.route.empty()) summary_.route = "unknown";
    Headers headers;
    if (retry_after) headers.emplace_back("Retry-After", std::to_string(*retry_after));
    if (status == 401) headers.emplace_back("WWW-Authenticate", "Bearer");
    reply(generation_, status, e.body().dump(), "application/json", headers);
  }

  // ---- Writing. ----
  void append_common_headers(std::string& out, const Headers& headers) {
    if (request_id_.empty()) request_id_ = make_request_id({});
    out += "X-Request-Id: " + request_id_ + "\r\n";
    for (const auto& [name, value] : headers) out += name + ": " + value + "\r\n";
    out += keep_alive_ ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  }

  [[nodiscard]] std::string frame(std::string_view data) const {
    if (!chunked_) return std::string(data);
    return fmt::format("{:x}\r\n{}\r\n", data.size(), data);
  }

  void finish_reply(std::string out) {
    reply_complete_ = true;
    queue(std::move(out));
  }

  void queue(std::string bytes) {
    pending_bytes_ += bytes.size();
    out_.push_back(std::move(bytes));
    write_next();
  }

  // Everything queued goes out in one gathered write (up to kMaxGather pieces), which must complete within
  // write_timeout: a client that stops reading is cut off then (on_write sees the timeout).
  void write_next() {
    if (writing_ || out_.empty() || closed_) return;
    writing_ = true;
    static constexpr size_t kMaxGather = 64;
    std::vector<net::const_buffer> pieces;
    for (size_t i = 0; i < out_.size() && i < kMaxGather; ++i) pieces.push_back(net::buffer(out_[i]));
    in_flight_ = pieces.size();
    tcp_layer().expires_after(shared_.config.write_timeout);
    net::async_write(stream_, pieces,
                     [self = this->shared_from_this()](beast::error_code ec, size_t) { self->on_write(ec); });
  }

  void on_write(beast::error_code ec) {
    writing_ = false;
    if (closed_) return;
    if (ec) return client_gone();
    for (; in_flight_ > 0; --in_flight_) {
      pending_bytes_ -= out_.front().size();
      out_.pop_front();
    }
    notify_writable();
    if (!out_.empty()) return write_next();
    if (reply_complete_) finish_request();
  }

  // Backpressure released: the producer waiting in on_writable runs again (posted, never inside a write's
  // completion, so that what it queues starts a write of its own).
  void notify_writable() {
    if (!on_writable_ || pending_bytes_ > shared_.config.max_pending_bytes / 2) return;
    post(std::exchange(on_writable_, nullptr));
  }

  void end_answering() {
    if (!answering_) return;
    answering_ = false;
    --shared_.answering;
  }

  void finish_request() {
    stop_watching();
    emit_summary(false);
    on_disconnect_ = nullptr;
    exchange_.reset();
    end_answering();
    if (keep_alive_) return await_request(/*first=*/false);
    graceful_close();
  }

  // ---- The client leaving while we answer. ----
  void watch_for_disconnect() {
    watching_ = true;
    tcp_layer().socket().async_wait(tcp::socket::wait_read,
                                    [self = this->shared_from_this(), generation = generation_](
                                        beast::error_code ec) { self->on_readable(ec, generation); });
  }

  void stop_watching() {
    if (!watching_) return;
    watching_ = false;
    hangup_timer_.cancel();
    beast::error_code ec;
    tcp_layer().socket().cancel(ec);  // only the wait is pending now
  }

  void on_readable(beast::error_code ec, uint64_t generation) {
    if (generation != generation_ || !watching_ || closed_) return;
    if (ec == net::error::operation_aborted) return;
    if (ec) return client_gone();
    char byte = 0;
    const ssize_t n = ::recv(tcp_layer().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return client_gone();  // orderly close
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return watch_for_disconnect();
      return client_gone();
    }
    // TLS: records (a close_notify, most likely) and maybe the end of the stream behind them.
    if constexpr (kTls<Stream>) return watch_for_hangup(generation);
    watching_ = false;  // a pipelined request: it waits in the socket until this answer is done
  }

  // TLS: the peer's bytes cannot be peeked through; look for the TCP end behind them every 200 ms.
  void watch_for_hangup(uint64_t generation) {
    pollfd p{tcp_layer().socket().native_handle(), POLLRDHUP, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) return client_gone();
    hangup_timer_.expires_after(std::chrono::milliseconds(200));
    hangup_timer_.async_wait([self = this->shared_from_this(), generation](beast::error_code ec) {
      if (ec || generation != self->generation_ || !self->watching_ || self->closed_) return;
      self->watch_for_hangup(generation);
    });
  }

  void client_gone() {
    if (closed_) return;
    const bool answered = reply_complete_ && out_.empty();
    if (auto callback = std::move(on_disconnect_); callback && !reply_complete_) callback();
    on_disconnect_ = nullptr;
    on_writable_ = nullptr;
    if (exchange_ != nullptr && !answered) emit_summary(true);
    exchange_.reset();
    close();
  }

  // ---- Closing. ----
  void close() {
    end_answering();
    if (closed_) return;
    closed_ = true;
    on_disconnect_ = nullptr;
    on_writable_ = nullptr;
    exchange_.reset();
    beast::error_code ec;
    tcp_layer().socket().shutdown(tcp::socket::shutdown_both, ec);
    tcp_layer().close();
  }

  // Half-close, then read and drop what the client still sends for a moment, so that an answer given before
  // the body was read (413, 431) is not lost to a reset.
  void graceful_close() {
    if constexpr (kTls<Stream>) {
      // close_notify, then wait (briefly) for the client's, reading past whatever it still sends.
      tcp_layer().expires_after(std::chrono::seconds(2));
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) { self->close(); });
      return;
    }
    beast::error_code ec;
    tcp_layer().socket().shutdown(tcp::socket::shutdown_send, ec);
    tcp_layer().expires_after(std::chrono::seconds(2));
    drain_before_close();
  }

  void drain_before_close() {
    if (closed_) return;
    auto scratch = std::make_shared<std::array<char, 16384>>();
    stream_.async_read_some(net::buffer(*scratch),
                            [self = this->shared_from_this(), scratch](beast::error_code ec, size_t) {
                              if (ec) return self->close();
                              self->drain_before_close();
                            });
  }

  void reset_request() {
    ++generation_;
    request_ = HttpRequest{};
    route_ = nullptr;
    user_.clear();
    request_id_.clear();
    out_.clear();
    pending_bytes_ = 0;
    on_writable_ = nullptr;
    reply_complete_ = false;
    events_started_ = false;
    head_ = false;
    chunked_ = false;
    status_ = 0;
    summary_ = ExchangeSummary{};
    started_ = Clock::now();
  }

  void release_slot() {
    if (counted_.exchange(false)) --shared_.connections;
  }

  void emit_summary(bool disconnected) {
    if (!shared_.hook || summary_emitted_generation_ == generation_) return;
    summary_emitted_generation_ = generation_;
    summary_.request_id = request_id_;
    summary_.remote = remote_;
    summary_.status = status_;
    summary_.client_disconnected = disconnected;
    if (summary_.route.empty()) summary_.route = "unknown";
    if (summary_.user.empty()) summary_.user = user_.empty() ? "anonymous" : user_;
    summary_.latency_s = std::chrono::duration<double>(Clock::now() - started_).count();
    try {
      shared_.hook(summary_);
    } catch (const std::exception& e) {
      spdlog::warn("request completion hook failed: {}", e.what());
    }
  }

  std::shared_ptr<net::ssl::context> tls_;  // TLS: the context this connection was accepted with
  Stream stream_;
  net::steady_timer hangup_timer_;
  beast::flat_buffer buffer_;
  std::shared_ptr<ServerState> shared_ptr_;  // sessions may outlive the server object by a moment
  ServerState& shared_;
  bool limited_;
  std::atomic<bool> counted_{true};  // holds one of ServerState::connections (until evicted or destroyed)
  bool in_request_ = false;          // a request's header has arrived and its answer is not done
  bool keep_alive_allowed_ = true;   // false once the connection has used its requests without credentials
  int64_t requests_without_credentials_ = 0;
  std::string remote_;
  std::optional<http::request_parser<http::empty_body>> header_parser_;
  std::optional<http::request_parser<http::string_body>> body_parser_;

  // The current request.
  uint64_t generation_ = 0;
  uint64_t summary_emitted_generation_ = 0;
  HttpRequest request_;
  const RouteEntry* route_ = nullptr;
  std::string request_id_;
  std::string user_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool head_ = false;
  Clock::time_point started_;
  std::shared_ptr<ExchangeImpl<Stream>> exchange_;
  std::function<void()> on_disconnect_;
  bool watching_ = false;
  bool answering_ = false;
  ExchangeSummary summary_;
  int status_ = 0;

  // The answer.
  std::deque<std::string> out_;
  uint64_t pending_bytes_ = 0;  // in out_: queued and not yet written
  size_t in_flight_ = 0;        // pieces of out_ in the write under way
  std::function<void()> on_writable_;
  bool writing_ = false;
  bool reply_complete_ = false;
  bool events_started_ = false;
  bool chunked_ = false;
  bool closed_ = false;
};

std::shared_ptr<SessionHandle> start_session(tcp::socket socket, std::shared_ptr<ServerState> state,
                                             bool limited) {
  std::shared_ptr<net::ssl::context> tls;
  {
    std::lock_guard lock(state->tls_mutex);
    tls = state->tls_context;
  }
  if (tls) {
    auto session =
        std::make_shared<Session<TlsStream>>(std::move(socket), std::move(state), limited, std::move(tls));
    session->start();
    return session;
  }
  auto session =
      std::make_shared<Session<PlainStream>>(std::move(socket), std::move(state), limited, nullptr);
  session->start();
  return session;
}

}  // namespace ds::server::detail
