// The value type of the template engine: Python's values as a jinja2 template sees them.
//
// Undefined, None, bool, int (64-bit), float, str (UTF-8), list / tuple, dict (insertion-ordered, as
// Python's), namespace (the one mutable object a sandboxed template can create) and callables
// (builtins, bound methods, macros). Strings, lists and dicts are shared and never mutated once
// built, which is what the immutable sandbox guarantees in Python too.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ds::jinja {

class Value;
class Interpreter;

struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
};

using NativeFunction = std::function<Value(CallArgs& args, Interpreter& interp)>;

struct ListObject;
class DictObject;
struct FunctionObject;

class Value {
 public:
  enum class Type : uint8_t {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kFunction
  };

  Value() = default;  // undefined, without a hint

  [[nodiscard]] static Value undefined(std::string hint);
  [[nodiscard]] static Value none();
  [[nodiscard]] static Value boolean(bool b);
  [[nodiscard]] static Value integer(int64_t i);
  [[nodiscard]] static Value number(double d);
  [[nodiscard]] static Value string(std::string s);
  [[nodiscard]] static Value list(std::vector<Value> items);
  [[nodiscard]] static Value tuple(std::vector<Value> items);
  [[nodiscard]] static Value dict(DictObject d);
  [[nodiscard]] static Value make_namespace(DictObject d);
  [[nodiscard]] static Value function(std::string name, NativeFunction fn);

  [[nodiscard]] Type type() const { return type_; }
  [[nodiscard]] bool is_undefined() const { return type_ == Type::kUndefined; }
  [[nodiscard]] bool is_none() const { return type_ == Type::kNone; }
  [[nodiscard]] bool is_bool() const { return type_ == Type::kBool; }
  [[nodiscard]] bool is_int() const { return type_ == Type::kInt; }
  [[nodiscard]] bool is_float() const { return type_ == Type::kFloat; }
  // bool counts as a number and an integer, as in Python.
  [[nodiscard]] bool is_integral() const { return type_ == Type::kInt || type_ == Type::kBool; }
  [[nodiscard]] bool is_number() const { return is_integral() || type_ == Type::kFloat; }
  [[nodiscard]] bool is_string() const { return type_ == Type::kString; }
  [[nodiscard]] bool is_list() const { return type_ == Type::kList; }  // list or tuple
  [[nodiscard]] bool is_tuple() const;
  [[nodiscard]] bool is_dict() const { return type_ == Type::kDict; }
  [[nodiscard]] bool is_namespace() const { return type_ == Type::kNamespace; }
  [[nodiscard]] bool is_function() const { return type_ == Type::kFunction; }

  [[nodiscard]] bool as_bool() const { return b_; }
  [[nodiscard]] int64_t as_int() const { return type_ == Type::kBool ? (b_ ? 1 : 0) : i_; }
  [[nodiscard]] double as_float() const;
  [[nodiscard]] const std::string& as_string() const;
  [[nodiscard]] const std::vector<Value>& items() const;  // list or tuple elements
  [[nodiscard]] const DictObject& as_dict() const;        // dict or namespace
  [[nodiscard]] DictObject& namespace_attrs() const;      // namespace only: the one mutable object
  [[nodiscard]] const FunctionObject& as_function() const;
  // What jinja2 would say when this undefined value is used: "'foo' is undefined".
  [[nodiscard]] std::string undefined_message() const;
  // Identity of shared objects, for Python's `is` (the sameas test).
  [[nodiscard]] const void* identity() const { return obj_.get(); }

 private:
  Type type_ = Type::kUndefined;
  union {
    bool b_;
    int64_t i_ = 0;
    double f_;
  };
  std::shared_ptr<void> obj_;  // std::string, ListObject, DictObject or FunctionObject
};

struct ListObject {
  std::vector<Value> items;
  bool is_tuple = false;
};

// An insertion-ordered dict. Keys compare as Python does (1 == 1.0 == True).
class DictObject {
 public:
  [[nodiscard]] const Value* find(const Value& key) const;
  [[nodiscard]] const Value* find(std::string_view key) const;
  void set(const Value& key, Value value);
  void set(std::string_view key, Value value);
  [[nodiscard]] size_t size() const { return entries_.size(); }
  [[nodiscard]] bool empty() const { return entries_.empty(); }
  [[nodiscard]] const std::vector<std::pair<Value, Value>>& entries() const { return entries_; }

 private:
  std::vector<std::pair<Value, Value>> entries_;
  std::unordered_map<std::string, size_t> string_index_;
};

struct FunctionObject {
  std::string name;
  NativeFunction fn;
};

// --- Python semantics -----------------------------------------------------------------------------

// Python's type name: "str", "int", "float", "bool", "NoneType", "list", "tuple", "dict", "Namespace",
// "function", "Undefined".
[[nodiscard]] std::string type_name(const Value& v);
[[nodiscard]] bool truthy(const Value& v);
// str(v) as jinja2 prints it: Undefined prints as "", None as "None", lists with repr() elements.
[[nodiscard]] std::string to_str(const Value& v);
[[nodiscard]] std::string to_repr(const Value& v);
[[nodiscard]] bool equals(const Value& a, const Value& b);
// a < b as Python orders values; throws a TypeError fault for types Python cannot order.
[[nodiscard]] bool less_than(const Value& a, const Value& b);
// Throws the UndefinedError fault for an undefined value, does nothing otherwise.
void fail_if_undefined(const Value& v);
// Iterating as Python's iter(): list items, dict keys, string characters; Undefined is empty.
[[nodiscard]] std::vector<Value> iterate(const Value& v);
// `item in container`.
[[nodiscard]] bool contains(const Value& container, const Value& item);
// len(v); throws a TypeError fault for values without a length.
[[nodiscard]] int64_t length_of(const Value& v);

// Request data (messages, tools, kwargs) into values. Objects keep their key order with ordered_json,
// which is what Python's json.loads gives the template; nlohmann::json has its keys sorted.
[[nodiscard]] Value from_json(const nlohmann::ordered_json& j);
[[nodiscard]] Value from_json(const nlohmann::json& j);

struct JsonDumpOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // nullopt: single line
  // json.dumps' defaults are (", ", ": ") without an indent and (",", ": ") with one; the caller
  // picks, as Python does when separators=None.
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
  size_t max_bytes = 0;  // 0: unbounded; otherwise a LimitError fault past this size
};
// json.dumps(v, ...) with Python's formatting of floats, separators and indentation.
[[nodiscard]] std::string to_json(const Value& v, const JsonDumpOptions& options);

}  // namespace ds::jinja
