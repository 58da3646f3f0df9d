// HTTP errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
//
// Handlers throw; one wrapper (error_reply) turns whatever was thrown into a status and a body:
// HttpError as it is, InvalidArgument -> 400 with its param, OverloadedError -> 503 + Retry-After, any other
// UserError -> 400, EngineDeadError -> 503, and everything else -> 500 (only our own bugs may answer 500).
#pragma once

#include <nlohmann/json.hpp>

#include <exception>
#include <optional>
#include <string>

namespace ds::server {

struct ErrorReply {
  int status = 500;
  std::string type = "server_error";  // invalid_request_error, authentication_error, not_found_error, ...
  std::string message;
  std::optional<std::string> param;
  std::optional<std::string> code;
  std::optional<int> retry_after_s;  // sent as Retry-After

  [[nodiscard]] nlohmann::json body() const;
};

class HttpError : public std::exception {
 public:
  explicit HttpError(ErrorReply reply) : reply_(std::move(reply)) {}
  [[nodiscard]] const ErrorReply& reply() const { return reply_; }
  [[nodiscard]] const char* what() const noexcept override { return reply_.message.c_str(); }

 private:
  ErrorReply reply_;
};

// 400 invalid_request_error; `param` names the request field (empty: null).
[[nodiscard]] HttpError bad_request(std::string message, std::string param = {}, std::string code = {});
// 404 model_not_found.
[[nodiscard]] HttpError model_not_found(const std::string& model);
// 503 with Retry-After: overloaded or shutting down.
[[nodiscard]] HttpError unavailable(std::string message, std::string code, int retry_after_s = 1);

// The reply for `error` (std::current_exception() inside a catch block). A 500 says only "internal error
// (request id X)": what was thrown (a failed check's file:line, a device error) is logged with the request
// id, never sent to the client.
[[nodiscard]] ErrorReply error_reply(std::exception_ptr error, const std::string& request_id);

}  // namespace ds::server
