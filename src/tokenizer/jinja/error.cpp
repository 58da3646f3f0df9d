#include "tokenizer/jinja/error.h"

#include <fmt/format.h>

namespace ds::jinja {
namespace {

std::string format_what(const std::string& kind, const std::string& message, SourceLocation location) {
  if (location.line <= 0) return fmt::format("chat template {}: {}", kind, message);
  return fmt::format("chat template {} at line {}, column {}: {}", kind, location.line, location.column,
                     message);
}

}  // namespace

TemplateError::TemplateError(std::string kind, std::string message, SourceLocation location)
    : UserError(format_what(kind, message, location)),
      kind_(std::move(kind)),
      message_(std::move(message)),
      location_(location) {}

namespace detail {

void throw_fault(Fault::Kind kind, std::string message) {
  throw Fault{kind, std::move(message)};
}
void throw_type_error(std::string message) {
  throw Fault{Fault::Kind::kType, std::move(message)};
}
void throw_value_error(std::string message) {
  throw Fault{Fault::Kind::kValue, std::move(message)};
}
void throw_limit(std::string message) {
  throw Fault{Fault::Kind::kLimit, std::move(message)};
}

void rethrow_at(const Fault& fault, SourceLocation location) {
  switch (fault.kind) {
    case Fault::Kind::kUndefined:
      throw TemplateRuntimeError("UndefinedError", fault.message, location);
    case Fault::Kind::kType:
      throw TemplateRuntimeError("TypeError", fault.message, location);
    case Fault::Kind::kValue:
      throw TemplateRuntimeError("ValueError", fault.message, location);
    case Fault::Kind::kSecurity:
      throw TemplateRuntimeError("SecurityError", fault.message, location);
    case Fault::Kind::kLimit:
      throw TemplateLimitError(fault.message, location);
    case Fault::Kind::kRaised:
      throw TemplateRaisedError(fault.message, location);
  }
  throw TemplateRuntimeError("TemplateError", fault.message, location);
}

}  // namespace detail
}  // namespace ds::jinja
