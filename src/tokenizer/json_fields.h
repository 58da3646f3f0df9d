// Typed access to tokenizer.json fields with errors that name the field, e.g.
// "tokenizer.json: pre_tokenizer.pretokenizers[1].behavior: expected a string, got number".
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace ds::tokenizer::json_fields {

using nlohmann::json;

[[noreturn]] void fail(const std::string& path, std::string_view message);

// "a.b" + "c" -> "a.b.c"; "" + "c" -> "c".
[[nodiscard]] std::string child(const std::string& path, std::string_view key);
[[nodiscard]] std::string element(const std::string& path, size_t index);

void expect_object(const json& j, const std::string& path);
[[nodiscard]] const json& require(const json& object, std::string_view key, const std::string& path);

[[nodiscard]] std::string get_string(const json& object, std::string_view key, const std::string& path);
[[nodiscard]] std::optional<std::string> get_optional_string(const json& object, std::string_view key,
                                                             const std::string& path);
[[nodiscard]] bool get_bool(const json& object, std::string_view key, bool default_value,
                            const std::string& path);
[[nodiscard]] int64_t get_int(const json& object, std::string_view key, const std::string& path);

// The "type" string of a component object.
[[nodiscard]] std::string type_of(const json& object, const std::string& path);

}  // namespace ds::tokenizer::json_fields
