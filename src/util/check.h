// Errors and invariant checks.
//
// Two kinds of failure, kept apart on purpose (STYLE.md habit 6):
//  - UserError and its children: bad input from outside (flags, files, checkpoints, requests). The message
//    is for the user and says what to change; callers at the edge turn it into an exit code or an HTTP 400.
//  - InternalError from DS_CHECK: a broken invariant, i.e. our bug. It carries file:line and the condition.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace ds {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class InternalError : public Error {
 public:
  using Error::Error;
};

class UserError : public Error {
 public:
  using Error::Error;
};

// A checkpoint file (safetensors, index.json, config.json) that cannot be used as is.
class CheckpointError : public UserError {
 public:
  using UserError::UserError;
};

// A flag, option or request field that is out of range or inconsistent. `param` names the request field
// when there is one (the OpenAI error body's "param").
class InvalidArgument : public UserError {
 public:
  using UserError::UserError;
  InvalidArgument(std::string param, const std::string& message) : UserError(message), param_(std::move(param)) {}
  [[nodiscard]] const std::string& param() const { return param_; }

 private:
  std::string param_;
};

namespace detail {
[[noreturn]] void check_failed(const char* file, int line, const char* condition, const std::string& message);
}  // namespace detail

}  // namespace ds

// DS_CHECK(cond, "format {}", args...): throws ds::InternalError naming file, line and condition.
#define DS_CHECK(cond, ...)                                                                \
  do {                                                                                     \
    if (!(cond)) [[unlikely]] {                                                            \
      ::ds::detail::check_failed(__FILE__, __LINE__, #cond, ::fmt::format(__VA_ARGS__));   \
    }                                                                                      \
  } while (0)

// DS_REQUIRE(cond, ErrorType, "format {}", args...): throws a typed user-facing error without file:line.
#define DS_REQUIRE(cond, ErrorType, ...)                       \
  do {                                                         \
    if (!(cond)) [[unlikely]] {                                \
      throw ErrorType(::fmt::format(__VA_ARGS__));             \
    }                                                          \
  } while (0)
