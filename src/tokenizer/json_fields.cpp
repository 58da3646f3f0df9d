#include "tokenizer/json_fields.h"

#include "util/check.h"

namespace ds::tokenizer::json_fields {

void fail(const std::string& path, std::string_view message) {
  throw UserError(fmt::format("tokenizer.json: {}: {}", path.empty() ? "(root)" : path, message));
}

std::string child(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string element(const std::string& path, size_t index) {
  return fmt::format("{}[{}]", path, index);
}

void expect_object(const json& j, const std::string& path) {
  if (!j.is_object()) fail(path, fmt::format("expected an object, got {}", j.type_name()));
}

const json& require(const json& object, std::string_view key, const std::string& path) {
  expect_object(object, path);
  const auto it = object.find(key);
  if (it == object.end()) fail(child(path, key), "missing");
  return *it;
}

std::string get_string(const json& object, std::string_view key, const std::string& path) {
  const json& value = require(object, key, path);
  if (!value.is_string()) fail(child(path, key), fmt::format("expected a string, got {}", value.type_name()));
  return value.get<std::string>();
}

std::optional<std::string> get_optional_string(const json& object, std::string_view key,
                                               const std::string& path) {
  expect_object(object, path);
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_string())
    fail(child(path, key), fmt::format("expected a string or null, got {}", it->type_name()));
  return it->get<std::string>();
}

bool get_bool(const json& object, std::string_view key, bool default_value, const std::string& path) {
  expect_object(object, path);
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return default_value;
  if (!it->is_boolean())
    fail(child(path, key), fmt::format("expected true or false, got {}", it->type_name()));
  return it->get<bool>();
}

int64_t get_int(const json& object, std::string_view key, const std::string& path) {
  const json& value = require(object, key, path);
  if (!value.is_number_integer()) {
    fail(child(path, key), fmt::format("expected an integer, got {}", value.type_name()));
  }
  return value.get<int64_t>();
}

std::string type_of(const json& object, const std::string& path) {
  return get_string(object, "type", path);
}

}  // namespace ds::tokenizer::json_fields
