// jinja2's builtin tests (`x is defined`, `x is divisibleby 3`, ...).
#include <fmt/format.h>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/pystr.h"

namespace ds::jinja::builtins {
namespace {

const Value& other(CallArgs& a, std::string_view test) {
  if (a.args.empty()) detail::throw_type_error(fmt::format("{}() missing required argument", test));
  return a.args[0];
}

bool t_defined(Interpreter&, const Value& v, CallArgs&) {
  return !v.is_undefined();
}
bool t_undefined(Interpreter&, const Value& v, CallArgs&) {
  return v.is_undefined();
}
bool t_none(Interpreter&, const Value& v, CallArgs&) {
  return v.is_none();
}
bool t_boolean(Interpreter&, const Value& v, CallArgs&) {
  return v.is_bool();
}
bool t_false(Interpreter&, const Value& v, CallArgs&) {
  return v.is_bool() && !v.as_bool();
}
bool t_true(Interpreter&, const Value& v, CallArgs&) {
  return v.is_bool() && v.as_bool();
}
bool t_integer(Interpreter&, const Value& v, CallArgs&) {
  return v.is_int();
}
bool t_float(Interpreter&, const Value& v, CallArgs&) {
  return v.is_float();
}
bool t_number(Interpreter&, const Value& v, CallArgs&) {
  return v.is_number();
}
bool t_string(Interpreter&, const Value& v, CallArgs&) {
  return v.is_string();
}
bool t_mapping(Interpreter&, const Value& v, CallArgs&) {
  return v.is_dict();
}
bool t_callable(Interpreter&, const Value& v, CallArgs&) {
  return v.is_function();
}
bool t_escaped(Interpreter&, const Value&, CallArgs&) {
  return false;
}

// Undefined iterates as empty and has a length, so jinja2 calls it iterable and a sequence.
bool t_iterable(Interpreter&, const Value& v, CallArgs&) {
  return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
}
bool t_sequence(Interpreter&, const Value& v, CallArgs&) {
  return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
}

bool t_sameas(Interpreter&, const Value& v, CallArgs& a) {
  const Value& o = other(a, "sameas");
  if (v.type() != o.type()) return false;
  switch (v.type()) {
    case Value::Type::kUndefined:
      return false;
    case Value::Type::kNone:
      return true;
    case Value::Type::kBool:
      return v.as_bool() == o.as_bool();
    case Value::Type::kInt:
      // CPython caches small ints, which is what `is` sees for them.
      return v.as_int() == o.as_int() && v.as_int() >= -5 && v.as_int() <= 256;
    case Value::Type::kString:
      // Equal string constants of one template are one object in CPython.
      return v.as_string() == o.as_string();
    default:
      return v.identity() == o.identity();
  }
}

bool t_in(Interpreter&, const Value& v, CallArgs& a) {
  return contains(other(a, "in"), v);
}

bool t_lower(Interpreter&, const Value& v, CallArgs&) {
  const std::string s = to_str(v);
  return pystr::lower(s) == s && pystr::upper(s) != s;
}

bool t_upper(Interpreter&, const Value& v, CallArgs&) {
  const std::string s = to_str(v);
  return pystr::upper(s) == s && pystr::lower(s) != s;
}

bool t_even(Interpreter& interp, const Value& v, CallArgs&) {
  return equals(binary(BinaryOp::kMod, v, Value::integer(2), interp), Value::integer(0));
}

bool t_odd(Interpreter& interp, const Value& v, CallArgs&) {
  return equals(binary(BinaryOp::kMod, v, Value::integer(2), interp), Value::integer(1));
}

bool t_divisibleby(Interpreter& interp, const Value& v, CallArgs& a) {
  return equals(binary(BinaryOp::kMod, v, other(a, "divisibleby"), interp), Value::integer(0));
}

bool t_eq(Interpreter&, const Value& v, CallArgs& a) {
  return equals(v, other(a, "eq"));
}
bool t_ne(Interpreter&, const Value& v, CallArgs& a) {
  return !equals(v, other(a, "ne"));
}
bool t_lt(Interpreter&, const Value& v, CallArgs& a) {
  return less_than(v, other(a, "lt"));
}
bool t_le(Interpreter&, const Value& v, CallArgs& a) {
  const Value& o = other(a, "le");
  return less_than(v, o) || equals(v, o);
}
bool t_gt(Interpreter&, const Value& v, CallArgs& a) {
  return less_than(other(a, "gt"), v);
}
bool t_ge(Interpreter&, const Value& v, CallArgs& a) {
  const Value& o = other(a, "ge");
  return less_than(o, v) || equals(v, o);
}

bool t_filter(Interpreter& interp, const Value& v, CallArgs&) {
  return v.is_string() && interp.has_filter(v.as_string());
}
bool t_test(Interpreter& interp, const Value& v, CallArgs&) {
  return v.is_string() && interp.has_test(v.as_string());
}

struct NamedTest {
  std::string_view name;
  TestFn fn;
};

constexpr NamedTest kTests[] = {
    {"!=", t_ne},
    {"<", t_lt},
    {"<=", t_le},
    {"==", t_eq},
    {">", t_gt},
    {">=", t_ge},
    {"boolean", t_boolean},
    {"callable", t_callable},
    {"defined", t_defined},
    {"divisibleby", t_divisibleby},
    {"eq", t_eq},
    {"equalto", t_eq},
    {"escaped", t_escaped},
    {"even", t_even},
    {"false", t_false},
    {"filter", t_filter},
    {"float", t_float},
    {"ge", t_ge},
    {"greaterthan", t_gt},
    {"gt", t_gt},
    {"in", t_in},
    {"integer", t_integer},
    {"iterable", t_iterable},
    {"le", t_le},
    {"lessthan", t_lt},
    {"lower", t_lower},
    {"lt", t_lt},
    {"mapping", t_mapping},
    {"ne", t_ne},
    {"none", t_none},
    {"number", t_number},
    {"odd", t_odd},
    {"sameas", t_sameas},
    {"sequence", t_sequence},
    {"string", t_string},
    {"test", t_test},
    {"true", t_true},
    {"undefined", t_undefined},
    {"upper", t_upper},
};

}  // namespace

TestFn find_test(std::string_view name) {
  for (const auto& t : kTests) {
    if (t.name == name) return t.fn;
  }
  return nullptr;
}

}  // namespace ds::jinja::builtins
