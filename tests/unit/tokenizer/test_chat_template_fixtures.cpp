// Compares the engine with jinja2 on tests/fixtures/templates/expected.json, which
// tools/fixtures/make_template_fixtures.py renders with jinja2 configured as transformers configures it:
// DeepSeek's published chat templates over conversations with system prompts, tool calls, tool outputs
// and <think> content, and one synthetic template per Jinja feature. Skipped when the file is absent.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "tokenizer/chat_template.h"
#include "tokenizer/jinja/template.h"

namespace ds {
namespace {

using nlohmann::ordered_json;

const std::filesystem::path kDir = std::filesystem::path(DS_FIXTURES_DIR) / "templates";

std::string read(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class TemplateFixtures : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto path = kDir / "expected.json";
    if (!std::filesystem::exists(path))
      GTEST_SKIP() << path << " not found; run tools/fixtures/make_template_fixtures.py";
    fixture_ = ordered_json::parse(read(path));
    std::tm tm{};
    std::istringstream clock(fixture_["clock"].get<std::string>());
    clock >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%S");
    mktime(&tm);  // fills tm_wday / tm_yday for %A, %j
    options_.clock = [tm] { return tm; };
  }

  // The variables transformers passes to the template.
  ordered_json variables(const ordered_json& c) const {
    ordered_json vars = ordered_json::object();
    vars["messages"] = fixture_["conversations"][c["conversation"].get<std::string>()];
    vars["tools"] =
        c["tools"].is_null() ? ordered_json() : fixture_["tool_sets"][c["tools"].get<std::string>()];
    vars["documents"] = nullptr;
    vars["add_generation_prompt"] = c["add_generation_prompt"];
    for (const auto& [k, v] : fixture_["kwargs_sets"][c["kwargs"].get<std::string>()].items()) vars[k] = v;
    return vars;
  }

  ordered_json fixture_;
  jinja::TemplateOptions options_;
};

TEST_F(TemplateFixtures, RenderLikeJinja2) {
  int checked = 0;
  for (const auto& c : fixture_["cases"]) {
    const std::string name = c["name"].get<std::string>();
    SCOPED_TRACE(name);
    const std::string source = fixture_["sources"][c["template"].get<std::string>()].get<std::string>();
    const ordered_json vars = variables(c);
    if (c.contains("expected")) {
      try {
        const jinja::Template t(source, options_);
        EXPECT_EQ(t.render(vars), c["expected"].get<std::string>());
      } catch (const jinja::TemplateError& e) {
        ADD_FAILURE() << "threw " << e.what();
      }
    } else {
      const std::string type = c["error"]["type"].get<std::string>();
      try {
        const jinja::Template t(source, options_);
        const std::string out = t.render(vars);
        ADD_FAILURE() << "rendered " << out << " where jinja2 raised " << type << ": "
                      << c["error"]["message"];
      } catch (const jinja::TemplateError& e) {
        if (type == "TemplateError") {
          EXPECT_EQ(e.message(), c["error"]["message"].get<std::string>());  // raise_exception's message
        }
        if (type == "TemplateSyntaxError" || type == "TemplateAssertionError") {
          EXPECT_EQ(e.kind(), "TemplateSyntaxError") << e.what();
        }
        EXPECT_GT(e.line(), 0) << e.what();
      }
    }
    ++checked;
  }
  EXPECT_GT(checked, 300);
}

// The same renderings through ChatTemplate::apply, as the server calls it.
TEST_F(TemplateFixtures, ModelTemplatesThroughChatTemplate) {
  int checked = 0;
  for (const auto& c : fixture_["cases"]) {
    const std::string tname = c["template"].get<std::string>();
    if (tname.rfind("deepseek", 0) != 0 || !c.contains("expected")) continue;
    SCOPED_TRACE(c["name"].get<std::string>());
    const ordered_json& kwargs = fixture_["kwargs_sets"][c["kwargs"].get<std::string>()];
    const ChatTemplate chat(fixture_["sources"][tname].get<std::string>(), kwargs, options_);
    ChatTemplateInputs in;
    in.messages = fixture_["conversations"][c["conversation"].get<std::string>()];
    in.add_generation_prompt = c["add_generation_prompt"].get<bool>();
    if (!c["tools"].is_null()) in.tools = fixture_["tool_sets"][c["tools"].get<std::string>()];
    for (const auto& [k, v] : kwargs.items()) {
      if (k != "bos_token" && k != "eos_token" && k != "pad_token") in.kwargs[k] = v;
    }
    EXPECT_EQ(chat.apply(in), c["expected"].get<std::string>());
    ++checked;
  }
  EXPECT_GT(checked, 100);
}

// The committed .jinja files are the sources the fixtures were rendered from.
TEST_F(TemplateFixtures, SourcesMatchCommittedTemplates) {
  for (const char* name : {"deepseek-v3", "deepseek-r1", "deepseek-r1-think", "deepseek-v3.1"}) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(fixture_["sources"].contains(name));
    EXPECT_EQ(read(kDir / (std::string(name) + ".jinja")), fixture_["sources"][name].get<std::string>());
  }
}

}  // namespace
}  // namespace ds
