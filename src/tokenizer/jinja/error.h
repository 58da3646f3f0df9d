// Errors of the Jinja template engine.
//
// Every failure while parsing or rendering a chat template is a TemplateError (a ds::UserError: the
// template and the data come from outside), and every one names the line and column in the template
// source where it happened. The server turns these into HTTP 400.
//
//   TemplateSyntaxError   the template source cannot be parsed
//   TemplateRuntimeError  rendering failed: an undefined value used, a type error, a blocked operation
//   TemplateLimitError    a sandbox limit was exceeded (loop iterations, recursion, output size)
//   TemplateRaisedError   the template called raise_exception(message); message() is that message
#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "util/check.h"

namespace ds::jinja {

struct SourceLocation {
  int line = 0;    // 1-based; 0 when unknown
  int column = 0;  // 1-based, in bytes of the (newline-normalized) source
};

class TemplateError : public UserError {
 public:
  TemplateError(std::string kind, std::string message, SourceLocation location);

  // The bare message, without the location prefix that what() carries.
  [[nodiscard]] const std::string& message() const { return message_; }
  // The Python exception type jinja2 would raise: "TemplateSyntaxError", "UndefinedError", "TypeError",
  // "ValueError", "SecurityError", "LimitError", "TemplateError" (raise_exception), ...
  [[nodiscard]] const std::string& kind() const { return kind_; }
  [[nodiscard]] SourceLocation location() const { return location_; }
  [[nodiscard]] int line() const { return location_.line; }
  [[nodiscard]] int column() const { return location_.column; }

 private:
  std::string kind_;
  std::string message_;
  SourceLocation location_;
};

class TemplateSyntaxError : public TemplateError {
 public:
  TemplateSyntaxError(std::string message, SourceLocation location)
      : TemplateError("TemplateSyntaxError", std::move(message), location) {}
};

class TemplateRuntimeError : public TemplateError {
 public:
  using TemplateError::TemplateError;
};

class TemplateLimitError : public TemplateError {
 public:
  TemplateLimitError(std::string message, SourceLocation location)
      : TemplateError("LimitError", std::move(message), location) {}
};

class TemplateRaisedError : public TemplateError {
 public:
  TemplateRaisedError(std::string message, SourceLocation location)
      : TemplateError("TemplateError", std::move(message), location) {}
};

namespace detail {

// Thrown by values, filters and builtins, which do not know where in the template they run; the
// interpreter catches it at the innermost node and rethrows the matching TemplateError with the
// node's location.
struct Fault {
  enum class Kind { kUndefined, kType, kValue, kSecurity, kLimit, kRaised };
  Kind kind;
  std::string message;
};

[[noreturn]] void throw_fault(Fault::Kind kind, std::string message);
[[noreturn]] void throw_type_error(std::string message);
[[noreturn]] void throw_value_error(std::string message);
[[noreturn]] void throw_limit(std::string message);
[[noreturn]] void rethrow_at(const Fault& fault, SourceLocation location);

}  // namespace detail
}  // namespace ds::jinja
