// Python arithmetic and string formatting operators.
#include <fmt/format.h>
#include <fmt/printf.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <string>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/pystr.h"

namespace ds::jinja::builtins {
namespace {

[[noreturn]] void unsupported(std::string_view op, const Value& a, const Value& b) {
  detail::throw_type_error(
      fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a), type_name(b)));
}

// Python ints do not overflow; templates that need more than 64 bits are not chat templates.
void check_overflow(bool overflow) {
  if (overflow) detail::throw_value_error("integer result out of range");
}

// A width or precision in a format spec. Above max_bytes it could only ask for a string past the limit on
// one string, and above INT_MAX fmt::sprintf cannot take it: both are a LimitError, found while reading
// the digits so that a long run of them cannot overflow.
size_t read_spec_number(const std::string& spec, size_t& i, size_t max_bytes) {
  const size_t cap = std::min<size_t>(max_bytes, std::numeric_limits<int>::max());
  size_t n = 0;
  while (i < spec.size() && std::isdigit(static_cast<unsigned char>(spec[i]))) {
    n = n * 10 + static_cast<size_t>(spec[i++] - '0');
    if (n > cap) detail::throw_limit(fmt::format("string exceeds {} bytes", max_bytes));
  }
  return n;
}

Value repeat(const Value& seq, int64_t times, Interpreter& interp) {
  if (times < 0) times = 0;
  if (seq.is_string()) {
    const std::string& s = seq.as_string();
    const auto total = static_cast<unsigned __int128>(s.size()) * static_cast<uint64_t>(times);
    if (total > interp.limits().max_output_bytes) {
      detail::throw_limit(
          fmt::format("string repetition exceeds {} bytes", interp.limits().max_output_bytes));
    }
    interp.charge_string(static_cast<size_t>(total));
    std::string out;
    out.reserve(static_cast<size_t>(total));
    for (int64_t i = 0; i < times; ++i) out += s;
    return Value::string(std::move(out));
  }
  const auto& items = seq.items();
  const auto total = static_cast<unsigned __int128>(items.size()) * static_cast<uint64_t>(times);
  if (total > static_cast<uint64_t>(interp.limits().max_loop_iterations)) {
    detail::throw_limit(fmt::format("list repetition exceeds {} items", interp.limits().max_loop_iterations));
  }
  interp.charge_items(static_cast<size_t>(total));
  std::vector<Value> out;
  out.reserve(static_cast<size_t>(total));
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), items.begin(), items.end());
  return seq.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

double floor_mod(double a, double b) {
  double m = std::fmod(a, b);
  if (m != 0.0 && ((m < 0) != (b < 0))) m += b;
  return m;
}

// Python's format(value, spec): [[fill]align][sign][#][0][width][,|_][.precision][type].
std::string format_spec(const Value& value, const std::string& spec, size_t max_bytes) {
  if (spec.empty()) return to_str(value);
  size_t i = 0;
  std::string fill = " ";
  char align = 0;
  auto is_align = [](char c) { return c == '<' || c == '>' || c == '=' || c == '^'; };
  if (spec.size() >= 2 && is_align(spec[1])) {
    fill = spec.substr(0, 1);
    align = spec[1];
    i = 2;
  } else if (is_align(spec[0])) {
    align = spec[0];
    i = 1;
  }
  char sign = '-';
  if (i < spec.size() && (spec[i] == '+' || spec[i] == '-' || spec[i] == ' ')) sign = spec[i++];
  bool alternate = false;
  if (i < spec.size() && spec[i] == '#') alternate = true, ++i;
  if (i < spec.size() && spec[i] == '0') {
    if (align == 0) fill = "0", align = '=';
    ++i;
  }
  const size_t width = read_spec_number(spec, i, max_bytes);
  char grouping = 0;
  if (i < spec.size() && (spec[i] == ',' || spec[i] == '_')) grouping = spec[i++];
  int precision = -1;
  if (i < spec.size() && spec[i] == '.') {
    ++i;
    precision = static_cast<int>(read_spec_number(spec, i, max_bytes));
  }
  char type = i < spec.size() ? spec[i++] : 0;
  if (i != spec.size()) detail::throw_value_error("Invalid format specifier");

  std::string body;
  std::string prefix;  // sign and 0x-style prefix, placed before zero padding
  if (value.is_string() || (!value.is_number() && type == 0) || type == 's') {
    if (!value.is_string() && type == 's')
      detail::throw_value_error("Unknown format code 's' for object of this type");
    body = to_str(value);
    if (precision >= 0) body = pystr::encode(pystr::decode(body).substr(0, static_cast<size_t>(precision)));
    if (align == 0) align = '<';
  } else {
    if (!value.is_number()) detail::throw_type_error("unsupported format string");
    const bool as_int =
        value.is_integral() && (type == 0 || std::string_view("dbxXoc").find(type) != std::string_view::npos);
    if (as_int) {
      int64_t n = value.as_int();
      const bool negative = n < 0;
      const uint64_t mag = negative ? 0 - static_cast<uint64_t>(n) : static_cast<uint64_t>(n);
      if (type == 'c') {
        pystr::append_utf8(body, static_cast<char32_t>(n));
      } else if (type == 'x' || type == 'X' || type == 'o' || type == 'b') {
        body = type == 'x'   ? fmt::format("{:x}", mag)
               : type == 'X' ? fmt::format("{:X}", mag)
               : type == 'o' ? fmt::format("{:o}", mag)
                             : fmt::format("{:b}", mag);
        if (alternate) prefix = type == 'x' ? "0x" : type == 'X' ? "0X" : type == 'o' ? "0o" : "0b";
      } else {
        body = fmt::format("{}", mag);
      }
      prefix = (negative ? "-" : sign == '+' ? "+" : sign == ' ' ? " " : "") + prefix;
    } else {
      const double d = value.as_float();
      const bool negative = std::signbit(d) && !std::isnan(d);
      const double mag = std::fabs(d);
      if (type == 0 && precision < 0) {
        body = pystr::float_repr(mag);
      } else if (type == '%') {
        body = fmt::sprintf("%.*f", precision < 0 ? 6 : precision, mag * 100) + "%";
      } else {
        const char conv = type == 0 ? 'g' : type == 'n' ? 'g' : type;
        if (std::string_view("eEfFgG").find(conv) == std::string_view::npos) {
          detail::throw_value_error(fmt::format("Unknown format code '{}' for object of type 'float'", type));
        }
        body = fmt::sprintf(std::string("%.*") + conv, precision < 0 ? 6 : precision, mag);
      }
      prefix = negative ? "-" : sign == '+' ? "+" : sign == ' ' ? " " : "";
    }
    if (grouping != 0) {
      const size_t digits_end = body.find_first_not_of("0123456789");
      const size_t end = digits_end == std::string::npos ? body.size() : digits_end;
      std::string grouped;
      for (size_t k = 0; k < end; ++k) {
        if (k > 0 && (end - k) % 3 == 0) grouped.push_back(grouping);
        grouped.push_back(body[k]);
      }
      body = grouped + body.substr(end);
    }
    if (align == 0) align = '>';
  }
  const size_t len = pystr::length(prefix) + pystr::length(body);
  if (width <= len) return prefix + body;
  const size_t pad = width - len;
  auto repeat_fill = [&](size_t k) {
    std::string r;
    for (size_t j = 0; j < k; ++j) r += fill;
    return r;
  };
  switch (align) {
    case '<':
      return prefix + body + repeat_fill(pad);
    case '^':
      return repeat_fill(pad / 2) + prefix + body + repeat_fill(pad - pad / 2);
    case '=':
      return prefix + repeat_fill(pad) + body;
    default:
      return repeat_fill(pad) + prefix + body;
  }
}

}  // namespace

Value binary(BinaryOp op, const Value& a, const Value& b, Interpreter& interp) {
  fail_if_undefined(a);
  // str % Undefined is formatting with a mapping-like argument (Undefined has __getitem__), not an error
  // until a key is looked up.
  if (!(op == BinaryOp::kMod && a.is_string())) fail_if_undefined(b);
  const bool ints = a.is_integral() && b.is_integral();
  const bool nums = a.is_number() && b.is_number();
  switch (op) {
    case BinaryOp::kAdd: {
      if (ints) {
        int64_t r = 0;
        check_overflow(__builtin_add_overflow(a.as_int(), b.as_int(), &r));
        return Value::integer(r);
      }
      if (nums) return Value::number(a.as_float() + b.as_float());
      if (a.is_string() && b.is_string()) {
        const size_t n = a.as_string().size() + b.as_string().size();
        if (n > interp.limits().max_output_bytes) {
          detail::throw_limit(fmt::format("string exceeds {} bytes", interp.limits().max_output_bytes));
        }
        interp.charge_string(n);
        return Value::string(a.as_string() + b.as_string());
      }
      if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
        // Bounded and charged as list repetition is: doubling a list in a loop is 2^n work.
        const size_t n = a.items().size() + b.items().size();
        if (n > static_cast<uint64_t>(interp.limits().max_loop_iterations)) {
          detail::throw_limit(
              fmt::format("list concatenation exceeds {} items", interp.limits().max_loop_iterations));
        }
        interp.charge_items(n);
        std::vector<Value> out = a.items();
        out.insert(out.end(), b.items().begin(), b.items().end());
        return a.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
      }
      if (a.is_string()) {
        detail::throw_type_error(fmt::format("can only concatenate str (not \"{}\") to str", type_name(b)));
      }
      if (a.is_list() && !a.is_tuple()) {
        detail::throw_type_error(fmt::format("can only concatenate list (not \"{}\") to list", type_name(b)));
      }
      unsupported("+", a, b);
    }
    case BinaryOp::kSub: {
      if (ints) {
        int64_t r = 0;
        check_overflow(__builtin_sub_overflow(a.as_int(), b.as_int(), &r));
        return Value::integer(r);
      }
      if (nums) return Value::number(a.as_float() - b.as_float());
      unsupported("-", a, b);
    }
    case BinaryOp::kMul: {
      if (ints) {
        int64_t r = 0;
        check_overflow(__builtin_mul_overflow(a.as_int(), b.as_int(), &r));
        return Value::integer(r);
      }
      if (nums) return Value::number(a.as_float() * b.as_float());
      if ((a.is_string() || a.is_list()) && b.is_integral()) return repeat(a, b.as_int(), interp);
      if (a.is_integral() && (b.is_string() || b.is_list())) return repeat(b, a.as_int(), interp);
      unsupported("*", a, b);
    }
    case BinaryOp::kDiv: {
      if (!nums) unsupported("/", a, b);
      if (b.as_float() == 0.0) detail::throw_fault(detail::Fault::Kind::kValue, "division by zero");
      return Value::number(a.as_float() / b.as_float());
    }
    case BinaryOp::kFloorDiv: {
      if (!nums) unsupported("//", a, b);
      if (b.as_float() == 0.0) {
        detail::throw_fault(detail::Fault::Kind::kValue, "integer division or modulo by zero");
      }
      if (ints) {
        const int64_t x = a.as_int();
        const int64_t y = b.as_int();
        if (x == std::numeric_limits<int64_t>::min() && y == -1)
          detail::throw_value_error("integer result out of range");
        int64_t q = x / y;
        if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
        return Value::integer(q);
      }
      return Value::number(std::floor(a.as_float() / b.as_float()));
    }
    case BinaryOp::kMod: {
      if (a.is_string()) {
        std::string s = percent_format(a.as_string(), b, interp.limits().max_output_bytes);
        interp.charge_string(s.size());
        return Value::string(std::move(s));
      }
      if (!nums) unsupported("%", a, b);
      if (b.as_float() == 0.0) {
        detail::throw_fault(detail::Fault::Kind::kValue, "integer division or modulo by zero");
      }
      if (ints) {
        const int64_t x = a.as_int();
        const int64_t y = b.as_int();
        if (y == -1) return Value::integer(0);
        int64_t m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) m += y;
        return Value::integer(m);
      }
      return Value::number(floor_mod(a.as_float(), b.as_float()));
    }
    case BinaryOp::kPow: {
      if (!nums) unsupported("** or pow()", a, b);
      if (ints && b.as_int() >= 0) {
        int64_t result = 1;
        int64_t base = a.as_int();
        int64_t e = b.as_int();
        while (e > 0) {
          if (e & 1) check_overflow(__builtin_mul_overflow(result, base, &result));
          e >>= 1;
          if (e > 0) check_overflow(__builtin_mul_overflow(base, base, &base));
        }
        return Value::integer(result);
      }
      if (a.as_float() == 0.0 && b.as_float() < 0) {
        detail::throw_value_error("0.0 cannot be raised to a negative power");
      }
      return Value::number(std::pow(a.as_float(), b.as_float()));
    }
    case BinaryOp::kAnd:
    case BinaryOp::kOr:
      break;  // short-circuit operators are evaluated by the interpreter
  }
  detail::throw_type_error("unsupported operator");
}

Value negate(const Value& v) {
  fail_if_undefined(v);
  if (v.is_integral()) {
    if (v.as_int() == std::numeric_limits<int64_t>::min())
      detail::throw_value_error("integer result out of range");
    return Value::integer(-v.as_int());
  }
  if (v.is_float()) return Value::number(-v.as_float());
  detail::throw_type_error(fmt::format("bad operand type for unary -: '{}'", type_name(v)));
}

int64_t float_to_int(double d) {
  if (std::isnan(d)) detail::throw_value_error("cannot convert float NaN to integer");
  // +-2^63 are exact doubles; every double in [-2^63, 2^63) truncates to an int64.
  if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) {
    detail::throw_value_error("integer result out of range");
  }
  return static_cast<int64_t>(d);
}

Value unary_plus(const Value& v) {
  fail_if_undefined(v);
  if (v.is_integral()) return Value::integer(v.as_int());
  if (v.is_float()) return v;
  detail::throw_type_error(fmt::format("bad operand type for unary +: '{}'", type_name(v)));
}

std::string percent_format(const std::string& format, const Value& args, size_t max_bytes) {
  // A tuple supplies positional values; a dict supplies %(name)s values; anything else is one value.
  // Python treats a non-tuple, non-str argument with __getitem__ (dict, list, Undefined) as a mapping:
  // it may go unused. Any other single argument must be consumed.
  const bool mapping = args.is_dict() || args.is_undefined() || (args.is_list() && !args.is_tuple());
  std::vector<Value> positional;
  if (args.is_tuple()) {
    positional = args.items();
  } else {
    positional.push_back(args);
  }
  size_t next_arg = 0;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out.push_back(format[i]);
      continue;
    }
    if (++i >= format.size()) detail::throw_value_error("incomplete format");
    const Value* value = nullptr;
    if (format[i] == '(') {
      const size_t close = format.find(')', i);
      if (close == std::string::npos) detail::throw_value_error("incomplete format key");
      fail_if_undefined(args);
      if (!args.is_dict()) detail::throw_type_error("format requires a mapping");
      value = args.as_dict().find(format.substr(i + 1, close - i - 1));
      if (value == nullptr) detail::throw_fault(detail::Fault::Kind::kValue, "format key not found");
      i = close + 1;
    }
    std::string spec = "%";
    // Python takes a flag any number of times; fmt reads a run of '0's as a width, so each goes in once.
    while (i < format.size() && std::string_view("-+ #0").find(format[i]) != std::string_view::npos) {
      if (spec.find(format[i]) == std::string::npos) spec.push_back(format[i]);
      ++i;
    }
    // Width and precision are read here, not by fmt::sprintf: it throws fmt::format_error past INT_MAX
    // and would build a string of any size below that.
    const size_t width = read_spec_number(format, i, max_bytes);
    if (width > 0) spec += std::to_string(width);
    if (i < format.size() && format[i] == '.') {
      ++i;
      spec += "." + std::to_string(read_spec_number(format, i, max_bytes));
    }
    if (i >= format.size()) detail::throw_value_error("incomplete format");
    const char conv = format[i];
    if (conv == '%') {
      out.push_back('%');
      continue;
    }
    if (value == nullptr) {
      if (mapping) {
        value = &args;
      } else {
        if (next_arg >= positional.size()) detail::throw_type_error("not enough arguments for format string");
        value = &positional[next_arg++];
      }
    }
    switch (conv) {
      case 's':
      case 'r':
      case 'a': {
        const std::string text = conv == 's' ? to_str(*value) : to_repr(*value);
        spec.push_back('s');
        out += fmt::sprintf(spec, text);
        break;
      }
      case 'd':
      case 'i':
      case 'u':
      case 'x':
      case 'X':
      case 'o':
      case 'c': {
        if (!value->is_number()) {
          detail::throw_type_error(
              fmt::format("%{} format: a real number is required, not {}", conv, type_name(*value)));
        }
        const int64_t n = value->is_float() ? float_to_int(value->as_float()) : value->as_int();
        if (conv == 'c') {
          pystr::append_utf8(out, static_cast<char32_t>(n));
          break;
        }
        spec += "ll";
        spec.push_back(conv == 'i' || conv == 'u' ? 'd' : conv);
        out += fmt::sprintf(spec, static_cast<long long>(n));
        break;
      }
      case 'f':
      case 'F':
      case 'e':
      case 'E':
      case 'g':
      case 'G':
        if (!value->is_number()) {
          detail::throw_type_error(fmt::format("must be real number, not {}", type_name(*value)));
        }
        spec.push_back(conv);
        out += fmt::sprintf(spec, value->as_float());
        break;
      default:
        detail::throw_value_error(fmt::format("unsupported format character '{}'", conv));
    }
  }
  if ((args.is_tuple() || !mapping) && next_arg < positional.size()) {
    detail::throw_type_error("not all arguments converted during string formatting");
  }
  return out;
}

std::string str_format(const std::string& format, const CallArgs& args, size_t max_bytes) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    const char c = format[i];
    if (c == '}') {
      if (i + 1 < format.size() && format[i + 1] == '}') ++i;
      out.push_back('}');
      continue;
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i + 1 < format.size() && format[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    const size_t close = format.find('}', i);
    if (close == std::string::npos) detail::throw_value_error("Single '{' encountered in format string");
    std::string field = format.substr(i + 1, close - i - 1);
    std::string spec;
    if (const size_t colon = field.find(':'); colon != std::string::npos) {
      spec = field.substr(colon + 1);
      field.resize(colon);
    }
    const Value* value = nullptr;
    if (field.empty()) {
      if (auto_index >= args.args.size())
        detail::throw_fault(detail::Fault::Kind::kValue, "Replacement index out of range");
      value = &args.args[auto_index++];
    } else if (std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
      const size_t idx = std::stoul(field);
      if (idx >= args.args.size())
        detail::throw_fault(detail::Fault::Kind::kValue, "Replacement index out of range");
      value = &args.args[idx];
    } else {
      for (const auto& [k, v] : args.kwargs) {
        if (k == field) value = &v;
      }
      if (value == nullptr)
        detail::throw_fault(detail::Fault::Kind::kValue, fmt::format("KeyError: '{}'", field));
    }
    out += format_spec(*value, spec, max_bytes);
    i = close;
  }
  return out;
}

}  // namespace ds::jinja::builtins
