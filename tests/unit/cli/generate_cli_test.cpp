// `deepserve generate` as a user runs it: the real binary, its stdout, stderr and exit code.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <unistd.h>
#include <string>

#include "../run_command.h"

namespace {

using ds::test_util::CommandRun;
using ds::test_util::run_deepserve;

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
  const CommandRun r = run_deepserve("generate --model " + fixture(GetParam()) + " --prompt-ids " + ids + " --max-tokens " +
                    std::to_string(want.size()) + " --temperature 0 --ignore-eos --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto out = nlohmann::json::parse(r.output);
  EXPECT_EQ(out["token_ids"].get<std::vector<int>>(), want);
  EXPECT_EQ(out["prompt_ids"], prompt["prompt_ids"]);
  EXPECT_EQ(out["text"], "");
  EXPECT_EQ(out["finish_reason"], "length");
}

TEST_P(GenerateCli, TensorParallelTwoGivesTheFixtureTokensToo) {
  const auto prompt = expected(GetParam())["prompts"][2];
  std::string ids;
  for (const auto& id : prompt["prompt_ids"]) ids += (ids.empty() ? "" : ",") + std::to_string(id.get<int>());
  std::vector<int> want;
  for (const auto& step : prompt["greedy"]) {
    if (step["margin"].get<double>() <= 1e-2) break;
    want.push_back(step["token"].get<int>());
  }
  const CommandRun r = run_deepserve("generate --model " + fixture(GetParam()) + " --prompt-ids " + ids +
                                     " --max-tokens " + std::to_string(want.size()) +
                                     " --temperature 0 --ignore-eos --json --tensor-parallel-size 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["token_ids"].get<std::vector<int>>(), want);
}

TEST(GenerateCliErrors, ATensorParallelSizeTheHeadsDoNotDivideIsRefused) {
  const CommandRun r = run_deepserve("generate --model " + fixture("deepseek_v3_tiny_bf16") +
                                     " --prompt-ids 5,6 --max-tokens 1 --tensor-parallel-size 3");
  EXPECT_EQ(r.exit_code, 2);  // a usage error
  EXPECT_NE(r.output.find("--tensor-parallel-size 3: num_attention_heads 4 is not divisible by it"),
            std::string::npos)
      << r.output;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GenerateCli,
                         ::testing::Values("deepseek_v3_tiny_bf16", "deepseek_v3_tiny_fp8", "deepseek_v2_tiny_bf16"));

TEST(GenerateCliErrors, StreamsTokenIdsWithoutJson) {
  const CommandRun r = run_deepserve("generate --model " + fixture("deepseek_v2_tiny_bf16") +
                    " --prompt-ids 5,6,7 --max-tokens 3 --temperature 0.8 --seed 7 --ignore-eos");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int a, b, c;
  EXPECT_EQ(std::sscanf(r.output.c_str(), "%d %d %d", &a, &b, &c), 3) << r.output;
  // Same seed, same tokens.
  EXPECT_EQ(run_deepserve("generate --model " + fixture("deepseek_v2_tiny_bf16") +
                " --prompt-ids 5,6,7 --max-tokens 3 --temperature 0.8 --seed 7 --ignore-eos")
                .output,
            r.output);
}

TEST(GenerateCliErrors, BadPromptIdsAreRejectedWithTheReason) {
  const std::string model = " --model " + fixture("deepseek_v2_tiny_bf16");
  CommandRun r = run_deepserve("generate" + model + " --prompt-ids 1,x,3");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--prompt-ids: 'x' is not a token id"), std::string::npos) << r.output;
  r = run_deepserve("generate" + model + " --prompt-ids 1,5000");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("prompt token 5000 (at index 1) is outside the vocabulary [0, 1024)"), std::string::npos)
      << r.output;
  r = run_deepserve("generate" + model + " --prompt-ids 1 --max-tokens 300");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("maximum context length is 256 tokens; the prompt has 1 and max_tokens asks for 300 more"),
            std::string::npos)
      << r.output;
  r = run_deepserve("generate" + model + " --prompt hello");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--prompt-ids"), std::string::npos) << r.output;
  r = run_deepserve("generate" + model + " --prompt-ids 1 --top-p 0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("top_p must be in (0, 1]"), std::string::npos) << r.output;
}

TEST(GenerateCliBatch, EachLineGetsItsAnswerInInputOrderAndBadLinesGetErrors) {
  char path[] = "/tmp/ds_batch_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  const auto fixture_prompt = expected("deepseek_v2_tiny_bf16")["prompts"][2];
  std::vector<int> want;
  for (const auto& step : fixture_prompt["greedy"]) {
    if (step["margin"].get<double>() <= 1e-2 || want.size() == 4) break;
    want.push_back(step["token"].get<int>());
  }
  const std::string lines =
      "{\"id\": \"a\", \"prompt\": " + fixture_prompt["prompt_ids"].dump() +
      ", \"max_tokens\": " + std::to_string(want.size()) + ", \"temperature\": 0, \"ignore_eos\": true}\n"
      "{\"id\": \"b\", \"prompt\": [5, 6], \"max_tokens\": 3, \"n\": 2, \"seed\": 1, \"ignore_eos\": true, "
      "\"frobnicate\": 1}\n"
      "not json\n"
      "{\"id\": 7, \"prompt\": [5, 6], \"temperature\": -1}\n"
      "{\"id\": 8, \"prompt\": \"hello\"}\n";
  ASSERT_EQ(write(fd, lines.data(), lines.size()), static_cast<ssize_t>(lines.size()));
  close(fd);
  const CommandRun r = run_deepserve("generate --model " + fixture("deepseek_v2_tiny_bf16") + " --batch " + path);
  std::remove(path);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<nlohmann::json> out;
  std::istringstream in(r.output);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("warning:", 0) != 0) out.push_back(nlohmann::json::parse(line));  // stderr is mixed in
  ASSERT_EQ(out.size(), 5u) << r.output;
  EXPECT_EQ(out[0]["id"], "a");
  EXPECT_EQ(out[0]["token_ids"].get<std::vector<int>>(), want);
  EXPECT_EQ(out[0]["finish_reason"], "length");
  EXPECT_EQ(out[1]["id"], "b");
  ASSERT_EQ(out[1]["outputs"].size(), 2u);
  EXPECT_EQ(out[1]["outputs"][0]["token_ids"].size(), 3u);
  EXPECT_NE(out[2]["error"].get<std::string>().find("line 3: not valid JSON"), std::string::npos);
  EXPECT_EQ(out[3]["id"], 7);
  EXPECT_NE(out[3]["error"].get<std::string>().find("temperature must be"), std::string::npos) << out[3];
  EXPECT_NE(out[4]["error"].get<std::string>().find("needs the model's tokenizer"), std::string::npos) << out[4];
}

TEST(GenerateCliBatch, UnknownFieldsAreWarnedAbout) {
  char path[] = "/tmp/ds_batch_XXXXXX";
  const int fd = mkstemp(path);
  const std::string line = "{\"prompt\": [5, 6], \"max_tokens\": 1, \"frobnicate\": 1}\n";
  ASSERT_EQ(write(fd, line.data(), line.size()), static_cast<ssize_t>(line.size()));
  close(fd);
  const CommandRun r = run_deepserve("generate --model " + fixture("deepseek_v2_tiny_bf16") + " --batch " + path);
  std::remove(path);
  EXPECT_NE(r.output.find("line 1: unknown field 'frobnicate' ignored"), std::string::npos) << r.output;
}

TEST(GenerateCliErrors, MissingModelDirectoryIsNamed) {
  const CommandRun r = run_deepserve("generate --model /nonexistent/model --prompt-ids 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("/nonexistent/model/config.json"), std::string::npos) << r.output;
}

}  // namespace

// --dtype as vLLM spells it: auto and the device's own dtype run, the others are refused before the load with
// what the device computes in.
TEST(GenerateCliDtype, TheDevicesOwnDtypeRunsOthersAreRefusedWithTheReason) {
  const std::string args = "generate --model " + fixture("deepseek_v2_tiny_bf16") +
                           " --prompt-ids 5,6,7 --max-tokens 4 --temperature 0 --ignore-eos --json";
  const CommandRun plain = run_deepserve(args), fp32 = run_deepserve(args + " --dtype float32"),
                   autod = run_deepserve(args + " --dtype auto");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  EXPECT_EQ(fp32.output, plain.output);
  EXPECT_EQ(autod.output, plain.output);
  const CommandRun bf16 = run_deepserve(args + " --dtype bfloat16");
  EXPECT_EQ(bf16.exit_code, 2);
  EXPECT_NE(bf16.output.find("--dtype bfloat16: the CPU backend is the float32 reference"), std::string::npos)
      << bf16.output;
  const CommandRun half = run_deepserve(args + " --dtype float16");
  EXPECT_EQ(half.exit_code, 2);
  EXPECT_NE(half.output.find("--dtype float16: not supported"), std::string::npos) << half.output;
  const CommandRun cuda_fp32 = run_deepserve(args + " --device cuda --dtype float32");
  EXPECT_EQ(cuda_fp32.exit_code, 2);
  EXPECT_NE(cuda_fp32.output.find("--dtype float32"), std::string::npos) << cuda_fp32.output;
  const CommandRun bad = run_deepserve(args + " --dtype fp8");  // not a dtype at all: CLI11's own refusal
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("--dtype"), std::string::npos) << bad.output;
}

// --enforce-eager is accepted everywhere; on the CPU (no graphs) it changes nothing and says so.
TEST(GenerateCliEager, EnforceEagerIsANoteOnTheCpu) {
  const std::string args = "generate --model " + fixture("deepseek_v2_tiny_bf16") +
                           " --prompt-ids 5,6,7 --max-tokens 4 --temperature 0 --ignore-eos --json";
  const CommandRun plain = run_deepserve(args), eager = run_deepserve(args + " --enforce-eager");
  ASSERT_EQ(plain.exit_code, 0) << plain.output;
  ASSERT_EQ(eager.exit_code, 0) << eager.output;
  EXPECT_NE(eager.output.find("--enforce-eager has no effect on --device cpu (graphs are CUDA only)"),
            std::string::npos)
      << eager.output;
  EXPECT_EQ(plain.output.find("enforce-eager"), std::string::npos) << plain.output;
  // The JSON (the last line) is the same.
  auto last_line = [](const std::string& s) {
    const size_t end = s.find_last_not_of('\n');
    return s.substr(s.rfind('\n', end) + 1, end - s.rfind('\n', end));
  };
  EXPECT_EQ(last_line(eager.output), last_line(plain.output));
  EXPECT_NE(last_line(plain.output).find("\"token_ids\""), std::string::npos) << plain.output;
}
