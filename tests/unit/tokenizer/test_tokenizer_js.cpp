// Runs the second, independent check of the tokenizer fixtures (tests/e2e/tokenizer_js: Tokenizers.js vs
// the expected.json written by HF tokenizers) when its node_modules has been installed (`npm ci` there).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace {

TEST(TokenizerJs, TokenizersJsAgreesWithTheHuggingFaceFixtures) {
  const std::filesystem::path fixtures = DS_FIXTURES_DIR;
  const std::filesystem::path js_dir = fixtures.parent_path() / "e2e" / "tokenizer_js";
  if (!std::filesystem::exists(js_dir / "node_modules" / "@huggingface" / "tokenizers")) {
    GTEST_SKIP() << "run `npm ci --prefix " << js_dir.string() << "` to enable this check";
  }
  if (!std::filesystem::exists(fixtures / "tokenizer" / "expected.json")) {
    GTEST_SKIP() << "no tokenizer fixtures yet (tools/fixtures/make_tokenizer_fixtures.py)";
  }
  if (std::system("node --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed";
  const std::string command =
      "node '" + (js_dir / "compare.mjs").string() + "' '" + (fixtures / "tokenizer").string() + "'";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

}  // namespace
