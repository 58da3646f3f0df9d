// The builtin library of the sandbox: operators, filters, tests, methods of str / list / dict, and the
// globals transformers gives chat templates (range, dict, namespace, raise_exception, strftime_now).
// Each follows what jinja2 3.1 does under transformers' environment; a deviation is commented where it
// is made.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/interpreter.h"
#include "tokenizer/jinja/value.h"

namespace ds::jinja::builtins {

using FilterFn = Value (*)(Interpreter& interp, const Value& input, CallArgs& args);
using TestFn = bool (*)(Interpreter& interp, const Value& input, CallArgs& args);

[[nodiscard]] FilterFn find_filter(std::string_view name);
[[nodiscard]] FilterFn find_sequence_filter(
    std::string_view name);  // the part of find_filter in filters_sequence.cpp
[[nodiscard]] TestFn find_test(std::string_view name);

// obj.name for a str, list, tuple or dict when name is one of its methods. Methods that would mutate
// (list.append, dict.update, ...) come back as callables that raise SecurityError, as in the
// immutable sandbox.
[[nodiscard]] std::optional<Value> bound_method(const Value& obj, const std::string& name);

// range, dict, namespace, raise_exception, strftime_now, cycler, joiner.
void install_globals(Frame& frame);

// Arithmetic with Python's rules (true division, floor division, modulo sign, str * int, ...).
[[nodiscard]] Value binary(BinaryOp op, const Value& a, const Value& b, Interpreter& interp);
[[nodiscard]] Value negate(const Value& v);
[[nodiscard]] Value unary_plus(const Value& v);
// printf-style `format % args` as Python's str.__mod__ does it. A width or precision above max_bytes (the
// limit on one string) is a LimitError.
[[nodiscard]] std::string percent_format(const std::string& format, const Value& args, size_t max_bytes);
// str.format(*args, **kwargs), with the same limit.
[[nodiscard]] std::string str_format(const std::string& format, const CallArgs& args, size_t max_bytes);
// int(d) truncating toward zero; a ValueError for NaN and outside int64 (Python's ints would not
// overflow, ours are 64-bit).
[[nodiscard]] int64_t float_to_int(double d);

// Binds call arguments to named parameters the way a Python signature does.
class BoundArgs {
 public:
  // Positional arguments fill params in order, then keywords by name. With varargs, surplus
  // positional and unknown keyword arguments are kept in extra_args / extra_kwargs instead of failing.
  BoundArgs(std::string_view function, CallArgs& call, std::initializer_list<std::string_view> params,
            bool varargs = false);

  [[nodiscard]] bool has(size_t i) const { return present_[i]; }
  [[nodiscard]] const Value& operator[](size_t i) const { return values_[i]; }
  [[nodiscard]] Value get(size_t i, Value fallback) const {
    return present_[i] ? values_[i] : std::move(fallback);
  }

  std::vector<Value> extra_args;
  std::vector<std::pair<std::string, Value>> extra_kwargs;

 private:
  std::vector<Value> values_;
  std::vector<bool> present_;
};

// Python slicing of a list, tuple or str.
[[nodiscard]] Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step);
// Python indexing with a possibly negative integer; nullopt when out of range.
[[nodiscard]] std::optional<size_t> normalize_index(int64_t index, size_t size);

}  // namespace ds::jinja::builtins
