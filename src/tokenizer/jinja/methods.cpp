// Methods of str, list, tuple and dict, argument binding and slicing.
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/pystr.h"

namespace ds::jinja::builtins {

// --- arguments -------------------------------------------------------------------------------------

BoundArgs::BoundArgs(std::string_view function, CallArgs& call,
                     std::initializer_list<std::string_view> params, bool varargs)
    : values_(params.size()), present_(params.size(), false) {
  const std::vector<std::string_view> names(params);
  for (size_t i = 0; i < call.args.size(); ++i) {
    if (i < names.size()) {
      values_[i] = call.args[i];
      present_[i] = true;
    } else if (varargs) {
      extra_args.push_back(call.args[i]);
    } else {
      detail::throw_type_error(fmt::format("{}() takes at most {} arguments ({} given)", function,
                                           names.size(), call.args.size()));
    }
  }
  for (auto& [key, value] : call.kwargs) {
    const auto it = std::find(names.begin(), names.end(), key);
    if (it == names.end()) {
      if (varargs) {
        extra_kwargs.emplace_back(key, value);
        continue;
      }
      detail::throw_type_error(fmt::format("{}() got an unexpected keyword argument '{}'", function, key));
    }
    const auto i = static_cast<size_t>(it - names.begin());
    if (present_[i])
      detail::throw_type_error(fmt::format("{}() got multiple values for argument '{}'", function, key));
    values_[i] = value;
    present_[i] = true;
  }
}

// --- indexing --------------------------------------------------------------------------------------

std::optional<size_t> normalize_index(int64_t index, size_t size) {
  const auto n = static_cast<int64_t>(size);
  if (index < 0) index += n;
  if (index < 0 || index >= n) return std::nullopt;
  return static_cast<size_t>(index);
}

Value slice(const Value& obj, const Value& start_v, const Value& stop_v, const Value& step_v) {
  auto as_index = [](const Value& v) -> std::optional<int64_t> {
    if (v.is_none() || v.is_undefined()) return std::nullopt;
    if (!v.is_integral()) {
      detail::throw_type_error("slice indices must be integers or None or have an __index__ method");
    }
    return v.as_int();
  };
  const int64_t step = as_index(step_v).value_or(1);
  if (step == 0) detail::throw_value_error("slice step cannot be zero");
  std::u32string text;
  size_t n = 0;
  if (obj.is_string()) {
    text = pystr::decode(obj.as_string());
    n = text.size();
  } else {
    n = obj.items().size();
  }
  const auto len = static_cast<int64_t>(n);
  auto clamp = [&](std::optional<int64_t> v, int64_t dflt) {
    if (!v) return dflt;
    int64_t x = *v;
    if (x < 0) x += len;
    if (step > 0) return std::clamp<int64_t>(x, 0, len);
    return std::clamp<int64_t>(x, -1, len - 1);
  };
  const int64_t start = clamp(as_index(start_v), step > 0 ? 0 : len - 1);
  const int64_t stop = clamp(as_index(stop_v), step > 0 ? len : -1);
  std::vector<size_t> picks;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) picks.push_back(static_cast<size_t>(i));
  if (obj.is_string()) {
    std::u32string out;
    for (size_t i : picks) out.push_back(text[i]);
    return Value::string(pystr::encode(out));
  }
  std::vector<Value> out;
  for (size_t i : picks) out.push_back(obj.items()[i]);
  return obj.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

// --- methods ---------------------------------------------------------------------------------------

namespace {

using Method = Value (*)(const Value& self, CallArgs& args, Interpreter& interp);

std::optional<std::string> opt_string(const BoundArgs& a, size_t i, std::string_view fn) {
  if (!a.has(i) || a[i].is_none()) return std::nullopt;
  if (!a[i].is_string()) detail::throw_type_error(fmt::format("{} arg must be None or str", fn));
  return a[i].as_string();
}

const std::string& string_arg(const BoundArgs& a, size_t i, std::string_view fn) {
  if (!a.has(i)) detail::throw_type_error(fmt::format("{}() missing required argument", fn));
  if (!a[i].is_string()) {
    detail::throw_type_error(fmt::format("{}() argument must be str, not {}", fn, type_name(a[i])));
  }
  return a[i].as_string();
}

int64_t int_arg(const BoundArgs& a, size_t i, int64_t fallback) {
  if (!a.has(i) || a[i].is_none()) return fallback;
  if (!a[i].is_integral()) detail::throw_type_error("an integer is required");
  return a[i].as_int();
}

Value string_list(std::vector<std::string> parts) {
  std::vector<Value> out;
  out.reserve(parts.size());
  for (auto& p : parts) out.push_back(Value::string(std::move(p)));
  return Value::list(std::move(out));
}

Value str_strip_impl(const Value& self, CallArgs& args, bool left, bool right, std::string_view fn) {
  BoundArgs a(fn, args, {"chars"});
  return Value::string(pystr::strip(self.as_string(), opt_string(a, 0, fn), left, right));
}

bool affix_match(const Value& self, CallArgs& args, bool prefix) {
  BoundArgs a(prefix ? "startswith" : "endswith", args, {"prefix", "start", "end"});
  const std::string& s = self.as_string();
  auto test = [&](const std::string& x) {
    if (x.size() > s.size()) return false;
    return prefix ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  if (a[0].is_list() && a[0].is_tuple()) {
    for (const auto& x : a[0].items()) {
      if (!x.is_string()) detail::throw_type_error("tuple for startswith must only contain str");
      if (test(x.as_string())) return true;
    }
    return false;
  }
  if (!a[0].is_string()) {
    detail::throw_type_error(fmt::format("{} first arg must be str or a tuple of str, not {}",
                                         prefix ? "startswith" : "endswith", type_name(a[0])));
  }
  return test(a[0].as_string());
}

Value pad(const std::string& s, int64_t width, const std::string& fill,
          int align /* -1 left, 0 center, 1 right */, const Interpreter& interp) {
  const auto len = static_cast<int64_t>(pystr::length(s));
  if (width <= len) return Value::string(s);
  const int64_t total = width - len;
  interp.check_string_size(static_cast<uint64_t>(std::min<unsigned __int128>(
      static_cast<unsigned __int128>(total) * fill.size() + s.size(), UINT64_MAX)));
  int64_t left = align < 0 ? 0 : align > 0 ? total : total / 2 + (total & width & 1);
  const int64_t right = total - left;
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += fill;
  out += s;
  for (int64_t i = 0; i < right; ++i) out += fill;
  return Value::string(std::move(out));
}

bool all_chars(const std::string& s, bool (*pred)(char32_t)) {
  const std::u32string u = pystr::decode(s);
  if (u.empty()) return false;
  return std::all_of(u.begin(), u.end(), pred);
}

const std::vector<std::pair<std::string_view, Method>>& string_methods() {
  static const std::vector<std::pair<std::string_view, Method>> kMethods = {
      {"upper",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("upper", a, {});
         return Value::string(pystr::upper(s.as_string()));
       }},
      {"lower",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("lower", a, {});
         return Value::string(pystr::lower(s.as_string()));
       }},
      {"casefold",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("casefold", a, {});
         return Value::string(pystr::lower(s.as_string()));
       }},
      {"title",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("title", a, {});
         return Value::string(pystr::title(s.as_string()));
       }},
      {"capitalize",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("capitalize", a, {});
         return Value::string(pystr::capitalize(s.as_string()));
       }},
      {"swapcase",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("swapcase", a, {});
         return Value::string(pystr::swapcase(s.as_string()));
       }},
      {"strip",
       [](const Value& s, CallArgs& a, Interpreter&) { return str_strip_impl(s, a, true, true, "strip"); }},
      {"lstrip",
       [](const Value& s, CallArgs& a, Interpreter&) { return str_strip_impl(s, a, true, false, "lstrip"); }},
      {"rstrip",
       [](const Value& s, CallArgs& a, Interpreter&) { return str_strip_impl(s, a, false, true, "rstrip"); }},
      {"split",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("split", a, {"sep", "maxsplit"});
         return string_list(pystr::split(s.as_string(), opt_string(b, 0, "split"), int_arg(b, 1, -1), false));
       }},
      {"rsplit",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("rsplit", a, {"sep", "maxsplit"});
         return string_list(pystr::split(s.as_string(), opt_string(b, 0, "rsplit"), int_arg(b, 1, -1), true));
       }},
      {"splitlines",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("splitlines", a, {"keepends"});
         return string_list(pystr::splitlines(s.as_string(), b.has(0) && truthy(b[0])));
       }},
      {"startswith",
       [](const Value& s, CallArgs& a, Interpreter&) { return Value::boolean(affix_match(s, a, true)); }},
      {"endswith",
       [](const Value& s, CallArgs& a, Interpreter&) { return Value::boolean(affix_match(s, a, false)); }},
      {"replace",
       [](const Value& s, CallArgs& a, Interpreter& interp) {
         BoundArgs b("replace", a, {"old", "new", "count"});
         std::string out = pystr::replace(s.as_string(), string_arg(b, 0, "replace"),
                                          string_arg(b, 1, "replace"), int_arg(b, 2, -1));
         interp.charge_string(out.size());
         return Value::string(std::move(out));
       }},
      {"find",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("find", a, {"sub"});
         return Value::integer(pystr::find(s.as_string(), string_arg(b, 0, "find"), false));
       }},
      {"rfind",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("rfind", a, {"sub"});
         return Value::integer(pystr::find(s.as_string(), string_arg(b, 0, "rfind"), true));
       }},
      {"index",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("index", a, {"sub"});
         const int64_t i = pystr::find(s.as_string(), string_arg(b, 0, "index"), false);
         if (i < 0) detail::throw_value_error("substring not found");
         return Value::integer(i);
       }},
      {"rindex",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("rindex", a, {"sub"});
         const int64_t i = pystr::find(s.as_string(), string_arg(b, 0, "rindex"), true);
         if (i < 0) detail::throw_value_error("substring not found");
         return Value::integer(i);
       }},
      {"count",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("count", a, {"sub"});
         return Value::integer(pystr::count(s.as_string(), string_arg(b, 0, "count")));
       }},
      {"join",
       [](const Value& s, CallArgs& a, Interpreter& interp) {
         BoundArgs b("join", a, {"iterable"});
         std::string out;
         bool first = true;
         for (const Value& item : interp.items_of(b[0])) {
           if (!item.is_string()) {
             detail::throw_type_error(
                 fmt::format("sequence item: expected str instance, {} found", type_name(item)));
           }
           if (!first) out += s.as_string();
           first = false;
           out += item.as_string();
           interp.charge_string(item.as_string().size() + s.as_string().size());
         }
         return Value::string(std::move(out));
       }},
      {"format",
       [](const Value& s, CallArgs& a, Interpreter& interp) {
         std::string out = str_format(s.as_string(), a, interp.limits().max_output_bytes);
         interp.charge_string(out.size());
         return Value::string(std::move(out));
       }},
      {"center",
       [](const Value& s, CallArgs& a, Interpreter& interp) {
         BoundArgs b("center", a, {"width", "fillchar"});
         return pad(s.as_string(), int_arg(b, 0, 0), b.has(1) ? string_arg(b, 1, "center") : " ", 0, interp);
       }},
      {"ljust",
       [](const Value& s, CallArgs& a, Interpreter& interp) {
         BoundArgs b("ljust", a, {"width", "fillchar"});
         return pad(s.as_string(), int_arg(b, 0, 0), b.has(1) ? string_arg(b, 1, "ljust") : " ", -1, interp);
       }},
      {"rjust",
       [](const Value& s, CallArgs& a, Interpreter& interp) {
         BoundArgs b("rjust", a, {"width", "fillchar"});
         return pad(s.as_string(), int_arg(b, 0, 0), b.has(1) ? string_arg(b, 1, "rjust") : " ", 1, interp);
       }},
      {"zfill",
       [](const Value& s, CallArgs& a, Interpreter& interp) {
         BoundArgs b("zfill", a, {"width"});
         std::string str = s.as_string();
         std::string sign;
         if (!str.empty() && (str[0] == '-' || str[0] == '+')) {
           sign = str.substr(0, 1);
           str.erase(0, 1);
         }
         // Widths below 0 pad nothing; clamped first so that subtracting the sign cannot overflow.
         const int64_t width = std::max<int64_t>(int_arg(b, 0, 0), 0) - static_cast<int64_t>(sign.size());
         const Value padded = pad(str, width, "0", 1, interp);
         return Value::string(sign + padded.as_string());
       }},
      {"removeprefix",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("removeprefix", a, {"prefix"});
         const std::string& p = string_arg(b, 0, "removeprefix");
         const std::string& str = s.as_string();
         return Value::string(str.compare(0, p.size(), p) == 0 ? str.substr(p.size()) : str);
       }},
      {"removesuffix",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("removesuffix", a, {"suffix"});
         const std::string& p = string_arg(b, 0, "removesuffix");
         const std::string& str = s.as_string();
         const bool hit =
             !p.empty() && str.size() >= p.size() && str.compare(str.size() - p.size(), p.size(), p) == 0;
         return Value::string(hit ? str.substr(0, str.size() - p.size()) : str);
       }},
      {"partition",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("partition", a, {"sep"});
         const std::string& sep = string_arg(b, 0, "partition");
         if (sep.empty()) detail::throw_value_error("empty separator");
         const std::string& str = s.as_string();
         const size_t hit = str.find(sep);
         if (hit == std::string::npos) return Value::tuple({s, Value::string(""), Value::string("")});
         return Value::tuple({Value::string(str.substr(0, hit)), Value::string(sep),
                              Value::string(str.substr(hit + sep.size()))});
       }},
      {"rpartition",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("rpartition", a, {"sep"});
         const std::string& sep = string_arg(b, 0, "rpartition");
         if (sep.empty()) detail::throw_value_error("empty separator");
         const std::string& str = s.as_string();
         const size_t hit = str.rfind(sep);
         if (hit == std::string::npos) return Value::tuple({Value::string(""), Value::string(""), s});
         return Value::tuple({Value::string(str.substr(0, hit)), Value::string(sep),
                              Value::string(str.substr(hit + sep.size()))});
       }},
      {"isdigit",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("isdigit", a, {});
         return Value::boolean(all_chars(s.as_string(), pystr::is_digit));
       }},
      {"isnumeric",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("isnumeric", a, {});
         return Value::boolean(all_chars(s.as_string(), pystr::is_digit));
       }},
      {"isdecimal",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("isdecimal", a, {});
         return Value::boolean(all_chars(s.as_string(), pystr::is_digit));
       }},
      {"isalpha",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("isalpha", a, {});
         return Value::boolean(all_chars(s.as_string(), pystr::is_alpha));
       }},
      {"isalnum",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("isalnum", a, {});
         return Value::boolean(
             all_chars(s.as_string(), [](char32_t c) { return pystr::is_alpha(c) || pystr::is_digit(c); }));
       }},
      {"isspace",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("isspace", a, {});
         return Value::boolean(all_chars(s.as_string(), pystr::is_space));
       }},
      {"islower",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("islower", a, {});
         const std::string& str = s.as_string();
         return Value::boolean(pystr::lower(str) == str && pystr::upper(str) != str);
       }},
      {"isupper",
       [](const Value& s, CallArgs& a, Interpreter&) {
         BoundArgs b("isupper", a, {});
         const std::string& str = s.as_string();
         return Value::boolean(pystr::upper(str) == str && pystr::lower(str) != str);
       }},
  };
  return kMethods;
}

Value list_index(const Value& self, CallArgs& args, Interpreter&) {
  BoundArgs b("index", args, {"value"});
  const auto& items = self.items();
  for (size_t i = 0; i < items.size(); ++i) {
    if (equals(items[i], b[0])) return Value::integer(static_cast<int64_t>(i));
  }
  detail::throw_value_error(fmt::format("{} is not in list", to_repr(b[0])));
}

Value list_count(const Value& self, CallArgs& args, Interpreter&) {
  BoundArgs b("count", args, {"value"});
  int64_t n = 0;
  for (const auto& x : self.items()) n += equals(x, b[0]) ? 1 : 0;
  return Value::integer(n);
}

Value list_copy(const Value& self, CallArgs& args, Interpreter&) {
  BoundArgs b("copy", args, {});
  return Value::list(self.items());
}

Value dict_items(const Value& self, CallArgs& args, Interpreter&) {
  BoundArgs b("items", args, {});
  std::vector<Value> out;
  for (const auto& [k, v] : self.as_dict().entries()) out.push_back(Value::tuple({k, v}));
  return Value::list(std::move(out));
}

Value dict_keys(const Value& self, CallArgs& args, Interpreter&) {
  BoundArgs b("keys", args, {});
  return Value::list(iterate(self));
}

Value dict_values(const Value& self, CallArgs& args, Interpreter&) {
  BoundArgs b("values", args, {});
  std::vector<Value> out;
  for (const auto& entry : self.as_dict().entries()) out.push_back(entry.second);
  return Value::list(std::move(out));
}

Value dict_get(const Value& self, CallArgs& args, Interpreter&) {
  BoundArgs b("get", args, {"key", "default"});
  if (!b.has(0)) detail::throw_type_error("get expected at least 1 argument, got 0");
  const Value* v = self.as_dict().find(b[0]);
  if (v != nullptr) return *v;
  return b.get(1, Value::none());
}

Value dict_copy(const Value& self, CallArgs& args, Interpreter&) {
  BoundArgs b("copy", args, {});
  return Value::dict(self.as_dict());
}

Value bind(const Value& self, std::string name, Method method) {
  return Value::function(std::move(name), [self, method](CallArgs& args, Interpreter& interp) {
    return method(self, args, interp);
  });
}

Value unsafe(const Value& self, const std::string& name) {
  const std::string type = type_name(self);
  return Value::function(name, [name, type](CallArgs&, Interpreter&) -> Value {
    detail::throw_fault(detail::Fault::Kind::kSecurity,
                        fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, type));
  });
}

}  // namespace

std::optional<Value> bound_method(const Value& obj, const std::string& name) {
  if (obj.is_string()) {
    for (const auto& [n, m] : string_methods()) {
      if (n != name) continue;
      // Every str method scans its string: that is the work charged for the call.
      return Value::function(name, [obj, m = m](CallArgs& args, Interpreter& interp) {
        interp.charge_string(obj.as_string().size());
        return m(obj, args, interp);
      });
    }
    return std::nullopt;
  }
  if (obj.is_list()) {
    if (name == "index") return bind(obj, name, list_index);
    if (name == "count") return bind(obj, name, list_count);
    if (!obj.is_tuple()) {
      if (name == "copy") return bind(obj, name, list_copy);
      static constexpr std::string_view kMutating[] = {"append", "extend",  "insert", "pop",
                                                       "remove", "reverse", "sort",   "clear"};
      for (std::string_view m : kMutating) {
        if (m == name) return unsafe(obj, name);
      }
    }
    return std::nullopt;
  }
  if (obj.is_dict()) {
    if (name == "items") return bind(obj, name, dict_items);
    if (name == "keys") return bind(obj, name, dict_keys);
    if (name == "values") return bind(obj, name, dict_values);
    if (name == "get") return bind(obj, name, dict_get);
    if (name == "copy") return bind(obj, name, dict_copy);
    static constexpr std::string_view kMutating[] = {"pop", "popitem", "setdefault", "update", "clear"};
    for (std::string_view m : kMutating) {
      if (m == name) return unsafe(obj, name);
    }
  }
  return std::nullopt;
}

}  // namespace ds::jinja::builtins
