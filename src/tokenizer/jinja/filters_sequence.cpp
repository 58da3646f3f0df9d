// jinja2's builtin filters over sequences and mappings: join, map, select / reject, sort, unique,
// dictsort, first / last, min / max / sum, ...
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <unordered_set>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/error.h"
#include "tokenizer/jinja/pystr.h"

namespace ds::jinja::builtins {
namespace {

Value str_value(Interpreter& interp, std::string s) {
  interp.charge_string(s.size());
  return Value::string(std::move(s));
}

// jinja2's make_attrgetter: "a.b.0" walks getitem through each part; digits index.
Value get_attribute_path(Interpreter& interp, const Value& item, const Value& attribute, const Value* dflt) {
  std::vector<Value> parts;
  if (attribute.is_string()) {
    for (const std::string& p : pystr::split(attribute.as_string(), std::string("."), -1, false)) {
      const auto n =
          std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; }) && !p.empty()
              ? pystr::parse_int(p, 10)
              : std::nullopt;
      parts.push_back(n ? Value::integer(*n) : Value::string(p));
    }
  } else {
    parts.push_back(attribute);
  }
  Value v = item;
  for (const Value& p : parts) {
    v = interp.getitem(v, p);
    if (dflt != nullptr && v.is_undefined()) v = *dflt;
  }
  return v;
}

// Sort key comparison with jinja2's case-insensitive default for strings.
bool key_less(const Value& a, const Value& b, bool case_sensitive) {
  if (!case_sensitive && a.is_string() && b.is_string()) {
    return pystr::lower(a.as_string()) < pystr::lower(b.as_string());
  }
  return less_than(a, b);
}

Value key_of(Interpreter& interp, const Value& item, const Value& attribute, bool case_sensitive) {
  Value k = attribute.is_undefined() || attribute.is_none()
                ? item
                : get_attribute_path(interp, item, attribute, nullptr);
  if (!case_sensitive && k.is_string()) return Value::string(pystr::lower(k.as_string()));
  return k;
}

// sort(attribute="a,b") sorts by a tuple of attributes (jinja2's make_multi_attrgetter).
Value multi_key_of(Interpreter& interp, const Value& item, const Value& attribute, bool case_sensitive) {
  if (!attribute.is_string() || attribute.as_string().find(',') == std::string::npos) {
    return key_of(interp, item, attribute, case_sensitive);
  }
  std::vector<Value> keys;
  for (const std::string& part : pystr::split(attribute.as_string(), std::string(","), -1, false)) {
    keys.push_back(key_of(interp, item, Value::string(part), case_sensitive));
  }
  return Value::tuple(std::move(keys));
}

Value f_batch(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("batch", a, {"linecount", "fill_with"});
  if (!b[0].is_integral() || b[0].as_int() <= 0)
    detail::throw_value_error("batch size must be a positive integer");
  const auto n = static_cast<size_t>(b[0].as_int());
  std::vector<Value> out;
  std::vector<Value> row;
  for (const Value& item : interp.items_of(v)) {
    row.push_back(item);
    if (row.size() == n) {
      out.push_back(Value::list(std::move(row)));
      row.clear();
    }
  }
  if (!row.empty()) {
    if (b.has(1) && !b[1].is_none()) {
      while (row.size() < n) row.push_back(b[1]);
    }
    out.push_back(Value::list(std::move(row)));
  }
  return Value::list(std::move(out));
}

Value f_dictsort(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("dictsort", a, {"case_sensitive", "by", "reverse"});
  if (!v.is_dict()) detail::throw_type_error("You can only sort by either a mapping");
  const bool case_sensitive = b.has(0) && truthy(b[0]);
  const std::string by = b.has(1) ? to_str(b[1]) : "key";
  if (by != "key" && by != "value")
    detail::throw_fault(detail::Fault::Kind::kValue, "You can only sort by either \"key\" or \"value\"");
  const bool reverse = b.has(2) && truthy(b[2]);
  std::vector<std::pair<Value, Value>> entries = v.as_dict().entries();
  const size_t pos = by == "key" ? 0 : 1;
  std::stable_sort(entries.begin(), entries.end(), [&](const auto& x, const auto& y) {
    const Value& kx = pos == 0 ? x.first : x.second;
    const Value& ky = pos == 0 ? y.first : y.second;
    return reverse ? key_less(ky, kx, case_sensitive) : key_less(kx, ky, case_sensitive);
  });
  std::vector<Value> out;
  for (auto& [k, val] : entries) out.push_back(Value::tuple({k, val}));
  return Value::list(std::move(out));
}

Value f_first(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("first", a, {});
  if (v.is_list())
    return v.items().empty() ? Value::undefined("No first item, sequence was empty.") : v.items().front();
  const std::vector<Value> items = interp.items_of(v);
  return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
}

Value f_last(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("last", a, {});
  if (v.is_list())
    return v.items().empty() ? Value::undefined("No last item, sequence was empty.") : v.items().back();
  const std::vector<Value> items = interp.items_of(v);
  return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
}

Value f_items(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("items", a, {});
  if (v.is_undefined()) return Value::list({});
  if (!v.is_dict()) detail::throw_type_error("Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (const auto& [k, val] : v.as_dict().entries()) out.push_back(Value::tuple({k, val}));
  return Value::list(std::move(out));
}

Value f_join(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("join", a, {"d", "attribute"});
  const std::string sep = b.has(0) ? to_str(b[0]) : "";
  std::string out;
  bool first = true;
  for (const Value& item : interp.items_of(v)) {
    const Value x = b.has(1) && !b[1].is_none() ? get_attribute_path(interp, item, b[1], nullptr) : item;
    if (!first) out += sep;
    first = false;
    const std::string s = to_str(x);
    interp.charge_string(s.size() + sep.size());
    out += s;
  }
  return Value::string(std::move(out));
}

Value f_length(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("length", a, {});
  return Value::integer(length_of(v));
}

Value f_list(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("list", a, {});
  return Value::list(interp.items_of(v));
}

Value f_map(Interpreter& interp, const Value& v, CallArgs& a) {
  if (!truthy(v)) return Value::list({});  // jinja2: `if value:` before anything else
  std::vector<Value> out;
  const Value* attribute = nullptr;
  const Value* dflt = nullptr;
  for (const auto& [k, val] : a.kwargs) {
    if (k == "attribute") attribute = &val;
    if (k == "default") dflt = &val;
  }
  if (attribute != nullptr) {
    for (const Value& item : interp.items_of(v))
      out.push_back(get_attribute_path(interp, item, *attribute, dflt));
    return Value::list(std::move(out));
  }
  if (a.args.empty() || !a.args[0].is_string()) detail::throw_type_error("map requires a filter argument");
  const std::string name = a.args[0].as_string();
  CallArgs rest;
  rest.args.assign(a.args.begin() + 1, a.args.end());
  rest.kwargs = a.kwargs;
  for (const Value& item : interp.items_of(v)) {
    CallArgs copy = rest;
    out.push_back(interp.apply_filter(name, item, copy));
  }
  return Value::list(std::move(out));
}

Value min_or_max(Interpreter& interp, const Value& v, CallArgs& a, bool want_max, std::string_view fn) {
  BoundArgs b(fn, a, {"case_sensitive", "attribute"});
  const bool case_sensitive = b.has(0) && truthy(b[0]);
  const Value attribute = b.get(1, Value::none());
  const std::vector<Value> items = interp.items_of(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  size_t best = 0;
  Value best_key = key_of(interp, items[0], attribute, case_sensitive);
  for (size_t i = 1; i < items.size(); ++i) {
    Value k = key_of(interp, items[i], attribute, case_sensitive);
    if (want_max ? less_than(best_key, k) : less_than(k, best_key)) {
      best = i;
      best_key = std::move(k);
    }
  }
  return items[best];
}

Value f_max(Interpreter& interp, const Value& v, CallArgs& a) {
  return min_or_max(interp, v, a, true, "max");
}

Value f_min(Interpreter& interp, const Value& v, CallArgs& a) {
  return min_or_max(interp, v, a, false, "min");
}

Value select_or_reject(Interpreter& interp, const Value& v, CallArgs& a, bool lookup_attr, bool select) {
  if (!truthy(v)) return Value::list({});  // jinja2: `if value:` before anything else
  size_t next = 0;
  Value attribute;
  if (lookup_attr) {
    if (a.args.empty()) detail::throw_type_error("Missing parameter for attribute name");
    attribute = a.args[next++];
  }
  std::optional<std::string> test;
  if (next < a.args.size()) {
    if (!a.args[next].is_string()) detail::throw_type_error("test name must be a string");
    test = a.args[next++].as_string();
  }
  CallArgs test_args;
  test_args.args.assign(a.args.begin() + static_cast<std::ptrdiff_t>(next), a.args.end());
  test_args.kwargs = a.kwargs;
  std::vector<Value> out;
  for (const Value& item : interp.items_of(v)) {
    const Value x = lookup_attr ? get_attribute_path(interp, item, attribute, nullptr) : item;
    bool ok = false;
    if (test) {
      CallArgs copy = test_args;
      ok = interp.apply_test(*test, x, copy);
    } else {
      ok = truthy(x);
    }
    if (ok == select) out.push_back(item);
  }
  return Value::list(std::move(out));
}

Value f_select(Interpreter& interp, const Value& v, CallArgs& a) {
  return select_or_reject(interp, v, a, false, true);
}

Value f_reject(Interpreter& interp, const Value& v, CallArgs& a) {
  return select_or_reject(interp, v, a, false, false);
}

Value f_selectattr(Interpreter& interp, const Value& v, CallArgs& a) {
  return select_or_reject(interp, v, a, true, true);
}

Value f_rejectattr(Interpreter& interp, const Value& v, CallArgs& a) {
  return select_or_reject(interp, v, a, true, false);
}

Value f_reverse(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("reverse", a, {});
  if (v.is_string()) {
    std::u32string u = pystr::decode(v.as_string());
    std::reverse(u.begin(), u.end());
    return str_value(interp, pystr::encode(u));
  }
  std::vector<Value> items = interp.items_of(v);
  std::reverse(items.begin(), items.end());
  return Value::list(std::move(items));
}

Value f_sort(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("sort", a, {"reverse", "case_sensitive", "attribute"});
  const bool reverse = b.has(0) && truthy(b[0]);
  const bool case_sensitive = b.has(1) && truthy(b[1]);
  const Value attribute = b.get(2, Value::none());
  std::vector<Value> items = interp.items_of(v);
  std::vector<std::pair<Value, size_t>> keyed;
  for (size_t i = 0; i < items.size(); ++i) {
    keyed.emplace_back(multi_key_of(interp, items[i], attribute, case_sensitive), i);
  }
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return reverse ? less_than(y.first, x.first) : less_than(x.first, y.first);
  });
  std::vector<Value> out;
  for (const auto& [k, i] : keyed) out.push_back(items[i]);
  return Value::list(std::move(out));
}

Value f_sum(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("sum", a, {"attribute", "start"});
  Value total = b.get(1, Value::integer(0));
  for (const Value& item : interp.items_of(v)) {
    const Value x = b.has(0) && !b[0].is_none() ? get_attribute_path(interp, item, b[0], nullptr) : item;
    total = binary(BinaryOp::kAdd, total, x, interp);
  }
  return total;
}

// A string that two values share exactly when Python finds them equal and hashes them alike (1, 1.0 and
// True are one key); nullopt for values without one (lists, dicts), which are compared one by one.
std::optional<std::string> hash_key(const Value& v) {
  std::string key;
  switch (v.type()) {
    case Value::Type::kString:
      key.push_back('s');
      key.append(v.as_string());
      return key;
    case Value::Type::kNone:
      return std::string("N");
    case Value::Type::kBool:
    case Value::Type::kInt:
      return fmt::format("n{}", v.as_int());
    case Value::Type::kFloat: {
      const double d = v.as_float();
      if (std::nearbyint(d) == d && std::fabs(d) < 9e18) return fmt::format("n{}", static_cast<int64_t>(d));
      return fmt::format("f{}", pystr::float_repr(d));
    }
    default:
      return std::nullopt;
  }
}

Value f_unique(Interpreter& interp, const Value& v, CallArgs& a) {
  BoundArgs b("unique", a, {"case_sensitive", "attribute"});
  const bool case_sensitive = b.has(0) && truthy(b[0]);
  const Value attribute = b.get(1, Value::none());
  std::unordered_set<std::string> seen_hashable;
  std::vector<Value> seen_other;
  std::vector<Value> out;
  for (const Value& item : interp.items_of(v)) {
    Value k = key_of(interp, item, attribute, case_sensitive);
    if (auto h = hash_key(k)) {
      if (seen_hashable.insert(*h).second) out.push_back(item);
      continue;
    }
    if (k.is_dict() || k.is_namespace() || (k.is_list() && !k.is_tuple())) {
      detail::throw_type_error(fmt::format("unhashable type: '{}'", type_name(k)));
    }
    interp.charge_string(seen_other.size() * 16);
    if (std::none_of(seen_other.begin(), seen_other.end(), [&](const Value& s) { return equals(s, k); })) {
      seen_other.push_back(std::move(k));
      out.push_back(item);
    }
  }
  return Value::list(std::move(out));
}

struct NamedFilter {
  std::string_view name;
  FilterFn fn;
};

constexpr NamedFilter kSequenceFilters[] = {
    {"batch", f_batch},
    {"count", f_length},
    {"dictsort", f_dictsort},
    {"first", f_first},
    {"items", f_items},
    {"join", f_join},
    {"last", f_last},
    {"length", f_length},
    {"list", f_list},
    {"map", f_map},
    {"max", f_max},
    {"min", f_min},
    {"reject", f_reject},
    {"rejectattr", f_rejectattr},
    {"reverse", f_reverse},
    {"select", f_select},
    {"selectattr", f_selectattr},
    {"sort", f_sort},
    {"sum", f_sum},
    {"unique", f_unique},
};

}  // namespace

FilterFn find_sequence_filter(std::string_view name) {
  for (const auto& f : kSequenceFilters) {
    if (f.name == name) return f.fn;
  }
  return nullptr;
}

}  // namespace ds::jinja::builtins
