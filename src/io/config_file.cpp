#include "io/config_file.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "util/check.h"

namespace ds {
namespace {

[[noreturn]] void fail(const std::string& name, int line, const std::string& message) {
  if (line > 0) throw InvalidArgument(fmt::format("{}:{}: {}", name, line, message));
  throw InvalidArgument(fmt::format("{}: {}", name, message));
}

std::string_view rtrim(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Nothing but blanks, or a comment.
bool blank_or_comment(std::string_view s) {
  const size_t first = s.find_first_not_of(" \t");
  return first == std::string_view::npos || s[first] == '#';
}

bool is_list_item(std::string_view s) {
  return !s.empty() && s[0] == '-' && (s.size() == 1 || s[1] == ' ');
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// YAML 1.1's booleans, as PyYAML (and so vLLM) reads them.
std::optional<std::string> yaml_bool(std::string_view s) {
  static constexpr std::array<std::string_view, 9> kTrue = {"true", "True", "TRUE", "yes", "Yes",
                                                            "YES",  "on",   "On",   "ON"};
  static constexpr std::array<std::string_view, 9> kFalse = {"false", "False", "FALSE", "no", "No",
                                                             "NO",    "off",   "Off",   "OFF"};
  if (std::find(kTrue.begin(), kTrue.end(), s) != kTrue.end()) return "true";
  if (std::find(kFalse.begin(), kFalse.end(), s) != kFalse.end()) return "false";
  return std::nullopt;
}

bool yaml_null(std::string_view s) {
  return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL";
}

class YamlReader {
 public:
  YamlReader(std::string_view text, const std::string& name) : name_(name) {
    size_t start = 0;
    while (start <= text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string_view::npos) end = text.size();
      std::string_view line = text.substr(start, end - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      lines_.push_back(line);
      start = end + 1;
    }
  }

  std::vector<ConfigEntry> read() {
    std::vector<ConfigEntry> out;
    std::map<std::string, int, std::less<>> seen;
    bool document_started = false;
    size_t i = 0;
    while (i < lines_.size()) {
      const int line = static_cast<int>(i) + 1;
      const std::string_view s = lines_[i];
      const size_t indent = indentation(s, line);
      const std::string_view rest = s.substr(indent);
      if (blank_or_comment(rest)) {
        ++i;
        continue;
      }
      const std::string_view bare = rtrim(rest);
      if (indent == 0 && (bare == "---" || bare.substr(0, 4) == "--- ")) {
        if (document_started || !seen.empty())
          fail(name_, line, "several YAML documents ('---') are not supported");
        if (!blank_or_comment(bare.substr(3))) fail(name_, line, "content after '---' is not supported");
        document_started = true;
        ++i;
        continue;
      }
      if (indent == 0 && bare == "...") fail(name_, line, "the document end marker '...' is not supported");
      if (indent > 0) {
        fail(name_, line,
             "unexpected indentation: only top-level 'key: value' lines are supported (no nested mappings or "
             "multi-line values)");
      }
      if (is_list_item(rest)) fail(name_, line, "a list item ('- ...') must follow a 'key:' line");
      if (rest[0] == '%') fail(name_, line, "YAML directives are not supported");
      if (std::string_view("{[\"'&*!|>?@`").find(rest[0]) != std::string_view::npos) {
        fail(name_, line,
             "expected a top-level 'key: value' line (flow mappings, quoted keys, anchors and tags "
             "are not supported)");
      }

      size_t colon = 0;
      while (colon < rest.size() &&
             !(rest[colon] == ':' &&
               (colon + 1 == rest.size() || rest[colon + 1] == ' ' || rest[colon + 1] == '\t'))) {
        ++colon;
      }
      if (colon == rest.size()) fail(name_, line, "expected 'key: value'");
      const std::string key(rtrim(rest.substr(0, colon)));
      for (char c : key) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
          fail(name_, line, fmt::format("key '{}': a key is made of letters, digits, '-', '_' and '.'", key));
        }
      }
      if (const auto it = seen.find(key); it != seen.end()) {
        fail(name_, line, fmt::format("key '{}' appears twice (first on line {})", key, it->second));
      }
      seen.emplace(key, line);

      ConfigEntry entry{key, {}, false, line};
      size_t pos = colon + 1;
      while (pos < rest.size() && (rest[pos] == ' ' || rest[pos] == '\t')) ++pos;
      ++i;
      if (blank_or_comment(rest.substr(pos))) {
        // A block list follows, or nothing (null: not set).
        while (i < lines_.size()) {
          const int item_line = static_cast<int>(i) + 1;
          const std::string_view item = lines_[i];
          const size_t item_indent = indentation(item, item_line);
          const std::string_view item_rest = item.substr(item_indent);
          if (blank_or_comment(item_rest)) {
            ++i;
            continue;
          }
          if (!is_list_item(item_rest)) break;
          size_t p = 1;
          while (p < item_rest.size() && item_rest[p] == ' ') ++p;
          if (blank_or_comment(item_rest.substr(p))) fail(name_, item_line, "an empty list item");
          if (item_rest[p] == '[' || is_list_item(item_rest.substr(p))) {
            fail(name_, item_line, "nested lists are not supported");
          }
          const auto value = scalar(item_rest, p, item_line, "");
          if (!value) fail(name_, item_line, "a list item is null");
          expect_end(item_rest, p, item_line);
          entry.values.push_back(*value);
          entry.is_list = true;
          ++i;
        }
        if (entry.is_list) out.push_back(std::move(entry));
      } else if (rest[pos] == '[') {
        entry.values = flow_list(rest, pos, line);
        entry.is_list = true;
        out.push_back(std::move(entry));
      } else {
        const auto value = scalar(rest, pos, line, "");
        expect_end(rest, pos, line);
        if (value) {
          entry.values.push_back(*value);
          out.push_back(std::move(entry));
        }
      }
    }
    return out;
  }

 private:
  size_t indentation(std::string_view s, int line) const {
    size_t n = 0;
    while (n < s.size() && (s[n] == ' ' || s[n] == '\t')) {
      if (s[n] == '\t') fail(name_, line, "a tab in the indentation (YAML indents with spaces)");
      ++n;
    }
    return n;
  }

  void expect_end(std::string_view s, size_t pos, int line) const {
    const std::string_view tail = s.substr(pos);
    if (!blank_or_comment(tail)) {
      fail(name_, line,
           fmt::format("unexpected '{}' after the value", rtrim(tail.substr(tail.find_first_not_of(" \t")))));
    }
  }

  // [a, "b", 3] on one line; `pos` at '['.
  std::vector<std::string> flow_list(std::string_view s, size_t& pos, int line) const {
    std::vector<std::string> values;
    ++pos;
    auto skip = [&] {
      while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t')) ++pos;
    };
    skip();
    if (pos < s.size() && s[pos] == ']') {
      ++pos;
      expect_end(s, pos, line);
      return values;
    }
    for (;;) {
      skip();
      if (pos == s.size()) fail(name_, line, "a flow list '[...]' must close on the same line");
      if (s[pos] == '[' || s[pos] == '{') fail(name_, line, "nested lists and mappings are not supported");
      const auto value = scalar(s, pos, line, ",]");
      if (!value) fail(name_, line, "a list item is null");
      values.push_back(*value);
      skip();
      if (pos < s.size() && s[pos] == ',') {
        ++pos;
        skip();
        if (pos < s.size() && s[pos] == ']') break;  // a trailing comma
        continue;
      }
      if (pos < s.size() && s[pos] == ']') break;
      fail(name_, line, "a flow list '[...]' must close on the same line, its items separated by ','");
    }
    ++pos;
    expect_end(s, pos, line);
    return values;
  }

  // A scalar starting at `pos` (blanks skipped); `pos` is left after it. nullopt for null. A plain scalar
  // ends at the end of the line, at " #", or (in a flow list) at one of `terminators`.
  std::optional<std::string> scalar(std::string_view s, size_t& pos, int line,
                                    std::string_view terminators) const {
    while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t')) ++pos;
    if (pos < s.size() && s[pos] == '"') return double_quoted(s, pos, line);
    if (pos < s.size() && s[pos] == '\'') return single_quoted(s, pos, line);
    if (pos < s.size()) {
      const char c = s[pos];
      if (c == '&' || c == '*' || c == '!') fail(name_, line, "anchors, aliases and tags are not supported");
      if (c == '|' || c == '>') fail(name_, line, "block scalars ('|', '>') are not supported");
      if (c == '{') fail(name_, line, "nested mappings are not supported");
      if (c == '@' || c == '`') fail(name_, line, fmt::format("a plain value cannot start with '{}'", c));
    }
    const size_t start = pos;
    while (pos < s.size() && terminators.find(s[pos]) == std::string_view::npos &&
           !(s[pos] == '#' && pos > start && (s[pos - 1] == ' ' || s[pos - 1] == '\t'))) {
      ++pos;
    }
    const std::string_view value = rtrim(s.substr(start, pos - start));
    if (value.find(": ") != std::string_view::npos || (!value.empty() && value.back() == ':')) {
      fail(name_, line, "nested mappings ('key: value' inside a value) are not supported; quote the value");
    }
    if (yaml_null(value)) return std::nullopt;
    if (auto b = yaml_bool(value)) return b;
    return std::string(value);
  }

  std::string double_quoted(std::string_view s, size_t& pos, int line) const {
    std::string out;
    for (++pos; pos < s.size(); ++pos) {
      const char c = s[pos];
      if (c == '"') {
        ++pos;
        return out;
      }
      if (c != '\\') {
        out += c;
        continue;
      }
      if (++pos == s.size()) break;
      switch (s[pos]) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '0':
          out += '\0';
          break;
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case ' ':
          out += ' ';
          break;
        case 'u': {
          if (pos + 4 >= s.size()) fail(name_, line, "a \\u escape needs four hex digits");
          uint32_t cp = 0;
          for (int k = 1; k <= 4; ++k) {
            const char h = s[pos + static_cast<size_t>(k)];
            if (!std::isxdigit(static_cast<unsigned char>(h)))
              fail(name_, line, "a \\u escape needs four hex digits");
            cp = cp * 16 + static_cast<uint32_t>(
                               std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (h | 0x20) - 'a' + 10);
          }
          if (cp >= 0xD800 && cp < 0xE000) fail(name_, line, "surrogate \\u escapes are not supported");
          append_utf8(cp, out);
          pos += 4;
          break;
        }
        default:
          fail(name_, line, fmt::format("unknown escape '\\{}' in a double-quoted value", s[pos]));
      }
    }
    fail(name_, line, "a double-quoted value must close on the same line");
  }

  std::string single_quoted(std::string_view s, size_t& pos, int line) const {
    std::string out;
    for (++pos; pos < s.size(); ++pos) {
      if (s[pos] != '\'') {
        out += s[pos];
      } else if (pos + 1 < s.size() && s[pos + 1] == '\'') {
        out += '\'';
        ++pos;
      } else {
        ++pos;
        return out;
      }
    }
    fail(name_, line, "a single-quoted value must close on the same line");
  }

  const std::string& name_;
  std::vector<std::string_view> lines_;
};

// The line of `"key":` in JSON text, for messages; 0 when not found (a key written with escapes).
int json_key_line(std::string_view text, const std::string& key) {
  const std::string quoted = "\"" + key + "\"";
  for (size_t at = text.find(quoted); at != std::string_view::npos; at = text.find(quoted, at + 1)) {
    size_t p = at + quoted.size();
    while (p < text.size() && std::isspace(static_cast<unsigned char>(text[p]))) ++p;
    if (p < text.size() && text[p] == ':') {
      return 1 +
             static_cast<int>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n'));
    }
  }
  return 0;
}

}  // namespace

std::vector<ConfigEntry> parse_yaml_config(std::string_view text, const std::string& name) {
  return YamlReader(text, name).read();
}

std::vector<ConfigEntry> parse_json_config(std::string_view text, const std::string& name) {
  nlohmann::ordered_json root;
  try {
    root = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(name, 0, fmt::format("not valid JSON: {}", e.what()));
  }
  if (!root.is_object()) fail(name, 0, "the top level must be an object of flag names to values");
  std::vector<ConfigEntry> out;
  for (const auto& [key_binding, value] : root.items()) {
    // A named copy for the lambda: clang 14 (the fuzz build) cannot capture a structured binding.
    const std::string& key = key_binding;
    const int line = json_key_line(text, key);
    auto scalar = [&](const nlohmann::ordered_json& v) -> std::string {
      if (v.is_string()) return v.get<std::string>();
      if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
      if (v.is_number()) return v.dump();
      fail(name, line,
           fmt::format("key '{}': values are strings, numbers, booleans or lists of them (nested {} are not "
                       "supported)",
                       key,
                       v.is_object()  ? "objects"
                       : v.is_array() ? "lists"
                                      : "nulls"));
    };
    if (value.is_null()) continue;
    ConfigEntry entry{key, {}, value.is_array(), line};
    if (value.is_array()) {
      for (const auto& item : value) entry.values.push_back(scalar(item));
    } else {
      entry.values.push_back(scalar(value));
    }
    out.push_back(std::move(entry));
  }
  return out;
}

std::vector<ConfigEntry> read_config_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, 0, "cannot open the config file");
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  bool json = ext == ".json";
  if (ext != ".json" && ext != ".yaml" && ext != ".yml") {
    const size_t first = text.find_first_not_of(" \t\r\n");
    json = first != std::string::npos && text[first] == '{';
  }
  return json ? parse_json_config(text, path) : parse_yaml_config(text, path);
}

}  // namespace ds
