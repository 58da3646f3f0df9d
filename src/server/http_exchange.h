// Internal to the HTTP server: the Exchange a handler gets, a thin handle on its session that names the
// request (its generation) it answers, so that a late call for an earlier request on the connection does
// nothing.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "server/http_server.h"

namespace ds::server::detail {

template <class Stream>
class Session;

template <class Stream>
class ExchangeImpl final : public Exchange {
 public:
  ExchangeImpl(std::shared_ptr<Session<Stream>> session, uint64_t generation, HttpRequest request,
               std::string request_id, std::string user)
      : session_(std::move(session)),
        generation_(generation),
        request_(std::move(request)),
        request_id_(std::move(request_id)),
        user_(std::move(user)) {}

  const HttpRequest& request() const override { return request_; }
  const std::string& request_id() const override { return request_id_; }
  const std::string& user() const override { return user_; }
  void reply(int status, std::string body, std::string content_type, const Headers& headers) override {
    session_->reply(generation_, status, body, content_type, headers);
  }
  void start_events() override { session_->start_events(generation_); }
  void send_event(std::string_view data) override { session_->send_event(generation_, data); }
  void end_events() override { session_->end_events(generation_); }
  bool events_started() const override { return session_->events_started(generation_); }
  bool backlogged() const override { return session_->backlogged(generation_); }
  void on_writable(std::function<void()> callback) override {
    session_->set_on_writable(generation_, std::move(callback));
  }
  void on_disconnect(std::function<void()> callback) override {
    session_->set_on_disconnect(generation_, std::move(callback));
  }
  bool disconnected() const override { return !session_->current(generation_); }
  void post(std::function<void()> fn) override { session_->post(std::move(fn)); }
  void set_tokens(int64_t prompt_tokens, int64_t completion_tokens) override {
    session_->set_tokens(generation_, prompt_tokens, completion_tokens);
  }
  void set_request_details(nlohmann::json details) override {
    session_->set_request_details(generation_, std::move(details));
  }

 private:
  std::shared_ptr<Session<Stream>> session_;
  uint64_t generation_;
  HttpRequest request_;
  std::string request_id_;
  std::string user_;
};

}  // namespace ds::server::detail
