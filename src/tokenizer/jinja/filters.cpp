// jinja2's builtin filters on strings and numbers, plus transformers' tojson. The filters over
// sequences and mappings are in filters_sequence.cpp.
#include <fmt/format.h>
#include <fmt/printf.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/pystr.h"

namespace ds::jinja::builtins {
namespace {

Value str_value(Interpreter& interp, std::string s) {
  interp.charge_string(s.size());
  return Value::string(std::move(s));
}

Value f_abs(Interpreter&, const Value& v, CallArgs& a) {
  BoundArgs b("abs", a, {});
  fail_if_undefined(v);
  if (v.is_integral()) return Value::integer(std::llabs(v.as_int()));
  if (v.is_float()) return Value::number(std::fabs(v.as_float()));
  detail::throw_type_error(fmt::format("bad operand type for abs(): '{}'", type_name(v)));
}

Value f_attr(Interpreter&, const Value& v, CallArgs& a) {
  // Python's getattr() only: unlike `v.name`, a dict's keys are not attributes here.
  BoundArgs b("attr", a, {"name"});
  fail_if_undefined(v);
  const std::string name = to_str(b[0]);
  if (v.is_namespace()) {
    if (const Value* x = v.as_dict().find(name)) return *x;
  } else if (auto method = bound_method(v, name)) {
    return *method;
  }
  return Value::undefined(fmt::format("'{} object' has no attribute '{}'", type_name(v), name));
}

Value f_capitalize(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("capitalize", a, {});
  return str_value(interp, pystr::capitalize(to_str(v)));
}

Value f_center(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("center", a, {"width"});
  const std::string s = to_str(v);
  const int64_t width = b.has(0) ? b[0].as_int() : 80;
  const auto len = static_cast<int64_t>(pystr::length(s));
  if (width <= len) return Value::string(s);
  interp.check_string_size(static_cast<uint64_t>(width - len) + s.size());
  const int64_t total = width - len;
  const int64_t left = total / 2 + (total & width & 1);
  return str_value(interp, std::string(static_cast<size_t>(left), ' ') + s +
                               std::string(static_cast<size_t>(total - left), ' '));
}

Value f_default(Interpreter&, const Value& v, CallArgs& a) {
  BoundArgs b("default", a, {"default_value", "boolean"});
  const Value fallback = b.get(0, Value::string(""));
  const bool boolean = b.has(1) && truthy(b[1]);
  if (v.is_undefined() || (boolean && !truthy(v))) return fallback;
  return v;
}

Value f_escape(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("escape", a, {});
  std::string out;
  for (char c : to_str(v)) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return str_value(interp, std::move(out));
}

Value f_float(Interpreter&, const Value& v, CallArgs& a) {
  BoundArgs b("float", a, {"default"});
  const Value fallback = b.get(0, Value::number(0.0));
  fail_if_undefined(v);  // float(Undefined) raises UndefinedError, which the filter does not catch
  if (v.is_number()) return Value::number(v.as_float());
  if (v.is_string()) {
    if (auto d = pystr::parse_float(v.as_string())) return Value::number(*d);
  }
  return fallback;
}

Value f_format(Interpreter& interp, const Value& v, CallArgs& a) {
  if (!a.args.empty() && !a.kwargs.empty()) {
    detail::throw_type_error("can't handle positional and keyword arguments at the same time");
  }
  Value args;
  if (!a.kwargs.empty()) {
    DictObject d;
    for (auto& [k, val] : a.kwargs) d.set(k, val);
    args = Value::dict(std::move(d));
  } else {
    args = Value::tuple(a.args);
  }
  return str_value(interp, percent_format(to_str(v), args, interp.limits().max_output_bytes));
}

Value f_indent(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("indent", a, {"width", "first", "blank"});
  fail_if_undefined(v);
  if (!v.is_string()) {
    detail::throw_type_error(fmt::format("unsupported operand type(s) for +=: '{}' and 'str'", type_name(v)));
  }
  std::string indention;
  if (b.has(0) && b[0].is_string()) {
    indention = b[0].as_string();
  } else {
    const int64_t width = b.has(0) ? b[0].as_int() : 4;
    interp.check_string_size(static_cast<uint64_t>(std::max<int64_t>(width, 0)));
    indention = std::string(static_cast<size_t>(std::max<int64_t>(width, 0)), ' ');
  }
  const bool first = b.has(1) && truthy(b[1]);
  const bool blank = b.has(2) && truthy(b[2]);
  const std::string text = to_str(v);
  const std::vector<std::string> lines = pystr::splitlines(text + "\n", false);
  // Each line gets the indentation at most once; checked before building, as it multiplies.
  const auto indented = static_cast<unsigned __int128>(lines.size()) * (indention.size() + 1) + text.size();
  interp.check_string_size(static_cast<uint64_t>(std::min<unsigned __int128>(indented, UINT64_MAX)));
  std::string rv;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) rv += "\n" + indention;
      rv += lines[i];
    }
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i)
      rv += "\n" + (lines[i].empty() ? lines[i] : indention + lines[i]);
  }
  if (first) rv = indention + rv;
  return str_value(interp, std::move(rv));
}

Value f_int(Interpreter&, const Value& v, CallArgs& a) {
  BoundArgs b("int", a, {"default", "base"});
  const Value fallback = b.get(0, Value::integer(0));
  const int base = b.has(1) ? static_cast<int>(b[1].as_int()) : 10;
  fail_if_undefined(v);  // int(Undefined) raises UndefinedError, which the filter does not catch
  if (v.is_integral()) return Value::integer(v.as_int());
  if (v.is_float()) {
    const double d = v.as_float();
    if (!std::isfinite(d)) return fallback;
    return Value::integer(float_to_int(d));
  }
  if (v.is_string()) {
    if (auto i = pystr::parse_int(v.as_string(), base)) return Value::integer(*i);
    if (auto d = pystr::parse_float(v.as_string()); d && std::isfinite(*d))
      return Value::integer(float_to_int(*d));
  }
  return fallback;
}

Value f_lower(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("lower", a, {});
  return str_value(interp, pystr::lower(to_str(v)));
}

Value f_replace(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("replace", a, {"old", "new", "count"});
  const int64_t count = b.has(2) && !b[2].is_none() ? b[2].as_int() : -1;
  return str_value(interp, pystr::replace(to_str(v), to_str(b[0]), to_str(b[1]), count));
}

Value f_round(Interpreter&, const Value& v, CallArgs& a) {
  BoundArgs b("round", a, {"precision", "method"});
  const int64_t precision = b.has(0) ? b[0].as_int() : 0;
  const std::string method = b.has(1) ? to_str(b[1]) : "common";
  if (method != "common" && method != "ceil" && method != "floor") {
    detail::throw_type_error("method must be common, ceil or floor");
  }
  fail_if_undefined(v);
  if (!v.is_number())
    detail::throw_type_error(fmt::format("type {} doesn't define __round__ method", type_name(v)));
  if (method == "common") {
    if (v.is_integral()) return Value::integer(v.as_int());  // round(int, n) stays an int
    if (precision < 0) {
      // Python: round(x / 10**-n) half-to-even, times 10**-n. (-precision as a double: negating
      // INT64_MIN overflows.)
      const double scale = std::pow(10.0, -static_cast<double>(precision));
      // 10**-n past the doubles (n < -308): every double rounds to zero, not to 0 * inf = nan.
      if (std::isinf(scale)) return Value::number(std::copysign(0.0, v.as_float()));
      return Value::number(std::nearbyint(v.as_float() / scale) * scale);
    }
    // printf rounds the exact binary value half-to-even, as Python's round() does.
    const int digits = static_cast<int>(std::clamp<int64_t>(precision, 0, 300));
    const std::string s = fmt::sprintf("%.*f", digits, v.as_float());
    return Value::number(std::strtod(s.c_str(), nullptr));
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double x = v.as_float() * scale;
  return Value::number((method == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
}

Value f_safe(Interpreter&, const Value& v, CallArgs& a) {
  BoundArgs b("safe", a, {});
  // Markup only matters with autoescape, which transformers leaves off; the value passes as is.
  return v.is_string() ? v : Value::string(to_str(v));
}

Value f_string(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("string", a, {});
  return v.is_string() ? v : str_value(interp, to_str(v));
}

Value f_title(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("title", a, {});
  // jinja2 capitalizes after any run of whitespace, "-", "(", "{", "[" or "<" (not str.title()).
  const std::u32string u = pystr::decode(to_str(v));
  std::u32string out;
  bool word_start = true;
  for (char32_t c : u) {
    const bool boundary = pystr::is_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    if (boundary) {
      out.push_back(c);
      word_start = true;
    } else {
      out.push_back(word_start ? pystr::to_upper(c) : pystr::to_lower(c));
      word_start = false;
    }
  }
  return str_value(interp, pystr::encode(out));
}

Value f_tojson(Interpreter& interp, const Value& v, CallArgs& a) {
  // transformers replaces jinja2's tojson (which escapes HTML) with
  // json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
  BoundArgs b("tojson", a, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonDumpOptions opt;
  opt.ensure_ascii = b.has(0) && truthy(b[0]);
  if (b.has(1) && !b[1].is_none()) {
    if (b[1].is_string()) {
      opt.indent = b[1].as_string();
    } else if (b[1].is_integral()) {
      opt.indent = std::string(static_cast<size_t>(std::clamp<int64_t>(b[1].as_int(), 0, 1 << 20)), ' ');
    } else {
      detail::throw_type_error("indent must be an int or a string");
    }
  }
  if (b.has(2) && !b[2].is_none()) {
    if (!b[2].is_list() || b[2].items().size() != 2 || !b[2].items()[0].is_string() ||
        !b[2].items()[1].is_string()) {
      detail::throw_type_error("separators must be a (item_separator, key_separator) pair of strings");
    }
    opt.item_separator = b[2].items()[0].as_string();
    opt.key_separator = b[2].items()[1].as_string();
  } else if (opt.indent) {
    opt.item_separator = ",";
  }
  opt.sort_keys = b.has(3) && truthy(b[3]);
  opt.max_bytes = interp.limits().max_output_bytes;
  return str_value(interp, to_json(v, opt));
}

Value f_trim(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("trim", a, {"chars"});
  std::optional<std::string> chars;
  if (b.has(0) && !b[0].is_none()) chars = to_str(b[0]);
  return str_value(interp, pystr::strip(to_str(v), chars, true, true));
}

Value f_truncate(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("truncate", a, {"length", "killwords", "end", "leeway"});
  const std::u32string s = pystr::decode(to_str(v));
  const int64_t length = b.has(0) ? b[0].as_int() : 255;
  const bool killwords = b.has(1) && truthy(b[1]);
  const std::u32string end = pystr::decode(b.has(2) ? to_str(b[2]) : "...");
  const int64_t leeway = b.has(3) && !b[3].is_none() ? b[3].as_int() : 5;
  const auto len = static_cast<int64_t>(s.size());
  // In __int128: length and leeway are the template's and may sit at the ends of int64.
  if (len <= static_cast<__int128>(length) + leeway) return str_value(interp, pystr::encode(s));
  const auto keep = static_cast<size_t>(
      std::clamp<__int128>(static_cast<__int128>(length) - static_cast<__int128>(end.size()), 0, len));
  std::u32string result = s.substr(0, keep);
  if (!killwords) {
    const size_t space = result.rfind(U' ');
    if (space != std::u32string::npos) result.resize(space);
  }
  return str_value(interp, pystr::encode(result + end));
}

Value f_upper(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("upper", a, {});
  return str_value(interp, pystr::upper(to_str(v)));
}

Value f_wordcount(Interpreter&, const Value& v, CallArgs& a) {
  BoundArgs b("wordcount", a, {});
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : pystr::decode(to_str(v))) {
    const bool word = pystr::is_alpha(c) || pystr::is_digit(c) || c == '_';
    if (word && !in_word) ++n;
    in_word = word;
  }
  return Value::integer(n);
}

struct NamedFilter {
  std::string_view name;
  FilterFn fn;
};

constexpr NamedFilter kFilters[] = {
    {"abs", f_abs},
    {"attr", f_attr},
    {"capitalize", f_capitalize},
    {"center", f_center},
    {"d", f_default},
    {"default", f_default},
    {"e", f_escape},
    {"escape", f_escape},
    {"float", f_float},
    {"forceescape", f_escape},
    {"format", f_format},
    {"indent", f_indent},
    {"int", f_int},
    {"lower", f_lower},
    {"replace", f_replace},
    {"round", f_round},
    {"safe", f_safe},
    {"string", f_string},
    {"title", f_title},
    {"tojson", f_tojson},
    {"trim", f_trim},
    {"truncate", f_truncate},
    {"upper", f_upper},
    {"wordcount", f_wordcount},
};

}  // namespace

FilterFn find_filter(std::string_view name) {
  for (const auto& f : kFilters) {
    if (f.name == name) return f.fn;
  }
  return find_sequence_filter(name);
}

}  // namespace ds::jinja::builtins
