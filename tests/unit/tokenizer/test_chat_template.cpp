// ChatTemplate: loading tokenizer_config.json as transformers does, and rendering DeepSeek's templates.
// The DeepSeek strings below are written out by hand from the template text; the fixture test checks the
// same renderings against jinja2 on many more conversations.
#include "tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

namespace ds {
namespace {

using nlohmann::ordered_json;

const std::filesystem::path kTemplates = std::filesystem::path(DS_FIXTURES_DIR) / "templates";
constexpr const char* kBos = "<｜begin▁of▁sentence｜>";
constexpr const char* kEos = "<｜end▁of▁sentence｜>";

std::string read(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("ds_chat_template_" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }
  void write(const std::string& name, const std::string& text) const {
    std::filesystem::create_directories((path_ / name).parent_path());
    std::ofstream(path_ / name, std::ios::binary) << text;
  }

 private:
  std::filesystem::path path_;
};

ChatTemplateInputs conversation(ordered_json messages, bool add_generation_prompt) {
  ChatTemplateInputs in;
  in.messages = std::move(messages);
  in.add_generation_prompt = add_generation_prompt;
  return in;
}

TEST(ChatTemplate, LoadsDeepSeekR1TokenizerConfig) {
  const auto ct = ChatTemplate::from_tokenizer_config_file(kTemplates / "deepseek-r1.tokenizer_config.json");
  // bos/eos/pad are AddedToken objects in this file; unk_token is null.
  ASSERT_TRUE(ct.bos_token().has_value());
  EXPECT_EQ(*ct.bos_token(), kBos);
  EXPECT_EQ(*ct.eos_token(), kEos);
  EXPECT_TRUE(ct.add_bos_token());
  EXPECT_EQ(ct.special_tokens().dump(),
            ordered_json({{"bos_token", kBos}, {"eos_token", kEos}, {"pad_token", kEos}}).dump());
  EXPECT_EQ(ct.template_names(), std::vector<std::string>{"default"});
  EXPECT_EQ(ct.source(), read(kTemplates / "deepseek-r1.jinja"));
}

TEST(ChatTemplate, DeepSeekR1RendersAConversation) {
  const auto ct = ChatTemplate::from_tokenizer_config_file(kTemplates / "deepseek-r1.tokenizer_config.json");
  const auto in = conversation({{{"role", "system"}, {"content", "Be brief."}},
                                {{"role", "user"}, {"content", "2+2?"}},
                                {{"role", "assistant"}, {"content", "<think>\nadd\n</think>\n\n4"}},
                                {{"role", "user"}, {"content", "3+3?"}}},
                               true);
  // The system prompt follows BOS directly; the earlier answer loses its <think> part.
  EXPECT_EQ(ct.apply(in), std::string(kBos) + "Be brief.<｜User｜>2+2?<｜Assistant｜>\n\n4" + kEos +
                              "<｜User｜>3+3?<｜Assistant｜>");
  auto no_prompt = in;
  no_prompt.add_generation_prompt = false;
  EXPECT_EQ(ct.apply(no_prompt),
            std::string(kBos) + "Be brief.<｜User｜>2+2?<｜Assistant｜>\n\n4" + kEos + "<｜User｜>3+3?");
}

TEST(ChatTemplate, DeepSeekR1RendersToolCalls) {
  const auto ct = ChatTemplate::from_tokenizer_config_file(kTemplates / "deepseek-r1.tokenizer_config.json");
  const auto in =
      conversation({{{"role", "user"}, {"content", "Weather?"}},
                    {{"role", "assistant"},
                     {"content", nullptr},
                     {"tool_calls",
                      {{{"type", "function"},
                        {"function", {{"name", "get_weather"}, {"arguments", "{\"city\": \"Paris\"}"}}}}}}},
                    {{"role", "tool"}, {"content", "18C"}}},
                   true);
  EXPECT_EQ(ct.apply(in),
            std::string(kBos) +
                "<｜User｜>Weather?<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function"
                "<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜>"
                "<｜tool▁calls▁end｜>" +
                kEos +
                "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>18C<｜tool▁output▁end｜>"
                "<｜tool▁outputs▁end｜>");
}

TEST(ChatTemplate, DeepSeekV31ThinkingKwarg) {
  const ChatTemplate ct(read(kTemplates / "deepseek-v3.1.jinja"), {{"bos_token", kBos}, {"eos_token", kEos}});
  auto in = conversation({{{"role", "user"}, {"content", "Hi"}}}, true);
  EXPECT_EQ(ct.apply(in), std::string(kBos) + "<｜User｜>Hi<｜Assistant｜></think>");
  in.kwargs = {{"thinking", true}};
  EXPECT_EQ(ct.apply(in), std::string(kBos) + "<｜User｜>Hi<｜Assistant｜><think>");
}

TEST(ChatTemplate, TemplatesGetToolsDocumentsAndSpecialTokens) {
  const ChatTemplate ct(
      "{{ bos_token }}|{{ tools is none }}|{{ documents is none }}|{{ add_generation_prompt }}|{{ eos_token "
      "}}|{{ x }}",
      {{"bos_token", "<s>"}, {"eos_token", {{"content", "</s>"}, {"lstrip", false}}}});
  ChatTemplateInputs in;
  EXPECT_EQ(ct.apply(in), "<s>|True|True|False|</s>|");
  in.kwargs = {{"x", 1}, {"bos_token", "[override]"}};  // kwargs win over special tokens, as in transformers
  in.tools = ordered_json::array({{{"type", "function"}}});
  EXPECT_EQ(ct.apply(in), "[override]|False|True|False|</s>|1");
  in.kwargs = {{"messages", 1}};
  EXPECT_THROW((void)ct.apply(in), ChatTemplateError);
}

TEST(ChatTemplate, NamedTemplatesAreChosenAsTransformersChooses) {
  const ordered_json config = {{"chat_template",
                                {{{"name", "default"}, {"template", "default"}},
                                 {{"name", "tool_use"}, {"template", "tools"}},
                                 {{"name", "rag"}, {"template", "rag"}}}},
                               {"bos_token", "<s>"}};
  const auto ct = ChatTemplate::from_tokenizer_config(config);
  EXPECT_EQ(ct.template_names(), (std::vector<std::string>{"default", "tool_use", "rag"}));
  ChatTemplateInputs in;
  EXPECT_EQ(ct.apply(in), "default");
  EXPECT_EQ(ct.apply(in, "rag"), "rag");
  in.tools = ordered_json::array();
  EXPECT_EQ(ct.apply(in), "tools");  // tools given and a tool_use template exists
  EXPECT_THROW((void)ct.apply(in, "nope"), ChatTemplateError);

  const auto no_default = ChatTemplate::from_tokenizer_config(
      {{"chat_template", {{{"name", "a"}, {"template", "A"}}, {{"name", "b"}, {"template", "B"}}}}});
  EXPECT_THROW((void)no_default.apply(ChatTemplateInputs{}), ChatTemplateError);
  EXPECT_EQ(no_default.apply(ChatTemplateInputs{}, "b"), "B");
}

TEST(ChatTemplate, ConfigErrorsAreUserErrors) {
  EXPECT_THROW((void)ChatTemplate::from_tokenizer_config({{"bos_token", "<s>"}}),
               ChatTemplateError);  // base model
  EXPECT_THROW((void)ChatTemplate::from_tokenizer_config({{"chat_template", 3}}), ChatTemplateError);
  EXPECT_THROW(
      (void)ChatTemplate::from_tokenizer_config({{"chat_template", ordered_json::array({{{"name", "x"}}})}}),
      ChatTemplateError);
  EXPECT_THROW((void)ChatTemplate::from_tokenizer_config({{"chat_template", "x"}, {"bos_token", 5}}),
               ChatTemplateError);
  EXPECT_THROW((void)ChatTemplate::from_tokenizer_config({{"chat_template", "{% if %}"}}),
               jinja::TemplateSyntaxError);
  EXPECT_THROW((void)ChatTemplate::from_tokenizer_config_file("/nonexistent/tokenizer_config.json"),
               UserError);
}

TEST(ChatTemplate, ModelDirPrefersChatTemplateJinja) {
  TempDir dir;
  dir.write("tokenizer_config.json",
            R"({"chat_template": "from config", "bos_token": "<s>", "add_bos_token": false})");
  EXPECT_EQ(ChatTemplate::from_model_dir(dir.path()).apply(ChatTemplateInputs{}), "from config");
  dir.write("chat_template.jinja", "{{ bos_token }}from file\n");
  const auto ct = ChatTemplate::from_model_dir(dir.path());
  EXPECT_EQ(ct.apply(ChatTemplateInputs{}), "<s>from file");  // one trailing newline dropped, as jinja2 does
  EXPECT_FALSE(ct.add_bos_token());
  dir.write("additional_chat_templates/tool_use.jinja", "tools!");
  const auto named = ChatTemplate::from_model_dir(dir.path());
  EXPECT_EQ(named.template_names(), (std::vector<std::string>{"default", "tool_use"}));
  ChatTemplateInputs with_tools;
  with_tools.tools = ordered_json::array();
  EXPECT_EQ(named.apply(with_tools), "tools!");
}

TEST(ChatTemplate, RenderErrorsNameTheTemplateLine) {
  const ChatTemplate ct(read(kTemplates / "deepseek-r1.jinja"), {{"bos_token", kBos}});
  // The official template concatenates content with `+`: a null content is a TypeError in jinja2 too.
  try {
    (void)ct.apply(conversation({{{"role", "user"}, {"content", nullptr}}}, true));
    FAIL();
  } catch (const jinja::TemplateRuntimeError& e) {
    EXPECT_EQ(e.kind(), "TypeError");
    EXPECT_EQ(e.line(), 1);
    EXPECT_GT(e.column(), 1);
  }
}

}  // namespace
}  // namespace ds
