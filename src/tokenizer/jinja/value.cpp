#include "tokenizer/jinja/value.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/pystr.h"

namespace ds::jinja {
namespace {

// Values built by a template can nest arbitrarily ({% set x = [x] %} in a loop); everything that
// recurses over a value stops here instead of overflowing the stack.
constexpr int kMaxValueDepth = 512;

void check_depth(int depth) {
  if (depth > kMaxValueDepth) detail::throw_limit("value nested too deeply");
}

const std::string kEmpty;

}  // namespace

// --- construction and access ----------------------------------------------------------------------

Value Value::undefined(std::string hint) {
  Value v;
  if (!hint.empty()) v.obj_ = std::make_shared<std::string>(std::move(hint));
  return v;
}

Value Value::none() {
  Value v;
  v.type_ = Type::kNone;
  return v;
}

Value Value::boolean(bool b) {
  Value v;
  v.type_ = Type::kBool;
  v.b_ = b;
  return v;
}

Value Value::integer(int64_t i) {
  Value v;
  v.type_ = Type::kInt;
  v.i_ = i;
  return v;
}

Value Value::number(double d) {
  Value v;
  v.type_ = Type::kFloat;
  v.f_ = d;
  return v;
}

Value Value::string(std::string s) {
  Value v;
  v.type_ = Type::kString;
  v.obj_ = std::make_shared<std::string>(std::move(s));
  return v;
}

Value Value::list(std::vector<Value> items) {
  Value v;
  v.type_ = Type::kList;
  v.obj_ = std::make_shared<ListObject>(ListObject{std::move(items), false});
  return v;
}

Value Value::tuple(std::vector<Value> items) {
  Value v;
  v.type_ = Type::kList;
  v.obj_ = std::make_shared<ListObject>(ListObject{std::move(items), true});
  return v;
}

Value Value::dict(DictObject d) {
  Value v;
  v.type_ = Type::kDict;
  v.obj_ = std::make_shared<DictObject>(std::move(d));
  return v;
}

Value Value::make_namespace(DictObject d) {
  Value v;
  v.type_ = Type::kNamespace;
  v.obj_ = std::make_shared<DictObject>(std::move(d));
  return v;
}

Value Value::function(std::string name, NativeFunction fn) {
  Value v;
  v.type_ = Type::kFunction;
  v.obj_ = std::make_shared<FunctionObject>(FunctionObject{std::move(name), std::move(fn)});
  return v;
}

bool Value::is_tuple() const {
  return type_ == Type::kList && static_cast<ListObject*>(obj_.get())->is_tuple;
}

double Value::as_float() const {
  if (type_ == Type::kFloat) return f_;
  return static_cast<double>(as_int());
}

const std::string& Value::as_string() const {
  if (type_ != Type::kString) return kEmpty;
  return *static_cast<std::string*>(obj_.get());
}

const std::vector<Value>& Value::items() const {
  return static_cast<ListObject*>(obj_.get())->items;
}

const DictObject& Value::as_dict() const {
  return *static_cast<DictObject*>(obj_.get());
}

DictObject& Value::namespace_attrs() const {
  return *static_cast<DictObject*>(obj_.get());
}

const FunctionObject& Value::as_function() const {
  return *static_cast<FunctionObject*>(obj_.get());
}

std::string Value::undefined_message() const {
  if (obj_) return *static_cast<std::string*>(obj_.get());
  return "value is undefined";
}

// --- dict ------------------------------------------------------------------------------------------

const Value* DictObject::find(std::string_view key) const {
  auto it = string_index_.find(std::string(key));
  return it == string_index_.end() ? nullptr : &entries_[it->second].second;
}

const Value* DictObject::find(const Value& key) const {
  if (key.is_string()) return find(key.as_string());
  for (const auto& [k, v] : entries_) {
    if (!k.is_string() && equals(k, key)) return &v;
  }
  return nullptr;
}

void DictObject::set(std::string_view key, Value value) {
  auto it = string_index_.find(std::string(key));
  if (it != string_index_.end()) {
    entries_[it->second].second = std::move(value);
    return;
  }
  string_index_.emplace(std::string(key), entries_.size());
  entries_.emplace_back(Value::string(std::string(key)), std::move(value));
}

void DictObject::set(const Value& key, Value value) {
  if (key.is_string()) return set(key.as_string(), std::move(value));
  for (auto& [k, v] : entries_) {
    if (!k.is_string() && equals(k, key)) {
      v = std::move(value);
      return;
    }
  }
  entries_.emplace_back(key, std::move(value));
}

// --- Python semantics ------------------------------------------------------------------------------

std::string type_name(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined:
      return "Undefined";
    case Value::Type::kNone:
      return "NoneType";
    case Value::Type::kBool:
      return "bool";
    case Value::Type::kInt:
      return "int";
    case Value::Type::kFloat:
      return "float";
    case Value::Type::kString:
      return "str";
    case Value::Type::kList:
      return v.is_tuple() ? "tuple" : "list";
    case Value::Type::kDict:
      return "dict";
    case Value::Type::kNamespace:
      return "Namespace";
    case Value::Type::kFunction:
      return "function";
  }
  return "object";
}

bool truthy(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined:
    case Value::Type::kNone:
      return false;
    case Value::Type::kBool:
      return v.as_bool();
    case Value::Type::kInt:
      return v.as_int() != 0;
    case Value::Type::kFloat:
      return v.as_float() != 0.0;
    case Value::Type::kString:
      return !v.as_string().empty();
    case Value::Type::kList:
      return !v.items().empty();
    case Value::Type::kDict:
      return !v.as_dict().empty();
    case Value::Type::kNamespace:
    case Value::Type::kFunction:
      return true;
  }
  return false;
}

namespace {

void append_repr(std::string& out, const Value& v, int depth);

void append_dict_body(std::string& out, const DictObject& d, int depth) {
  out.push_back('{');
  bool first = true;
  for (const auto& [k, val] : d.entries()) {
    if (!first) out += ", ";
    first = false;
    append_repr(out, k, depth + 1);
    out += ": ";
    append_repr(out, val, depth + 1);
  }
  out.push_back('}');
}

void append_str(std::string& out, const Value& v, int depth) {
  check_depth(depth);
  switch (v.type()) {
    case Value::Type::kUndefined:
      return;
    case Value::Type::kNone:
      out += "None";
      return;
    case Value::Type::kBool:
      out += v.as_bool() ? "True" : "False";
      return;
    case Value::Type::kInt:
      out += fmt::format("{}", v.as_int());
      return;
    case Value::Type::kFloat:
      out += pystr::float_repr(v.as_float());
      return;
    case Value::Type::kString:
      out += v.as_string();
      return;
    case Value::Type::kList: {
      const bool tuple = v.is_tuple();
      out.push_back(tuple ? '(' : '[');
      const auto& items = v.items();
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out += ", ";
        append_repr(out, items[i], depth + 1);
      }
      if (tuple && items.size() == 1) out.push_back(',');
      out.push_back(tuple ? ')' : ']');
      return;
    }
    case Value::Type::kDict:
      append_dict_body(out, v.as_dict(), depth);
      return;
    case Value::Type::kNamespace:
      out += "<Namespace ";
      append_dict_body(out, v.as_dict(), depth);
      out += ">";
      return;
    case Value::Type::kFunction:
      out += fmt::format("<function {}>", v.as_function().name);
      return;
  }
}

void append_repr(std::string& out, const Value& v, int depth) {
  if (v.is_string()) {
    out += pystr::repr(v.as_string());
  } else if (v.is_undefined()) {
    out += "Undefined";
  } else {
    append_str(out, v, depth);
  }
}

}  // namespace

std::string to_str(const Value& v) {
  if (v.is_string()) return v.as_string();
  std::string out;
  append_str(out, v, 0);
  return out;
}

std::string to_repr(const Value& v) {
  std::string out;
  append_repr(out, v, 0);
  return out;
}

namespace {

bool equals_at(const Value& a, const Value& b, int depth) {
  check_depth(depth);
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Value::Type::kUndefined:
    case Value::Type::kNone:
      return true;
    case Value::Type::kString:
      return a.as_string() == b.as_string();
    case Value::Type::kList: {
      if (a.is_tuple() != b.is_tuple()) return false;
      const auto& x = a.items();
      const auto& y = b.items();
      if (x.size() != y.size()) return false;
      for (size_t i = 0; i < x.size(); ++i) {
        if (!equals_at(x[i], y[i], depth + 1)) return false;
      }
      return true;
    }
    case Value::Type::kDict: {
      const auto& x = a.as_dict();
      const auto& y = b.as_dict();
      if (x.size() != y.size()) return false;
      for (const auto& [k, val] : x.entries()) {
        const Value* other = y.find(k);
        if (other == nullptr || !equals_at(val, *other, depth + 1)) return false;
      }
      return true;
    }
    default:
      return a.identity() == b.identity();
  }
}

[[noreturn]] void unorderable(const Value& a, const Value& b) {
  detail::throw_type_error(
      fmt::format("'<' not supported between instances of '{}' and '{}'", type_name(a), type_name(b)));
}

bool less_at(const Value& a, const Value& b, int depth) {
  check_depth(depth);
  fail_if_undefined(a);
  fail_if_undefined(b);
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() < b.as_float();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string())
    return a.as_string() < b.as_string();  // UTF-8 bytes order = code points
  if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
    const auto& x = a.items();
    const auto& y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!equals_at(x[i], y[i], depth + 1)) return less_at(x[i], y[i], depth + 1);
    }
    return x.size() < y.size();
  }
  unorderable(a, b);
}

}  // namespace

bool equals(const Value& a, const Value& b) {
  return equals_at(a, b, 0);
}

bool less_than(const Value& a, const Value& b) {
  return less_at(a, b, 0);
}

void fail_if_undefined(const Value& v) {
  if (v.is_undefined()) detail::throw_fault(detail::Fault::Kind::kUndefined, v.undefined_message());
}

std::vector<Value> iterate(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined:
      return {};
    case Value::Type::kList:
      return v.items();
    case Value::Type::kDict: {
      std::vector<Value> keys;
      keys.reserve(v.as_dict().size());
      for (const auto& entry : v.as_dict().entries()) keys.push_back(entry.first);
      return keys;
    }
    case Value::Type::kString: {
      std::vector<Value> chars;
      for (char32_t c : pystr::decode(v.as_string())) {
        std::string s;
        pystr::append_utf8(s, c);
        chars.push_back(Value::string(std::move(s)));
      }
      return chars;
    }
    default:
      detail::throw_type_error(fmt::format("'{}' object is not iterable", type_name(v)));
  }
}

bool contains(const Value& container, const Value& item) {
  switch (container.type()) {
    case Value::Type::kUndefined:
      return false;
    case Value::Type::kString:
      if (!item.is_string()) {
        fail_if_undefined(item);
        detail::throw_type_error(
            fmt::format("'in <string>' requires string as left operand, not {}", type_name(item)));
      }
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Type::kList:
      for (const auto& x : container.items()) {
        if (equals(x, item)) return true;
      }
      return false;
    case Value::Type::kDict:
      if (item.is_dict() || item.is_namespace() || (item.is_list() && !item.is_tuple())) {
        detail::throw_type_error(fmt::format("unhashable type: '{}'", type_name(item)));
      }
      return container.as_dict().find(item) != nullptr;
    default:
      detail::throw_type_error(fmt::format("argument of type '{}' is not iterable", type_name(container)));
  }
}

int64_t length_of(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined:
      return 0;
    case Value::Type::kString:
      return static_cast<int64_t>(pystr::length(v.as_string()));
    case Value::Type::kList:
      return static_cast<int64_t>(v.items().size());
    case Value::Type::kDict:
      return static_cast<int64_t>(v.as_dict().size());
    default:
      detail::throw_type_error(fmt::format("object of type '{}' has no len()", type_name(v)));
  }
}

}  // namespace ds::jinja
