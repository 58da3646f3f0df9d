// The flat YAML subset and JSON of `--config` files: what is read, and what is refused with file and line.
#include "io/config_file.h"

#include <gtest/gtest.h>

#include <string>

#include "util/check.h"

namespace ds {
namespace {

std::vector<std::string> values_of(const std::vector<ConfigEntry>& entries, const std::string& key) {
  for (const auto& e : entries)
    if (e.key == key) return e.values;
  return {"<missing>"};
}

// The message of the InvalidArgument that parsing `text` throws.
std::string yaml_error(const std::string& text) {
  try {
    (void)parse_yaml_config(text, "cfg.yaml");
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(ConfigFileTest, YamlScalarsListsAndComments) {
  const std::string text =
      "---\n"
      "# vLLM-style serve config\n"
      "model: /models/DeepSeek-V3   # trailing comment\n"
      "max_num_seqs: 128\n"
      "max-model-len: 4096\n"
      "served-model-name:\n"
      "  - deepseek\n"
      "  - \"ds # not a comment\"\n"
      "api-key: [k1, 'it''s', \"a,b\", ]\n"
      "\n"
      "enable-prefix-caching: off\n"
      "host: \"0.0.0.0\"\n"
      "ratio: 0.5\n"
      "swap-space: ~\n"
      "tokenizer:\n"
      "escaped: \"tab\\there \\u00e9\"\n"
      "list-at-key-indent:\n"
      "- x\n"
      "- y\n"
      "url: http://host:8000/v1#frag\n";
  const auto e = parse_yaml_config(text, "cfg.yaml");
  ASSERT_EQ(e.size(), 11u);
  EXPECT_EQ(e[0].key, "model");
  EXPECT_EQ(e[0].line, 3);
  EXPECT_FALSE(e[0].is_list);
  EXPECT_EQ(values_of(e, "model"), std::vector<std::string>{"/models/DeepSeek-V3"});
  EXPECT_EQ(values_of(e, "max_num_seqs"), std::vector<std::string>{"128"});
  EXPECT_EQ(values_of(e, "max-model-len"), std::vector<std::string>{"4096"});
  EXPECT_EQ(values_of(e, "served-model-name"), (std::vector<std::string>{"deepseek", "ds # not a comment"}));
  EXPECT_EQ(e[3].line, 6);
  EXPECT_TRUE(e[3].is_list);
  EXPECT_EQ(values_of(e, "api-key"), (std::vector<std::string>{"k1", "it's", "a,b"}));
  EXPECT_EQ(values_of(e, "enable-prefix-caching"), std::vector<std::string>{"false"});
  EXPECT_EQ(values_of(e, "host"), std::vector<std::string>{"0.0.0.0"});
  EXPECT_EQ(values_of(e, "ratio"), std::vector<std::string>{"0.5"});
  // null and empty values are "not set".
  EXPECT_EQ(values_of(e, "swap-space"), std::vector<std::string>{"<missing>"});
  EXPECT_EQ(values_of(e, "tokenizer"), std::vector<std::string>{"<missing>"});
  EXPECT_EQ(values_of(e, "escaped"), std::vector<std::string>{"tab\there \xc3\xa9"});
  EXPECT_EQ(values_of(e, "list-at-key-indent"), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(values_of(e, "url"), std::vector<std::string>{"http://host:8000/v1#frag"});
  // YAML 1.1 booleans as PyYAML reads them; quoted ones stay strings.
  const auto b = parse_yaml_config("a: Yes\nb: FALSE\nc: on\nd: 'no'\ne: [true, No]\n", "b.yaml");
  EXPECT_EQ(values_of(b, "a"), std::vector<std::string>{"true"});
  EXPECT_EQ(values_of(b, "b"), std::vector<std::string>{"false"});
  EXPECT_EQ(values_of(b, "c"), std::vector<std::string>{"true"});
  EXPECT_EQ(values_of(b, "d"), std::vector<std::string>{"no"});
  EXPECT_EQ(values_of(b, "e"), (std::vector<std::string>{"true", "false"}));
  EXPECT_TRUE(parse_yaml_config("# only a comment\n\n", "c.yaml").empty());
  EXPECT_TRUE(parse_yaml_config("", "d.yaml").empty());
  EXPECT_EQ(values_of(parse_yaml_config("k: []\r\n", "e.yaml"), "k"), std::vector<std::string>{});
}

TEST(ConfigFileTest, YamlOutsideTheSubsetNamesFileAndLine) {
  EXPECT_EQ(yaml_error("port: 1\nscheduler:\n  max: 3\n"),
            "cfg.yaml:3: unexpected indentation: only top-level 'key: value' lines are supported (no nested "
            "mappings or multi-line values)");
  EXPECT_EQ(yaml_error("a: 1\nb: {x: 1}\n"), "cfg.yaml:2: nested mappings are not supported");
  EXPECT_EQ(yaml_error("a: x: 1\n"),
            "cfg.yaml:1: nested mappings ('key: value' inside a value) are not supported; quote the value");
  EXPECT_EQ(yaml_error("a:\n  - x: 1\n"),
            "cfg.yaml:2: nested mappings ('key: value' inside a value) are not supported; quote the value");
  EXPECT_EQ(yaml_error("a:\n  - [1, 2]\n"), "cfg.yaml:2: nested lists are not supported");
  EXPECT_EQ(yaml_error("a: [1, [2]]\n"), "cfg.yaml:1: nested lists and mappings are not supported");
  EXPECT_EQ(yaml_error("a: [1, 2\n"),
            "cfg.yaml:1: a flow list '[...]' must close on the same line, its items separated by ','");
  EXPECT_EQ(yaml_error("base: &b 1\n"), "cfg.yaml:1: anchors, aliases and tags are not supported");
  EXPECT_EQ(yaml_error("a: 1\nb: *b\n"), "cfg.yaml:2: anchors, aliases and tags are not supported");
  EXPECT_EQ(yaml_error("a: !!str 1\n"), "cfg.yaml:1: anchors, aliases and tags are not supported");
  EXPECT_EQ(yaml_error("a: |\n  text\n"), "cfg.yaml:1: block scalars ('|', '>') are not supported");
  EXPECT_EQ(yaml_error("a: 1\n---\nb: 2\n"), "cfg.yaml:2: several YAML documents ('---') are not supported");
  EXPECT_EQ(yaml_error("a: 1\n...\n"), "cfg.yaml:2: the document end marker '...' is not supported");
  EXPECT_EQ(yaml_error("a: plain\n  continued\n"),
            "cfg.yaml:2: unexpected indentation: only top-level 'key: value' lines are supported (no nested "
            "mappings or multi-line values)");
  EXPECT_EQ(yaml_error("a: \"open\n"), "cfg.yaml:1: a double-quoted value must close on the same line");
  EXPECT_EQ(yaml_error("a: 'x' y\n"), "cfg.yaml:1: unexpected 'y' after the value");
  EXPECT_EQ(yaml_error("a: \"\\q\"\n"), "cfg.yaml:1: unknown escape '\\q' in a double-quoted value");
  EXPECT_EQ(yaml_error("\ta: 1\n"), "cfg.yaml:1: a tab in the indentation (YAML indents with spaces)");
  EXPECT_EQ(yaml_error("a: 1\na: 2\n"), "cfg.yaml:2: key 'a' appears twice (first on line 1)");
  EXPECT_EQ(yaml_error("- a\n"), "cfg.yaml:1: a list item ('- ...') must follow a 'key:' line");
  EXPECT_EQ(yaml_error("just text\n"), "cfg.yaml:1: expected 'key: value'");
  EXPECT_EQ(
      yaml_error("\"a\": 1\n"),
      "cfg.yaml:1: expected a top-level 'key: value' line (flow mappings, quoted keys, anchors and tags "
      "are not supported)");
  EXPECT_EQ(yaml_error("a b: 1\n"),
            "cfg.yaml:1: key 'a b': a key is made of letters, digits, '-', '_' and '.'");
  EXPECT_EQ(yaml_error("a:\n  -\n"), "cfg.yaml:2: an empty list item");
  EXPECT_EQ(yaml_error("%YAML 1.2\n"), "cfg.yaml:1: YAML directives are not supported");
}

TEST(ConfigFileTest, JsonScalarsAndListsOnly) {
  const std::string text =
      "{\n  \"port\": 8001,\n  \"max_num_seqs\": 64,\n  \"served-model-name\": [\"a\", \"b\"],\n"
      "  \"enable-prefix-caching\": false,\n  \"ratio\": 0.25,\n  \"tokenizer\": null\n}\n";
  const auto e = parse_json_config(text, "cfg.json");
  ASSERT_EQ(e.size(), 5u);
  EXPECT_EQ(e[0].key, "port");  // file order
  EXPECT_EQ(e[0].line, 2);
  EXPECT_EQ(values_of(e, "port"), std::vector<std::string>{"8001"});
  EXPECT_EQ(values_of(e, "served-model-name"), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(e[2].is_list);
  EXPECT_EQ(values_of(e, "enable-prefix-caching"), std::vector<std::string>{"false"});
  EXPECT_EQ(values_of(e, "ratio"), std::vector<std::string>{"0.25"});
  auto json_error = [](const std::string& t) {
    try {
      (void)parse_json_config(t, "cfg.json");
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  EXPECT_EQ(
      json_error("{\"a\": 1,\n \"nested\": {\"x\": 1}}"),
      "cfg.json:2: key 'nested': values are strings, numbers, booleans or lists of them (nested objects "
      "are not supported)");
  EXPECT_EQ(
      json_error("{\"a\": [[1]]}"),
      "cfg.json:1: key 'a': values are strings, numbers, booleans or lists of them (nested lists are not "
      "supported)");
  EXPECT_EQ(json_error("[1, 2]"), "cfg.json: the top level must be an object of flag names to values");
  EXPECT_NE(json_error("{\"a\": }").find("cfg.json: not valid JSON:"), std::string::npos);
}

TEST(ConfigFileTest, FormatByExtensionElseSniffed) {
  const std::string dir = ::testing::TempDir();
  auto write = [&](const std::string& name, const std::string& text) {
    const std::string path = dir + name;
    FILE* f = std::fopen(path.c_str(), "w");
    std::fputs(text.c_str(), f);
    std::fclose(f);
    return path;
  };
  EXPECT_EQ(read_config_file(write("ds_cfg.yml", "port: 7\n")).front().values.front(), "7");
  EXPECT_EQ(read_config_file(write("ds_cfg.JSON", "{\"port\": 8}")).front().values.front(), "8");
  EXPECT_EQ(read_config_file(write("ds_cfg.conf", "  {\"port\": 9}")).front().values.front(), "9");
  EXPECT_EQ(read_config_file(write("ds_cfg.txt", "port: 10\n")).front().values.front(), "10");
  // A .json file is JSON even when it looks like YAML.
  EXPECT_THROW((void)read_config_file(write("ds_cfg2.json", "port: 11\n")), InvalidArgument);
  try {
    (void)read_config_file(dir + "ds_no_such_file.yaml");
    ADD_FAILURE();
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()), dir + "ds_no_such_file.yaml: cannot open the config file");
  }
}

}  // namespace
}  // namespace ds
