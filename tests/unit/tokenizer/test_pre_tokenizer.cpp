// Pre-tokenizers on raw text, with pieces a human can check against the regexes.
#include <gtest/gtest.h>

#include "tiny_tokenizer.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/regex.h"
#include "util/check.h"

namespace ds::tokenizer {
namespace {

using nlohmann::json;
using Pieces = std::vector<std::string>;

Pieces run(const json& config, const std::string& text) {
  const auto pre = make_pre_tokenizer(config, "pre_tokenizer");
  return pre->pre_tokenize_str(text);
}

Pieces deepseek(const std::string& text) {
  return run(testing::deepseek_pre_tokenizer(false), text);
}

TEST(DeepSeekPreTokenizer, WordsKeepTheirLeadingSpace) {
  EXPECT_EQ(deepseek("Hello world"), (Pieces{"Hello", " world"}));
  // Of two spaces, the first stands alone (\s+(?!\S)) and the second joins the word.
  EXPECT_EQ(deepseek("  hello"), (Pieces{" ", " hello"}));
}

TEST(DeepSeekPreTokenizer, DigitsGoInGroupsOfThree) {
  EXPECT_EQ(deepseek("1234567"), (Pieces{"123", "456", "7"}));
  EXPECT_EQ(deepseek("x = 1234;"), (Pieces{"x", " =", " ", "123", "4", ";"}));
  // \p{N} includes non-ASCII digits: Arabic-Indic and superscripts.
  EXPECT_EQ(deepseek("\u0661\u0662\u0663\u0664"), (Pieces{"\u0661\u0662\u0663", "\u0664"}));
}

TEST(DeepSeekPreTokenizer, CjkAndKanaRunsAreIsolated) {
  EXPECT_EQ(deepseek("abc你好世界def"), (Pieces{"abc", "你好世界", "def"}));
  EXPECT_EQ(deepseek("ひらがなカタカナ漢字"), (Pieces{"ひらがなカタカナ漢字"}));
  // U+9FA6 is past 龥 (U+9FA5): a letter for the third pattern, not the CJK run.
  EXPECT_EQ(deepseek("中\u9FA6"), (Pieces{"中", "\u9FA6"}));
}

TEST(DeepSeekPreTokenizer, PunctuationJoinsTheFollowingAsciiWord) {
  EXPECT_EQ(deepseek(".Hello"), (Pieces{".Hello"}));
  EXPECT_EQ(deepseek("foo.bar()"), (Pieces{"foo", ".bar", "()"}));
  EXPECT_EQ(deepseek("a, b!\n"), (Pieces{"a", ",", " b", "!\n"}));
}

TEST(DeepSeekPreTokenizer, NewlinesAndSpaces) {
  EXPECT_EQ(deepseek("hello\r\n\r\nworld"), (Pieces{"hello", "\r\n\r\n", "world"}));
  EXPECT_EQ(deepseek("a   \n  b"), (Pieces{"a", "   \n", " ", " b"}));
  EXPECT_EQ(deepseek("x\t\ty"), (Pieces{"x", "\t", "\ty"}));
  EXPECT_EQ(deepseek("end   "), (Pieces{"end", "   "}));
}

TEST(DeepSeekPreTokenizer, MarksStayWithTheirLetters) {
  // e + combining acute accent (U+0301) is one letter run.
  EXPECT_EQ(deepseek("cafe\u0301 ok"), (Pieces{"cafe\u0301", " ok"}));
}

TEST(PreTokenizerRegex, WhitespaceIsUnicodeWhiteSpaceNotPcre2s) {
  // U+180E MONGOLIAN VOWEL SEPARATOR is not White_Space (Oniguruma), but PCRE2's \s includes it.
  const Regex re("\\s+", "test");
  std::vector<RegexMatch> matches;
  re.find_all("a\u3000\u180Eb", matches);
  ASSERT_EQ(matches.size(), 1u);
  EXPECT_EQ(matches[0].start, 1u);
  EXPECT_EQ(matches[0].end, 4u);  // only the ideographic space (3 bytes)
  EXPECT_EQ(Regex::translate_oniguruma("[^\\s\\p{L}]\\S"), "[^\\p{White_Space}\\p{L}]\\P{White_Space}");
}

TEST(PreTokenizerRegex, EmptyMatchesAdvanceLikeOniguruma) {
  const Regex re("x*", "test");
  std::vector<RegexMatch> matches;
  re.find_all("axxb", matches);
  // Empty at 0, "xx" at 1..3, then the empty match at 3 is skipped (it touches the previous match), empty
  // at 4.
  ASSERT_EQ(matches.size(), 3u);
  EXPECT_EQ(matches[0].start, 0u);
  EXPECT_EQ(matches[0].end, 0u);
  EXPECT_EQ(matches[1].start, 1u);
  EXPECT_EQ(matches[1].end, 3u);
  EXPECT_EQ(matches[2].start, 4u);
  EXPECT_EQ(matches[2].end, 4u);
}

json split_on_dash(const std::string& behavior, bool invert = false) {
  return {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", invert}};
}

TEST(SplitPreTokenizer, EveryBehavior) {
  const std::string text = "the-final--countdown";
  EXPECT_EQ(run(split_on_dash("Removed"), text), (Pieces{"the", "final", "countdown"}));
  EXPECT_EQ(run(split_on_dash("Isolated"), text), (Pieces{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(run(split_on_dash("MergedWithPrevious"), text), (Pieces{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(run(split_on_dash("MergedWithNext"), text), (Pieces{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(run(split_on_dash("Contiguous"), text), (Pieces{"the", "-", "final", "--", "countdown"}));
}

TEST(SplitPreTokenizer, Invert) {
  const std::string text = "the-final--countdown";
  // Inverted, the words are the "matches": Removed drops them and keeps each dash match.
  EXPECT_EQ(run(split_on_dash("Removed", true), text), (Pieces{"-", "-", "-"}));
  EXPECT_EQ(run(split_on_dash("MergedWithPrevious", true), text),
            (Pieces{"the", "-final", "-", "-countdown"}));
}

TEST(SplitPreTokenizer, StringPatternIsLiteral) {
  const json config = {
      {"type", "Split"}, {"pattern", {{"String", "."}}}, {"behavior", "Removed"}, {"invert", false}};
  EXPECT_EQ(run(config, "a.b.c"), (Pieces{"a", "b", "c"}));
  EXPECT_EQ(run(config, "abc"), (Pieces{"abc"}));
}

TEST(ByteLevelPreTokenizer, Gpt2RegexAndPrefixSpace) {
  const json config = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  EXPECT_EQ(run(config, "Hello world"), (Pieces{"\xC4\xA0Hello", "\xC4\xA0world"}));  // ĠHello Ġworld
  EXPECT_EQ(run(config, "it's"), (Pieces{"\xC4\xA0it", "'s"}));
  const json no_regex = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  EXPECT_EQ(run(no_regex, "a b\n"), (Pieces{"a\xC4\xA0"
                                            "b\xC4\x8A"}));  // aĠbĊ
}

TEST(Digits, IndividualOrContiguous) {
  const json individual = {{"type", "Digits"}, {"individual_digits", true}};
  const json contiguous = {{"type", "Digits"}, {"individual_digits", false}};
  EXPECT_EQ(run(individual, "abc123"), (Pieces{"abc", "1", "2", "3"}));
  EXPECT_EQ(run(contiguous, "abc123d4"), (Pieces{"abc", "123", "d", "4"}));
}

}  // namespace
}  // namespace ds::tokenizer
