// Malformed or unsupported tokenizer.json / tokenizer_config.json: a ds::UserError naming the field.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tiny_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "util/check.h"

namespace ds::tokenizer {
namespace {

using nlohmann::json;

// The message of the UserError thrown while loading `tokenizer_json`, or "" if it loads.
std::string load_error(const json& tokenizer_json) {
  try {
    (void)Tokenizer::from_json_text(tokenizer_json.dump());
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

TEST(TokenizerErrors, NotJson) {
  try {
    (void)Tokenizer::from_json_text("{\"model\": ");
    FAIL() << "expected an error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
}

// Found by tests/fuzz/fuzz_tokenizer_json (tests/fuzz/regressions/fuzz_tokenizer_json/number-out-of-range):
// nlohmann reports a number beyond double's range as out_of_range, not parse_error, and only parse_error
// was caught, so such a file ended the process through an uncaught exception.
TEST(TokenizerErrors, NumberOutOfRangeIsNotValidJson) {
  for (const char* text : {R"({"model": {"vocab": {"a": 431e308}, "merges": []}})", R"({"x": -1e400})"}) {
    try {
      (void)Tokenizer::from_json_text(text);
      FAIL() << "expected an error for " << text;
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find("tokenizer.json is not valid JSON"), std::string::npos)
          << e.what();
    }
  }
  try {
    (void)TokenizerConfig::from_json_text(R"({"add_bos_token": 1e999})");
    FAIL() << "expected an error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer_config.json is not valid JSON"), std::string::npos)
        << e.what();
  }
}

TEST(TokenizerErrors, MissingOrMistypedFieldsAreNamed) {
  json tok = testing::tiny_tokenizer();
  tok.erase("model");
  EXPECT_NE(load_error(tok).find("model: missing"), std::string::npos) << load_error(tok);

  tok = testing::tiny_tokenizer();
  tok["model"].erase("vocab");
  EXPECT_NE(load_error(tok).find("model.vocab: missing"), std::string::npos) << load_error(tok);

  tok = testing::tiny_tokenizer();
  tok["model"]["vocab"]["a"] = "one";
  EXPECT_NE(load_error(tok).find("model.vocab.a"), std::string::npos) << load_error(tok);

  tok = testing::tiny_tokenizer();
  tok["model"]["merges"] = "a b";
  EXPECT_NE(load_error(tok).find("model.merges: expected an array"), std::string::npos) << load_error(tok);

  tok = testing::tiny_tokenizer();
  tok["added_tokens"][2].erase("content");
  EXPECT_NE(load_error(tok).find("added_tokens[2].content: missing"), std::string::npos) << load_error(tok);

  tok = testing::tiny_tokenizer();
  tok["added_tokens"][0]["special"] = "yes";
  EXPECT_NE(load_error(tok).find("added_tokens[0].special: expected true or false"), std::string::npos);
}

TEST(TokenizerErrors, BadMerges) {
  json tok = testing::tiny_tokenizer();
  tok["model"]["merges"][1] = "h e x";
  EXPECT_NE(load_error(tok).find("model.merges[1]: expected \"left right\""), std::string::npos)
      << load_error(tok);

  tok = testing::tiny_tokenizer();
  tok["model"]["merges"].push_back("Q Z");
  EXPECT_NE(load_error(tok).find("model.merges[6]: merged token \"QZ\" is not in model.vocab"),
            std::string::npos)
      << load_error(tok);

  tok = testing::tiny_tokenizer();
  tok["model"]["merges"].push_back(json::array({"\xE2\x82\xAC", "a"}));  // € is not in the byte alphabet
  EXPECT_NE(load_error(tok).find("model.merges[6]: token \"€\" is not in model.vocab"), std::string::npos)
      << load_error(tok);
}

TEST(TokenizerErrors, BadPreTokenizer) {
  json tok = testing::tiny_tokenizer();
  tok["pre_tokenizer"]["pretokenizers"][1]["behavior"] = "Sideways";
  EXPECT_NE(load_error(tok).find("pre_tokenizer.pretokenizers[1].behavior: unknown split behavior"),
            std::string::npos)
      << load_error(tok);

  tok = testing::tiny_tokenizer();
  tok["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "(unclosed"}};
  EXPECT_NE(load_error(tok).find("pre_tokenizer.pretokenizers[0].pattern.Regex: the regex"),
            std::string::npos)
      << load_error(tok);

  tok = testing::tiny_tokenizer();
  tok["pre_tokenizer"]["pretokenizers"][2]["pattern"] = {{"Glob", "*"}};
  EXPECT_NE(load_error(tok).find("pre_tokenizer.pretokenizers[2].pattern: expected"), std::string::npos);

  tok = testing::tiny_tokenizer();
  tok["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "_"}};
  EXPECT_NE(load_error(tok).find("pre_tokenizer.type: pre-tokenizer \"Metaspace\" is not supported"),
            std::string::npos)
      << load_error(tok);
}

TEST(TokenizerErrors, UnsupportedComponents) {
  json tok = testing::tiny_tokenizer();
  tok["model"]["type"] = "WordPiece";
  EXPECT_NE(load_error(tok).find("model.type"), std::string::npos) << load_error(tok);

  tok = testing::tiny_tokenizer();
  tok["normalizer"] = {{"type", "NFKC"}};
  EXPECT_NE(load_error(tok).find("normalizer NFKC not supported"), std::string::npos) << load_error(tok);

  tok = testing::tiny_tokenizer();
  tok["decoder"] = {{"type", "WordPiece"}};
  EXPECT_NE(load_error(tok).find("decoder.type: decoder \"WordPiece\" is not supported"), std::string::npos);

  tok = testing::tiny_tokenizer();
  tok["post_processor"]["single"][0]["SpecialToken"]["id"] = "<nope>";
  EXPECT_NE(load_error(tok).find("post_processor.single[0]: special token \"<nope>\" is not listed"),
            std::string::npos)
      << load_error(tok);

  tok = testing::tiny_tokenizer();
  tok["model"]["dropout"] = 0.1;
  EXPECT_NE(load_error(tok).find("model.dropout"), std::string::npos);
}

// Found by tests/fuzz/fuzz_tokenizer_json (tests/fuzz/regressions/fuzz_tokenizer_json/bert-cls-id-negative
// is the crashing input): post-processor ids were cast to TokenId unchecked, so encode() returned -1 for
// a BertProcessing cls of -1, and a TemplateProcessing id of 2^32 silently became id 0.
TEST(TokenizerErrors, PostProcessorIdsOutsideTokenIdRange) {
  json tok = testing::tiny_tokenizer();
  tok["post_processor"] = {{"type", "BertProcessing"}, {"cls", {"[CLS]", -1}}, {"sep", {"[SEP]", 263}}};
  EXPECT_NE(
      load_error(tok).find("post_processor.cls: expected [\"token\", id] with a non-negative integer id"),
      std::string::npos)
      << load_error(tok);

  tok["post_processor"]["cls"] = {"[CLS]", 2147483648};
  EXPECT_NE(load_error(tok).find("post_processor.cls: expected"), std::string::npos) << load_error(tok);

  tok = testing::tiny_tokenizer();
  tok["post_processor"]["special_tokens"].begin().value()["ids"] = json::array({4294967296});
  EXPECT_NE(load_error(tok).find("ids: expected non-negative integer ids"), std::string::npos)
      << load_error(tok);

  // In range, both still load and add what they list.
  tok = testing::tiny_tokenizer();
  tok["post_processor"] = {
      {"type", "BertProcessing"}, {"cls", {"[CLS]", testing::TinyIds::kBos}}, {"sep", {"[SEP]", 263}}};
  const Tokenizer loaded = Tokenizer::from_json_text(tok.dump());
  EXPECT_EQ(loaded.encode("a", true),
            (std::vector<TokenId>{testing::TinyIds::kBos, 'a', testing::TinyIds::kEos}));
}

class TokenizerDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() /
        ("ds_tokenizer_dir_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "tokenizer.json") << testing::tiny_tokenizer().dump();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write_config(const std::string& text) { std::ofstream(dir_ / "tokenizer_config.json") << text; }
  std::filesystem::path dir_;
};

TEST_F(TokenizerDirTest, ConfigAddBosEosOverridesThePostProcessor) {
  write_config(R"({"add_bos_token": false, "add_eos_token": true,
                   "bos_token": {"__type": "AddedToken", "content": "<｜begin▁of▁sentence｜>"},
                   "eos_token": "<｜end▁of▁sentence｜>"})");
  const Tokenizer tok = Tokenizer::from_dir(dir_);
  EXPECT_EQ(tok.encode("a", true), (std::vector<TokenId>{'a', testing::TinyIds::kEos}));
  EXPECT_EQ(tok.bos_token_id(), testing::TinyIds::kBos);
  EXPECT_EQ(tok.eos_token_id(), testing::TinyIds::kEos);
}

TEST_F(TokenizerDirTest, WithoutAddFlagsThePostProcessorStays) {
  write_config(R"({"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"})");
  const Tokenizer tok = Tokenizer::from_dir(dir_);
  EXPECT_EQ(tok.encode("a", true), (std::vector<TokenId>{testing::TinyIds::kBos, 'a'}));
}

TEST_F(TokenizerDirTest, BadConfigNamesTheFile) {
  write_config(R"({"add_bos_token": true, "bos_token": "<missing>"})");
  try {
    (void)Tokenizer::from_dir(dir_);
    FAIL() << "expected an error";
  } catch (const UserError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("tokenizer_config.json"), std::string::npos) << message;
    EXPECT_NE(message.find("bos_token \"<missing>\" is not in the vocabulary"), std::string::npos) << message;
  }
}

TEST_F(TokenizerDirTest, MissingTokenizerJson) {
  std::filesystem::remove(dir_ / "tokenizer.json");
  EXPECT_THROW((void)Tokenizer::from_dir(dir_), UserError);
}

}  // namespace
}  // namespace ds::tokenizer
