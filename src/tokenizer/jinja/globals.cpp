// The global functions a chat template sees: jinja2's defaults (range, dict, namespace, cycler-free
// joiner) and the two transformers adds (raise_exception, strftime_now).
#include <fmt/format.h>

#include <array>
#include <ctime>
#include <memory>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/error.h"

namespace ds::jinja::builtins {
namespace {

// jinja2.sandbox.MAX_RANGE: the sandbox refuses larger ranges.
constexpr int64_t kMaxRange = 100000;

Value g_range(CallArgs& a, Interpreter&) {
  if (!a.kwargs.empty()) detail::throw_type_error("range() takes no keyword arguments");
  if (a.args.empty() || a.args.size() > 3) {
    detail::throw_type_error(fmt::format("range expected at most 3 arguments, got {}", a.args.size()));
  }
  for (const Value& v : a.args) {
    fail_if_undefined(v);
    if (!v.is_integral()) {
      detail::throw_type_error(fmt::format("'{}' object cannot be interpreted as an integer", type_name(v)));
    }
  }
  int64_t start = 0;
  int64_t stop = 0;
  int64_t step = 1;
  if (a.args.size() == 1) {
    stop = a.args[0].as_int();
  } else {
    start = a.args[0].as_int();
    stop = a.args[1].as_int();
    if (a.args.size() == 3) step = a.args[2].as_int();
  }
  if (step == 0) detail::throw_value_error("range() arg 3 must not be zero");
  // In unsigned arithmetic: stop - start and -step overflow int64 for arguments near its ends.
  const auto ustart = static_cast<uint64_t>(start);
  const auto ustep = static_cast<uint64_t>(step);
  uint64_t count = 0;
  if (step > 0 && start < stop) count = (static_cast<uint64_t>(stop) - ustart - 1) / ustep + 1;
  if (step < 0 && start > stop) count = (ustart - static_cast<uint64_t>(stop) - 1) / (0 - ustep) + 1;
  if (count > static_cast<uint64_t>(kMaxRange)) {
    detail::throw_limit(
        fmt::format("Range too big. The sandbox blocks ranges larger than MAX_RANGE ({}).", kMaxRange));
  }
  std::vector<Value> out;
  out.reserve(static_cast<size_t>(count));
  // start + i * step lies between start and stop, so the wrapped unsigned sum is the int64 value.
  for (uint64_t i = 0; i < count; ++i)
    out.push_back(Value::integer(static_cast<int64_t>(ustart + i * ustep)));
  return Value::list(std::move(out));
}

// dict(mapping_or_pairs, **kwargs), as Python's dict() and jinja2's Namespace() take them.
// The entries copied are charged as work, so a loop that rebuilds a growing dict runs into the work limit.
DictObject dict_from_args(CallArgs& a, std::string_view fn, Interpreter& interp) {
  DictObject d;
  if (a.args.size() > 1) {
    detail::throw_type_error(fmt::format("{} expected at most 1 argument, got {}", fn, a.args.size()));
  }
  if (!a.args.empty()) {
    const Value& src = a.args[0];
    if (src.is_dict() || src.is_namespace()) {
      interp.charge_items(src.as_dict().entries().size());
      for (const auto& [k, v] : src.as_dict().entries()) d.set(k, v);
    } else {
      for (const Value& pair : iterate(src)) {
        if (!pair.is_list() || pair.items().size() != 2) {
          detail::throw_value_error("dictionary update sequence element has wrong length; 2 is required");
        }
        d.set(pair.items()[0], pair.items()[1]);
      }
    }
  }
  interp.charge_items(a.kwargs.size());
  for (auto& [k, v] : a.kwargs) d.set(k, v);
  return d;
}

Value g_dict(CallArgs& a, Interpreter& interp) {
  return Value::dict(dict_from_args(a, "dict", interp));
}

Value g_namespace(CallArgs& a, Interpreter& interp) {
  return Value::make_namespace(dict_from_args(a, "namespace", interp));
}

Value g_raise_exception(CallArgs& a, Interpreter&) {
  BoundArgs b("raise_exception", a, {"message"});
  detail::throw_fault(detail::Fault::Kind::kRaised, to_str(b[0]));
}

Value g_strftime_now(CallArgs& a, Interpreter& interp) {
  BoundArgs b("strftime_now", a, {"format"});
  if (!b[0].is_string()) detail::throw_type_error("strftime() argument 1 must be str");
  const std::string& format = b[0].as_string();
  if (format.empty()) return Value::string("");
  const std::tm tm = interp.now();
  // strftime reports 0 both for "buffer too small" and for an empty result; grow a few times.
  std::array<size_t, 4> sizes = {256, 4096, 65536, 1 << 20};
  for (size_t size : sizes) {
    std::string buf(size, '\0');
    const size_t n = std::strftime(buf.data(), buf.size(), format.c_str(), &tm);
    if (n > 0) {
      buf.resize(n);
      return Value::string(std::move(buf));
    }
  }
  return Value::string("");
}

Value g_joiner(CallArgs& a, Interpreter&) {
  BoundArgs b("joiner", a, {"sep"});
  const std::string sep = b.has(0) ? to_str(b[0]) : ", ";
  auto used = std::make_shared<bool>(false);
  return Value::function("joiner", [sep, used](CallArgs&, Interpreter&) {
    if (!*used) {
      *used = true;
      return Value::string("");
    }
    return Value::string(sep);
  });
}

}  // namespace

void install_globals(Frame& frame) {
  frame.set("range", Value::function("range", g_range));
  frame.set("dict", Value::function("dict", g_dict));
  frame.set("namespace", Value::function("namespace", g_namespace));
  frame.set("raise_exception", Value::function("raise_exception", g_raise_exception));
  frame.set("strftime_now", Value::function("strftime_now", g_strftime_now));
  frame.set("joiner", Value::function("joiner", g_joiner));
}

}  // namespace ds::jinja::builtins
