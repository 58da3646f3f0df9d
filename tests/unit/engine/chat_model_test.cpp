// End to end through the tokenizer, the engine and the model on deepseek_v3_tiny_chat (a checkpoint directory
// with tokenizer.json): HF's ids for each text, HF's greedy tokens, and HF's decoded text, streamed as deltas.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>

#include "backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "model/deepseek.h"
#include "tokenizer/prompt.h"
#include "tokenizer/tokenizer.h"

namespace ds {
namespace {

const std::string kDir = std::string(DS_FIXTURES_DIR) + "/deepseek_v3_tiny_chat";

class ChatModel : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ifstream in(kDir + "/expected.json");
    expected_ = nlohmann::json::parse(in);
  }
  struct Output {
    std::vector<int32_t> tokens;
    std::string text;
    std::vector<std::string> deltas;
    FinishReason finish = FinishReason::kNone;
  };
  Output run(Engine& engine, EngineRequest request) {
    auto stream = engine.submit(std::move(request));
    while (engine.has_work()) (void)engine.step();
    Output out;
    RequestDelta d;
    while (stream->try_next(d)) {
      out.tokens.insert(out.tokens.end(), d.token_ids.begin(), d.token_ids.end());
      out.text += d.text;
      out.deltas.push_back(d.text);
      if (d.finish_reason != FinishReason::kNone) out.finish = d.finish_reason;
    }
    return out;
  }
  static EngineRequest greedy(const nlohmann::json& c) {
    EngineRequest r;
    r.prompt_ids = c["prompt_ids"].get<std::vector<int32_t>>();
    r.params.temperature = 0;
    r.params.max_tokens = static_cast<int64_t>(c["greedy"].size());
    r.params.ignore_eos = true;
    return r;
  }

  nlohmann::json expected_;
  CpuBackend backend_{2};
  std::unique_ptr<DeepseekModel> model_ = DeepseekModel::load(kDir, backend_);
  tokenizer::Tokenizer tokenizer_ = tokenizer::Tokenizer::from_dir(kDir);
};

TEST_F(ChatModel, TextPromptsTokenizeToHuggingFaceIds) {
  int checked = 0;
  for (const auto& c : expected_["cases"]) {
    if (c["kind"] != "text") continue;
    const auto ids = tokenizer_.encode(c["text"].get<std::string>(), true);
    EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.end()), c["prompt_ids"].get<std::vector<int32_t>>())
        << c["text"];
    ++checked;
  }
  EXPECT_EQ(checked, 3);
}

TEST_F(ChatModel, ConversationRendersAndTokenizesAsApplyChatTemplate) {
  const PromptEncoder encoder = PromptEncoder::from_model_dir(kDir);
  ASSERT_TRUE(encoder.has_chat_template());
  int checked = 0;
  for (const auto& c : expected_["cases"]) {
    if (c["kind"] != "chat") continue;
    ChatTemplateInputs inputs;
    inputs.messages = nlohmann::ordered_json::parse(c["messages"].dump());
    inputs.add_generation_prompt = true;
    EXPECT_EQ(encoder.render_chat(inputs), c["rendered"].get<std::string>());
    EXPECT_EQ(encoder.encode_chat(inputs), c["prompt_ids"].get<std::vector<int32_t>>());
    ++checked;
  }
  EXPECT_EQ(checked, 1);
}

TEST_F(ChatModel, GreedyTokensAndStreamedTextMatchHuggingFace) {
  EngineConfig config;
  config.num_gpu_blocks = 64;
  Engine engine(*model_, config, &tokenizer_);
  for (const auto& c : expected_["cases"]) {
    std::vector<int32_t> want;
    for (const auto& g : c["greedy"]) want.push_back(g["token"].get<int32_t>());
    const Output out = run(engine, greedy(c));
    EXPECT_EQ(out.tokens, want) << c["kind"];
    // The deltas concatenate to HF's decode of the whole output (skip_special_tokens, U+FFFD for split bytes).
    EXPECT_EQ(out.text, c["text_out"].get<std::string>());
    EXPECT_EQ(out.finish, FinishReason::kLength);
  }
}

TEST_F(ChatModel, StopStringSplitAcrossTokensCutsTheText) {
  EngineConfig config;
  config.num_gpu_blocks = 64;
  Engine engine(*model_, config, &tokenizer_);
  const auto& c = expected_["cases"][0];
  const std::string full = c["text_out"].get<std::string>();
  const std::string stop = "Layer";
  const size_t at = full.find(stop);
  ASSERT_NE(at, std::string::npos) << full;
  EngineRequest r = greedy(c);
  r.params.stop = {stop};
  const Output out = run(engine, r);
  EXPECT_EQ(out.text, full.substr(0, at));
  EXPECT_EQ(out.finish, FinishReason::kStop);
  EXPECT_LT(out.tokens.size(), c["greedy"].size());
  r.params.include_stop_str_in_output = true;
  EXPECT_EQ(run(engine, r).text, full.substr(0, at + stop.size()));
}

// deepseek_v3_tiny_scripted (tools/fixtures/make_scripted_fixture.py): weights built so that greedy decoding
// writes a fixed script, a reasoning block and a tool call after the chat's generation prompt, a short answer
// after a tool result. The ids and texts are HF's; the server's reasoning and tool-call tests stand on this.
TEST(ScriptedModel, ChatTurnsRenderAndDecodeAsHuggingFace) {
  const std::string dir = std::string(DS_FIXTURES_DIR) + "/deepseek_v3_tiny_scripted";
  std::ifstream in(dir + "/expected.json");
  const auto expected = nlohmann::json::parse(in);
  CpuBackend backend(2);
  auto model = DeepseekModel::load(dir, backend);
  const PromptEncoder encoder = PromptEncoder::from_model_dir(dir);
  EngineConfig config;
  config.num_gpu_blocks = 64;
  Engine engine(*model, config, &encoder.tokenizer());
  ASSERT_EQ(expected["cases"].size(), 2u);
  for (const auto& c : expected["cases"]) {
    ChatTemplateInputs inputs;
    inputs.messages = nlohmann::ordered_json::parse(c["messages"].dump());
    inputs.tools = nlohmann::ordered_json::parse(c["tools"].dump());
    inputs.add_generation_prompt = true;
    EXPECT_EQ(encoder.render_chat(inputs), c["rendered"].get<std::string>()) << c["name"];
    const auto prompt = encoder.encode_chat(inputs);
    EXPECT_EQ(prompt, c["prompt_ids"].get<std::vector<int32_t>>()) << c["name"];

    EngineRequest r;
    r.prompt_ids = prompt;
    r.params.temperature = 0;
    r.params.max_tokens = 32;
    auto stream = engine.submit(std::move(r));
    while (engine.has_work()) (void)engine.step();
    std::vector<int32_t> tokens;
    std::string text;
    RequestDelta d;
    FinishReason finish = FinishReason::kNone;
    while (stream->try_next(d)) {
      tokens.insert(tokens.end(), d.token_ids.begin(), d.token_ids.end());
      text += d.text;
      if (d.finish_reason != FinishReason::kNone) finish = d.finish_reason;
    }
    // The end-of-sentence token ends the output and is not part of it.
    std::vector<int32_t> want = c["token_ids"].get<std::vector<int32_t>>();
    ASSERT_EQ(want.back(), 1);
    EXPECT_EQ(tokens, want) << c["name"];
    EXPECT_EQ(text, c["text"].get<std::string>()) << c["name"];
    EXPECT_EQ(finish, FinishReason::kStop) << c["name"];
  }
  // The first turn, decoded with its special tokens (HF): the reasoning block, then content, then the call.
  EXPECT_EQ(expected["cases"][0]["text_with_special"].get<std::string>(),
            "<think>\nThe user wants the weather in Paris, so I call get_weather.\n</think>\n\nLet me check the "
            "weather.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
            "{\"city\": \"Paris\", \"unit\": \"celsius\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
            "<｜end▁of▁sentence｜>");
}

}  // namespace
}  // namespace ds
