// Values from request JSON, and Python's json.dumps for the tojson filter.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/pystr.h"
#include "tokenizer/jinja/value.h"

namespace ds::jinja {
namespace {

constexpr int kMaxJsonDepth = 512;

void check_depth(int depth) {
  if (depth > kMaxJsonDepth) detail::throw_limit("value nested too deeply");
}

}  // namespace

// --- JSON in ---------------------------------------------------------------------------------------

namespace {

template <typename Json>
Value from_json_at(const Json& j, int depth) {
  check_depth(depth);
  switch (j.type()) {
    case nlohmann::json::value_t::null:
    case nlohmann::json::value_t::discarded:
      return Value::none();
    case nlohmann::json::value_t::boolean:
      return Value::boolean(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value::integer(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const auto u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::number(static_cast<double>(u));
      return Value::integer(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value::number(j.template get<double>());
    case nlohmann::json::value_t::string:
      return Value::string(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& x : j) items.push_back(from_json_at(x, depth + 1));
      return Value::list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      DictObject d;
      for (auto it = j.begin(); it != j.end(); ++it) d.set(it.key(), from_json_at(it.value(), depth + 1));
      return Value::dict(std::move(d));
    }
    case nlohmann::json::value_t::binary:
      break;
  }
  return Value::none();
}

}  // namespace

Value from_json(const nlohmann::ordered_json& j) {
  return from_json_at(j, 0);
}
Value from_json(const nlohmann::json& j) {
  return from_json_at(j, 0);
}

// --- JSON out: Python's json.dumps ----------------------------------------------------------------

namespace {

class JsonWriter {
 public:
  explicit JsonWriter(const JsonDumpOptions& options) : opt_(options) {}

  void write(const Value& v, int level) {
    check_depth(level);
    switch (v.type()) {
      case Value::Type::kNone:
        put("null");
        return;
      case Value::Type::kBool:
        put(v.as_bool() ? "true" : "false");
        return;
      case Value::Type::kInt:
        put(fmt::format("{}", v.as_int()));
        return;
      case Value::Type::kFloat:
        put_float(v.as_float());
        return;
      case Value::Type::kString:
        put_string(v.as_string());
        return;
      case Value::Type::kList: {
        const auto& items = v.items();
        if (items.empty()) {
          put("[]");
          return;
        }
        put("[");
        for (size_t i = 0; i < items.size(); ++i) {
          if (i > 0) put(separator());
          newline(level + 1);
          write(items[i], level + 1);
        }
        newline(level);
        put("]");
        return;
      }
      case Value::Type::kDict:
        write_dict(v.as_dict(), level);
        return;
      default:
        detail::throw_type_error(fmt::format("Object of type {} is not JSON serializable", type_name(v)));
    }
  }

  std::string take() { return std::move(out_); }

 private:
  void write_dict(const DictObject& d, int level) {
    if (d.empty()) {
      put("{}");
      return;
    }
    std::vector<std::pair<std::string, const Value*>> entries;
    entries.reserve(d.size());
    for (const auto& [k, val] : d.entries()) entries.emplace_back(key_string(k), &val);
    if (opt_.sort_keys) {
      std::stable_sort(entries.begin(), entries.end(),
                       [](const auto& x, const auto& y) { return x.first < y.first; });
    }
    put("{");
    for (size_t i = 0; i < entries.size(); ++i) {
      if (i > 0) put(separator());
      newline(level + 1);
      put_string(entries[i].first);
      put(opt_.key_separator);
      write(*entries[i].second, level + 1);
    }
    newline(level);
    put("}");
  }

  // json.dumps turns non-string keys into strings the way it prints them as values.
  static std::string key_string(const Value& k) {
    switch (k.type()) {
      case Value::Type::kString:
        return k.as_string();
      case Value::Type::kNone:
        return "null";
      case Value::Type::kBool:
        return k.as_bool() ? "true" : "false";
      case Value::Type::kInt:
        return fmt::format("{}", k.as_int());
      case Value::Type::kFloat:
        return pystr::float_repr(k.as_float());
      default:
        detail::throw_type_error(
            fmt::format("keys must be str, int, float, bool or None, not {}", type_name(k)));
    }
  }

  const std::string& separator() const { return opt_.item_separator; }

  void newline(int level) {
    if (!opt_.indent) return;
    put("\n");
    for (int i = 0; i < level; ++i) put(*opt_.indent);
  }

  void put_float(double d) {
    if (std::isnan(d)) {
      put("NaN");
    } else if (std::isinf(d)) {
      put(d > 0 ? "Infinity" : "-Infinity");
    } else {
      put(pystr::float_repr(d));
    }
  }

  void put_string(const std::string& s) {
    std::string out = "\"";
    for (char32_t c : pystr::decode(s)) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        case '\b':
          out += "\\b";
          break;
        case '\f':
          out += "\\f";
          break;
        default:
          if (c < 0x20 || (opt_.ensure_ascii && c >= 0x7F)) {
            if (c >= 0x10000) {
              const char32_t v = c - 0x10000;
              out += fmt::format("\\u{:04x}\\u{:04x}", static_cast<unsigned>(0xD800 + (v >> 10)),
                                 static_cast<unsigned>(0xDC00 + (v & 0x3FF)));
            } else {
              out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
            }
          } else {
            pystr::append_utf8(out, c);
          }
      }
    }
    out += "\"";
    put(out);
  }

  void put(std::string_view s) {
    if (opt_.max_bytes != 0 && out_.size() + s.size() > opt_.max_bytes) {
      detail::throw_limit(fmt::format("tojson output exceeds {} bytes", opt_.max_bytes));
    }
    out_.append(s);
  }

  const JsonDumpOptions& opt_;
  std::string out_;
};

}  // namespace

std::string to_json(const Value& v, const JsonDumpOptions& options) {
  JsonWriter writer(options);
  writer.write(v, 0);
  return writer.take();
}

}  // namespace ds::jinja
