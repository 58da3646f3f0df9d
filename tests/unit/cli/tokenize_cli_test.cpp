// `deepserve tokenize` and `deepserve generate --prompt/--chat` on the chat fixture, against HF's outputs.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>

#include "../run_command.h"

namespace {

using ds::test_util::CommandRun;
using ds::test_util::run_deepserve;

const std::string kModel = std::string(DS_FIXTURES_DIR) + "/deepseek_v3_tiny_chat";

nlohmann::json cases() {
  std::ifstream in(kModel + "/expected.json");
  return nlohmann::json::parse(in)["cases"];
}

std::string write_chat(const nlohmann::json& messages) {
  const std::string path = ::testing::TempDir() + "/chat.json";
  std::ofstream(path) << messages.dump();
  return path;
}

TEST(TokenizeCli, TextGivesHuggingFaceIds) {
  const auto c = cases()[0];
  const CommandRun r = run_deepserve("tokenize --model " + kModel + " --text '" + c["text"].get<std::string>() + "' --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["ids"], c["prompt_ids"]);
  EXPECT_EQ(j["text"], c["text"]);
}

TEST(TokenizeCli, ChatRendersTheTemplateLikeApplyChatTemplate) {
  const auto c = cases()[3];
  ASSERT_EQ(c["kind"], "chat");
  const CommandRun r = run_deepserve("tokenize --model " + kModel + " --chat " + write_chat(c["messages"]) +
                       " --add-generation-prompt --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["text"], c["rendered"]);
  EXPECT_EQ(j["ids"], c["prompt_ids"]);
}

TEST(GenerateCliText, PromptAndChatDecodeToHuggingFaceText) {
  const auto all = cases();
  CommandRun r = run_deepserve("generate --model " + kModel + " --prompt '" + all[0]["text"].get<std::string>() +
                 "' --max-tokens 12 --temperature 0 --ignore-eos --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["text"], all[0]["text_out"]);
  r = run_deepserve("generate --model " + kModel + " --chat " + write_chat(all[3]["messages"]) +
          " --max-tokens 12 --temperature 0 --ignore-eos --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["prompt_ids"], all[3]["prompt_ids"]);
  EXPECT_EQ(j["text"], all[3]["text_out"]);
}

TEST(TokenizeCli, ErrorsSayWhatIsMissing) {
  CommandRun r = run_deepserve("tokenize --model " + std::string(DS_FIXTURES_DIR) + "/deepseek_v2_tiny_bf16 --text hi");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("has no tokenizer.json"), std::string::npos) << r.output;
  const std::string bad = ::testing::TempDir() + "/bad_chat.json";
  std::ofstream(bad) << "[{\"content\": \"no role\"}]";
  r = run_deepserve("tokenize --model " + kModel + " --chat " + bad);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("every message needs a string \"role\""), std::string::npos) << r.output;
}

}  // namespace
