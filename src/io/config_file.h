// Flat configuration files (`deepserve serve --config FILE`): a mapping of keys to scalars or lists of
// scalars, written in YAML or JSON.
//
// No YAML library: the subset vLLM's --config files use is read here, and everything beyond it is refused
// with the file and line rather than misread:
//   key: value            plain, "double-quoted" (JSON escapes) or 'single-quoted' ('' for ') scalars;
//                         true/false/yes/no/on/off (any case YAML 1.1 allows) become "true" / "false";
//                         null, ~ or nothing mean "not set"
//   key: [a, "b", 3]      flow lists on one line
//   key:                  block lists, the items indented or not
//     - a
//   # comment             whole-line or after a value (" #")
//   ---                   once, before the first key
// Refused: nested mappings, flow mappings, nested lists, anchors/aliases/tags, block scalars (| >),
// multi-line scalars, several documents, tabs in indentation, duplicate keys.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ds {

struct ConfigEntry {
  std::string key;                  // as written
  std::vector<std::string> values;  // one for a scalar
  bool is_list = false;
  int line = 0;  // 1-based line of the key (0 when unknown)
};

// Reads `path` as JSON (extension .json) or YAML (.yaml, .yml); any other extension is sniffed (JSON when the
// first character that is not blank is '{'). Keys set to null are left out. Throws InvalidArgument
// "PATH:LINE: ..." for a file that cannot be read or is outside the subset.
[[nodiscard]] std::vector<ConfigEntry> read_config_file(const std::string& path);

// The same for text already read; `name` is the file name used in error messages.
[[nodiscard]] std::vector<ConfigEntry> parse_yaml_config(std::string_view text, const std::string& name);
[[nodiscard]] std::vector<ConfigEntry> parse_json_config(std::string_view text, const std::string& name);

}  // namespace ds
