// `deepserve serve --config FILE`: flags from YAML or JSON, the command line winning, and bad files refused
// at start-up with the file, the line and what is wrong.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <regex>

#include "../run_command.h"
#include "server_harness.h"

namespace ds::server {
namespace {

using ds::test_util::CommandRun;
using ds::test_util::run_deepserve;

using nlohmann::json;

const std::string kModel = std::string(DS_FIXTURES_DIR) + "/deepseek_v2_tiny_bf16";

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path) << text;
  return path;
}

int64_t metric(const std::string& text, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(name + "\\{[^}]*\\} ([0-9.e+]+)"))) return -1;
  return static_cast<int64_t>(std::stod(m[1]));
}

// The same flags from a YAML and from a JSON file; --max-model-len on the command line wins over both.
void expect_config_applied(const std::string& config) {
  testing::ServeProcess serve(
      {"--config", config, "--model", kModel, "--max-model-len", "64", "--threads", "1", "--access-log", ""});
  const std::string log = serve.stderr_text();
  EXPECT_NE(log.find("as 'alpha'"), std::string::npos) << log;
  EXPECT_NE(log.find("max_model_len 64,"), std::string::npos) << log;  // the flag, not the file's 100
  // api-key (a list in the file): both keys work, no key is refused.
  EXPECT_EQ(testing::http(serve.port(), "GET", "/v1/models").status, 401);
  const auto models = testing::http(serve.port(), "GET", "/v1/models", "", {"Authorization: Bearer k2"});
  ASSERT_EQ(models.status, 200) << models.body;
  const json data = models.json()["data"];
  ASSERT_EQ(data.size(), 2u);
  EXPECT_EQ(data[0]["id"], "alpha");
  EXPECT_EQ(data[1]["id"], "beta");
  EXPECT_EQ(data[0]["max_model_len"], 64);
  // enable_prefix_caching: false (underscores, as vLLM's configs write it): the same 40-token prompt twice
  // hits nothing.
  std::vector<int> prompt(40);
  for (int i = 0; i < 40; ++i) prompt[static_cast<size_t>(i)] = 3 + i;
  const json req = {{"prompt", prompt}, {"max_tokens", 2}};
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(testing::post_json(serve.port(), "/v1/completions", req, {"Authorization: Bearer k1"}).status,
              200);
  }
  const auto metrics = testing::http(serve.port(), "GET", "/metrics", "", {"Authorization: Bearer k1"});
  EXPECT_EQ(metric(metrics.body, "deepserve:prefix_cache_hits_total"), 0) << metrics.body;
  EXPECT_GT(metric(metrics.body, "deepserve:prompt_tokens_total"), 79);
}

TEST(ServeConfigTest, YamlFileSetsFlagsAndTheCommandLineWins) {
  expect_config_applied(write_file("ds_serve.yaml",
                                   "# deepserve serve, vLLM style\n"
                                   "served-model-name:\n"
                                   "  - alpha\n"
                                   "  - beta\n"
                                   "max_model_len: 100\n"
                                   "api-key: [k1, \"k2\"]\n"
                                   "enable_prefix_caching: false\n"
                                   "max_num_seqs: 4\n"));
}

TEST(ServeConfigTest, JsonFileSetsFlagsAndTheCommandLineWins) {
  expect_config_applied(write_file("ds_serve.json",
                                   R"({"served_model_name": ["alpha", "beta"], "max-model-len": 100,
                                       "api_key": ["k1", "k2"], "enable-prefix-caching": false})"));
}

TEST(ServeConfigTest, RepeatableFlagOnTheCommandLineReplacesTheFileList) {
  const std::string config = write_file("ds_serve_names.yml", "served-model-name: [alpha, beta]\n");
  testing::ServeProcess serve({"--config", config, "--model", kModel, "--served-model-name", "gamma",
                               "--threads", "1", "--access-log", ""});
  const json data = testing::http(serve.port(), "GET", "/v1/models").json()["data"];
  ASSERT_EQ(data.size(), 1u);
  EXPECT_EQ(data[0]["id"], "gamma");
}

TEST(ServeConfigTest, BadFilesAreRefusedWithFileAndLine) {
  struct Case {
    std::string name, text, message;
  };
  const std::vector<Case> cases = {
      {"ds_bad_key.yaml", "port: 0\nmax-num-seq: 4\n",
       "ds_bad_key.yaml:2: unknown key 'max-num-seq': `deepserve serve` has no flag --max-num-seq"},
      {"ds_bad_key.json", "{\"port\": 0,\n \"bogus_flag\": 1}",
       "ds_bad_key.json:2: unknown key 'bogus_flag': `deepserve serve` has no flag --bogus-flag"},
      {"ds_nested.yaml", "port: 0\nscheduler:\n  max_num_seqs: 4\n",
       "ds_nested.yaml:3: unexpected indentation: only top-level 'key: value' lines are supported"},
      {"ds_anchor.yaml", "port: &p 0\n", "ds_anchor.yaml:1: anchors, aliases and tags are not supported"},
      {"ds_docs.yaml", "port: 0\n---\nport: 1\n", "ds_docs.yaml:2: several YAML documents"},
      {"ds_range.yaml", "port: 70000\n", "ds_range.yaml:1: 'port': "},
      {"ds_list.yaml", "port: [1, 2]\n", "ds_list.yaml:1: 'port' takes one value, not a list"},
      {"ds_flag.yaml", "enable-prefix-caching: maybe\n", "ds_flag.yaml:1: 'enable-prefix-caching': "},
      {"ds_config.yaml", "config: other.yaml\n", "ds_config.yaml:1: unknown key 'config'"},
      {"ds_json.json", "{\"port\": 0,", "ds_json.json: not valid JSON"},
  };
  for (const auto& c : cases) {
    const std::string path = write_file(c.name, c.text);
    const CommandRun r = run_deepserve("serve --config " + path + " --model " + kModel);
    EXPECT_NE(r.exit_code, 0) << c.name;
    EXPECT_NE(r.output.find("--config: " + ::testing::TempDir() + c.message), std::string::npos)
        << c.name << ": " << r.output;
  }
  const CommandRun missing = run_deepserve("serve --config /nonexistent/deepserve.yaml");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find("--config: /nonexistent/deepserve.yaml: cannot open the config file"),
            std::string::npos)
      << missing.output;
}

// The connection flags of issue 19: out-of-range values stop the start with the flag's name, on the command
// line and from a config file; good values from a file are taken (a 1 s write timeout ends a stalled stream).
TEST(ServeConfigTest, BackpressureAndIdleFlagsAreValidatedAndReadFromTheConfig) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"--max-pending-bytes 100", "--max-pending-bytes: Value 100 not in range"},
      {"--write-timeout 0", "--write-timeout: Value 0 not in range"},
      {"--keep-alive-timeout -1", "--keep-alive-timeout: Value -1 not in range"},
      {"--write-timeout soon", "--write-timeout"},
  };
  for (const auto& [flags, message] : bad) {
    const CommandRun r = run_deepserve("serve --model " + kModel + " " + flags);
    EXPECT_NE(r.exit_code, 0) << flags;
    EXPECT_NE(r.output.find(message), std::string::npos) << flags << ": " << r.output;
  }
  const std::string bad_file = write_file("ds_pending.yaml", "max_pending_bytes: 12\n");
  const CommandRun r = run_deepserve("serve --config " + bad_file + " --model " + kModel);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("ds_pending.yaml:1: 'max_pending_bytes': "), std::string::npos) << r.output;

  const std::string config = write_file(
      "ds_connections.yaml", "write-timeout: 1\nmax_pending_bytes: 4096\nkeep_alive_timeout: 0.3\n");
  testing::ServeProcess serve({"--config", config, "--model", kModel, "--threads", "1", "--access-log", ""});
  // keep-alive-timeout 0.3: an idle keep-alive connection is closed well before the 10 s header timeout.
  testing::Connection idle(serve.port());
  idle.send(testing::request_text("GET", "/health", "", {}, /*keep_alive=*/true));
  EXPECT_EQ(idle.read_reply().status, 200);
  EXPECT_TRUE(idle.closed_by_peer(std::chrono::seconds(2)));
}

}  // namespace
}  // namespace ds::server
