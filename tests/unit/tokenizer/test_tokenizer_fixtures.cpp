// Our tokenizer against HuggingFace `tokenizers` on the fixtures of tools/fixtures/make_tokenizer_fixtures.py
// (tests/fixtures/tokenizer/). Skipped while the fixtures have not been generated. DS_TOKENIZER_FIXTURE_DIR
// points the test at another directory with the same files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tokenizer/detokenizer.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace ds::tokenizer {
namespace {

using nlohmann::json;
using Ids = std::vector<TokenId>;

std::filesystem::path fixture_dir() {
  if (const char* dir = std::getenv("DS_TOKENIZER_FIXTURE_DIR")) return dir;
  return std::filesystem::path(DS_FIXTURES_DIR) / "tokenizer";
}

json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return json::parse(buffer.str());
}

// Printable form of a test string for failure messages.
std::string show(const std::string& text) {
  return json(text).dump();
}

class TokenizerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto dir = fixture_dir();
    if (!std::filesystem::exists(dir / "expected.json")) {
      GTEST_SKIP() << "no " << (dir / "expected.json").string()
                   << " yet: run tools/fixtures/make_tokenizer_fixtures.py where HF tokenizers is installed";
    }
    expected_ = read_json(dir / "expected.json");
  }
  json expected_;
};

TEST_F(TokenizerFixture, EncodeMatchesHuggingFace) {
  const Tokenizer tok = Tokenizer::from_file(fixture_dir() / "tokenizer.json");
  EXPECT_EQ(tok.vocab_size(), expected_["vocab_size"].get<size_t>());
  for (const char* group : {"special_ids", "plain_added_ids"}) {
    for (const auto& [content, id] : expected_[group].items()) {
      EXPECT_EQ(tok.token_to_id(content), id.get<TokenId>()) << content;
      EXPECT_EQ(tok.is_special_token(id.get<TokenId>()), std::string(group) == "special_ids") << content;
    }
  }
  for (const json& c : expected_["encode"]) {
    const std::string text = c["text"];
    EXPECT_EQ(tok.encode(text, false), c["ids"].get<Ids>()) << show(text);
    EXPECT_EQ(tok.encode(text, true), c["ids_with_special"].get<Ids>()) << show(text);
    if (c.contains("ids_split_special")) {
      EncodeOptions options;
      options.add_special_tokens = false;
      options.split_special_tokens = true;
      EXPECT_EQ(tok.encode(text, options), c["ids_split_special"].get<Ids>()) << show(text);
    }
  }
}

TEST_F(TokenizerFixture, ArrayMergesEncodeTheSame) {
  const auto path = fixture_dir() / "tokenizer_array_merges.json";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no " << path.string();
  const Tokenizer tok = Tokenizer::from_file(path);
  for (const json& c : expected_["encode"]) {
    EXPECT_EQ(tok.encode(c["text"].get<std::string>(), true), c["ids_with_special"].get<Ids>())
        << show(c["text"]);
  }
}

TEST_F(TokenizerFixture, PreTokenizerPiecesMatch) {
  // The three Split steps alone (without ByteLevel), on the raw text.
  json config = read_json(fixture_dir() / "tokenizer.json")["pre_tokenizer"];
  json& steps = config["pretokenizers"];
  steps.erase(
      std::remove_if(steps.begin(), steps.end(), [](const json& s) { return s["type"] == "ByteLevel"; }),
      steps.end());
  const auto pre = make_pre_tokenizer(config, "pre_tokenizer");
  for (const json& c : expected_["encode"]) {
    if (!c.contains("pieces")) continue;
    const std::vector<std::string> pieces = pre->pre_tokenize_str(c["text"].get<std::string>());
    EXPECT_EQ(pieces, c["pieces"].get<std::vector<std::string>>()) << show(c["text"]);
  }
}

TEST_F(TokenizerFixture, DecodeMatchesHuggingFace) {
  const Tokenizer tok = Tokenizer::from_file(fixture_dir() / "tokenizer.json");
  for (const json& c : expected_["encode"]) {
    EXPECT_EQ(tok.decode(c["ids"].get<Ids>()), c["decoded"].get<std::string>()) << show(c["text"]);
    const Ids with_special = c["ids_with_special"].get<Ids>();
    EXPECT_EQ(tok.decode(with_special), c["decoded_with_special"].get<std::string>()) << show(c["text"]);
    EXPECT_EQ(tok.decode(with_special, true), c["decoded_skip_special"].get<std::string>())
        << show(c["text"]);
  }
  for (const json& c : expected_["decode"]) {
    const Ids ids = c["ids"].get<Ids>();
    EXPECT_EQ(tok.decode(ids), c["text"].get<std::string>()) << c["ids"].dump();
    EXPECT_EQ(tok.decode(ids, true), c["text_skip_special"].get<std::string>()) << c["ids"].dump();
  }
}

TEST_F(TokenizerFixture, StreamingDetokenizerMatchesHuggingFaceDecode) {
  const Tokenizer tok = Tokenizer::from_file(fixture_dir() / "tokenizer.json");
  for (const json& c : expected_["decode"]) {
    for (const bool skip : {false, true}) {
      IncrementalDetokenizer detok(tok, skip);
      std::string text;
      for (const TokenId id : c["ids"].get<Ids>()) text += detok.step(id);
      text += detok.finish();
      EXPECT_EQ(text, c[skip ? "text_skip_special" : "text"].get<std::string>()) << c["ids"].dump();
    }
  }
}

TEST_F(TokenizerFixture, DirectoryLoadMatchesTransformers) {
  // from_dir applies tokenizer_config.json (add_bos_token) like transformers' AutoTokenizer.
  const Tokenizer tok = Tokenizer::from_dir(fixture_dir());
  EXPECT_EQ(tok.bos_token_id(), expected_["bos_id"].get<TokenId>());
  EXPECT_EQ(tok.eos_token_id(), expected_["eos_id"].get<TokenId>());
  bool any = false;
  for (const json& c : expected_["encode"]) {
    if (!c.contains("transformers_ids")) continue;
    any = true;
    const std::string text = c["text"];
    EXPECT_EQ(tok.encode(text, true), c["transformers_ids"].get<Ids>()) << show(text);
    EXPECT_EQ(tok.encode(text, false), c["transformers_ids_no_special"].get<Ids>()) << show(text);
  }
  if (!any) GTEST_SKIP() << "expected.json has no transformers reference";
}

}  // namespace
}  // namespace ds::tokenizer
