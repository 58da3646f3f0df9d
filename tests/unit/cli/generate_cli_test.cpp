// `deepserve generate` as a user runs it: the real binary, its stdout, stderr and exit code.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>

namespace {

struct CliRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

CliRun run(const std::string& args) {
  const std::string cmd = std::string(DS_BINARY) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  CliRun r;
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string fixture(const std::string& name) { return std::string(DS_FIXTURES_DIR) + "/" + name; }

nlohmann::json expected(const std::string& name) {
  std::ifstream in(fixture(name) + "/expected.json");
  return nlohmann::json::parse(in);
}

class GenerateCli : public ::testing::TestWithParam<std::string> {};

TEST_P(GenerateCli, GreedyJsonReproducesTheFixtureTokens) {
  const auto prompt = expected(GetParam())["prompts"][2];
  std::string ids;
  for (const auto& id : prompt["prompt_ids"]) ids += (ids.empty() ? "" : ",") + std::to_string(id.get<int>());
  // Compare up to the first near-tie in the reference (margin <= 1e-2), where continuations may part.
  std::vector<int> want;
  for (const auto& step : prompt["greedy"]) {
    if (step["margin"].get<double>() <= 1e-2) break;
    want.push_back(step["token"].get<int>());
  }
  ASSERT_GE(want.size(), 5u);
  const CliRun r = run("generate --model " + fixture(GetParam()) + " --prompt-ids " + ids + " --max-tokens " +
                    std::to_string(want.size()) + " --temperature 0 --ignore-eos --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto out = nlohmann::json::parse(r.output);
  EXPECT_EQ(out["token_ids"].get<std::vector<int>>(), want);
  EXPECT_EQ(out["prompt_ids"], prompt["prompt_ids"]);
  EXPECT_EQ(out["text"], "");
  EXPECT_EQ(out["finish_reason"], "length");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GenerateCli,
                         ::testing::Values("deepseek_v3_tiny_bf16", "deepseek_v3_tiny_fp8", "deepseek_v2_tiny_bf16"));

TEST(GenerateCliErrors, StreamsTokenIdsWithoutJson) {
  const CliRun r = run("generate --model " + fixture("deepseek_v2_tiny_bf16") +
                    " --prompt-ids 5,6,7 --max-tokens 3 --temperature 0.8 --seed 7 --ignore-eos");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int a, b, c;
  EXPECT_EQ(std::sscanf(r.output.c_str(), "%d %d %d", &a, &b, &c), 3) << r.output;
  // Same seed, same tokens.
  EXPECT_EQ(run("generate --model " + fixture("deepseek_v2_tiny_bf16") +
                " --prompt-ids 5,6,7 --max-tokens 3 --temperature 0.8 --seed 7 --ignore-eos")
                .output,
            r.output);
}

TEST(GenerateCliErrors, BadPromptIdsAreRejectedWithTheReason) {
  const std::string model = " --model " + fixture("deepseek_v2_tiny_bf16");
  CliRun r = run("generate" + model + " --prompt-ids 1,x,3");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--prompt-ids: 'x' is not a token id"), std::string::npos) << r.output;
  r = run("generate" + model + " --prompt-ids 1,5000");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("prompt token 5000 (at index 1) is outside the vocabulary [0, 1024)"), std::string::npos)
      << r.output;
  r = run("generate" + model + " --prompt-ids 1 --max-tokens 300");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("exceeds the model's context length 256"), std::string::npos) << r.output;
  r = run("generate" + model + " --prompt hello");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--prompt-ids"), std::string::npos) << r.output;
  r = run("generate" + model + " --prompt-ids 1 --top-p 0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("top_p must be in (0, 1]"), std::string::npos) << r.output;
}

TEST(GenerateCliErrors, MissingModelDirectoryIsNamed) {
  const CliRun r = run("generate --model /nonexistent/model --prompt-ids 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("/nonexistent/model/config.json"), std::string::npos) << r.output;
}

}  // namespace
