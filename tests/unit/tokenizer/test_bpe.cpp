// Encode/decode on the hand-written tiny tokenizer (tiny_tokenizer.h): ids are bytes or listed merges.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "tiny_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "util/check.h"

namespace ds::tokenizer {
namespace {

using testing::TinyIds;
using Ids = std::vector<TokenId>;

Tokenizer tiny(bool string_merges = true) {
  return Tokenizer::from_json_text(testing::tiny_tokenizer(string_merges).dump());
}

TEST(Bpe, BytesWithoutMergesAreTheirOwnIds) {
  const Tokenizer tok = tiny();
  EXPECT_EQ(tok.encode("Hello", false), (Ids{'H', 'e', 'l', 'l', 'o'}));
}

TEST(Bpe, MergesApplyInRankOrder) {
  const Tokenizer tok = tiny();
  // " the" is one piece; " t" (rank 0) and "he" (rank 1) merge, then " t"+"he" (rank 2).
  EXPECT_EQ(tok.encode(" the", false), (Ids{TinyIds::kSpaceThe}));
  // "then": " the" is not a piece boundary here ("then" has no leading space), so only "he" merges.
  EXPECT_EQ(tok.encode("then", false), (Ids{'t', TinyIds::kHe, 'n'}));
  // Merges chain through a merged symbol: E4 BD -> (E4BD) then (E4BD) A0 -> 你.
  EXPECT_EQ(tok.encode("\xE4\xBD\xA0", false), (Ids{TinyIds::kNi}));
}

TEST(Bpe, MergesGivenAsArraysEncodeTheSame) {
  const Tokenizer strings = tiny(true);
  const Tokenizer arrays = tiny(false);
  for (const char* text : {" the then", "1212 你好", "x = 12;"}) {
    EXPECT_EQ(strings.encode(text, false), arrays.encode(text, false)) << text;
  }
}

TEST(Bpe, DigitsAreGroupedByThreeBeforeMerging) {
  const Tokenizer tok = tiny();
  // "1212" -> pieces "121" "2": "12" merges in the first only. Without the split it would be [12, 12].
  EXPECT_EQ(tok.encode("1212", false), (Ids{TinyIds::kTwelve, '1', '2'}));
}

TEST(Bpe, PostProcessorAddsBos) {
  const Tokenizer tok = tiny();
  EXPECT_EQ(tok.encode("Hi", true), (Ids{TinyIds::kBos, 'H', 'i'}));
  EXPECT_EQ(tok.encode("", true), (Ids{TinyIds::kBos}));
  EXPECT_EQ(tok.encode("", false), (Ids{}));
}

TEST(Bpe, SpecialTokensInTextBecomeTheirIds) {
  const Tokenizer tok = tiny();
  EXPECT_EQ(tok.encode("a<\uFF5CUser\uFF5C>b", false), (Ids{'a', TinyIds::kUser, 'b'}));
  EXPECT_EQ(tok.encode("<think>\n", false), (Ids{TinyIds::kThink, '\n'}));
}

TEST(Bpe, SpecialTokensCanBeTreatedAsText) {
  const Tokenizer tok = tiny();
  EncodeOptions options;
  options.add_special_tokens = false;
  options.split_special_tokens = true;
  // "<think>" is then ordinary text: "<" + "think" (punctuation+letters piece) + ">".
  EXPECT_EQ(tok.encode("<think>", options), (Ids{'<', 't', 'h', 'i', 'n', 'k', '>'}));
  // Non-special added tokens still match.
  EXPECT_EQ(tok.encode("<mask>", options), (Ids{TinyIds::kMask}));
}

TEST(Bpe, LstripAndRstripSwallowWhitespace) {
  const Tokenizer tok = tiny();
  EXPECT_EQ(tok.encode("a  <mask>  b", false), (Ids{'a', TinyIds::kMask, 'b'}));
}

TEST(Bpe, SingleWordTokensNeedWordBoundaries) {
  const Tokenizer tok = tiny();
  EXPECT_EQ(tok.encode("ab", false), (Ids{TinyIds::kWord}));
  EXPECT_EQ(tok.encode("ab,", false), (Ids{TinyIds::kWord, ','}));
  // Inside a word it is plain text.
  EXPECT_EQ(tok.encode("cab", false), (Ids{'c', 'a', 'b'}));
  EXPECT_EQ(tok.encode("abc", false), (Ids{'a', 'b', 'c'}));
}

TEST(Bpe, IgnoreMergesTakesWholePiecesFromTheVocabulary) {
  auto json = testing::tiny_tokenizer();
  json["model"]["vocab"][testing::bl("xyz")] = 400;
  const Tokenizer plain = Tokenizer::from_json_text(json.dump());
  EXPECT_EQ(plain.encode("xyz", false), (Ids{'x', 'y', 'z'}));
  json["model"]["ignore_merges"] = true;
  const Tokenizer ignoring = Tokenizer::from_json_text(json.dump());
  EXPECT_EQ(ignoring.encode("xyz", false), (Ids{400}));
}

TEST(Bpe, OverlappingMergesGoLeftFirst) {
  auto json = testing::tiny_tokenizer();
  json["model"]["vocab"]["aa"] = 300;
  json["model"]["merges"].push_back("a a");
  const Tokenizer tok = Tokenizer::from_json_text(json.dump());
  EXPECT_EQ(tok.encode("aaa", false), (Ids{300, 'a'}));
  EXPECT_EQ(tok.encode("aaaa", false), (Ids{300, 300}));
}

TEST(Bpe, ByteFallbackAndUnk) {
  using nlohmann::json;
  json tok = {{"model",
               {{"type", "BPE"},
                {"vocab", {{"<unk>", 0}, {"a", 1}, {"b", 2}, {"<0xC3>", 3}, {"<0xA9>", 4}}},
                {"merges", json::array()},
                {"unk_token", "<unk>"},
                {"fuse_unk", true}}}};
  const Tokenizer unk = Tokenizer::from_json_text(tok.dump());
  // No pre-tokenizer: the text is one piece; unknown characters fuse into one <unk>.
  EXPECT_EQ(unk.encode("axyb", false), (Ids{1, 0, 2}));
  tok["model"]["byte_fallback"] = true;
  const Tokenizer fallback = Tokenizer::from_json_text(tok.dump());
  EXPECT_EQ(fallback.encode("a\xC3\xA9", false), (Ids{1, 3, 4}));
}

TEST(TokenizerDecode, RoundTripsText) {
  const Tokenizer tok = tiny();
  for (const char* text : {"Hello, world!", " the then 1212", "你好，世界 こんにちは カタカナ",
                           "tab\there\r\nnext", "emoji \xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x92\xBB", ""}) {
    EXPECT_EQ(tok.decode(tok.encode(text, false)), text);
  }
}

TEST(TokenizerDecode, SpecialTokensAreKeptOrSkipped) {
  const Tokenizer tok = tiny();
  const Ids ids = tok.encode("<think>hi</think>", true);
  const std::string bos = "<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>";
  EXPECT_EQ(tok.decode(ids), bos + "<think>hi</think>");
  EXPECT_EQ(tok.decode(ids, /*skip_special_tokens=*/true), "hi</think>");
  // <mask> is an added token but not special: never skipped.
  EXPECT_EQ(tok.decode(Ids{TinyIds::kMask, 'x'}, true), "<mask>x");
}

TEST(TokenizerDecode, BrokenUtf8BecomesReplacementCharacters) {
  const Tokenizer tok = tiny();
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(tok.decode(Ids{0xE4, 0xBD}), fffd);                      // truncated 3-byte character: one U+FFFD
  EXPECT_EQ(tok.decode(Ids{0xE4, 0xBD, 0xA0}), "你");                // completed by a byte token
  EXPECT_EQ(tok.decode(Ids{TinyIds::kE4Bd, 0xA0}), "你");            // same bytes, split differently
  EXPECT_EQ(tok.decode(Ids{0x80}), fffd);                            // lone continuation byte
  EXPECT_EQ(tok.decode(Ids{0xE4, 'A'}), fffd + "A");                 // interrupted sequence
  EXPECT_EQ(tok.decode(Ids{0xF0, 0x9F, 0x98}), fffd);                // truncated emoji: one U+FFFD
  EXPECT_EQ(tok.decode(Ids{0xE0, 0x80}), fffd + fffd);               // E0 80 is never valid: two
  EXPECT_EQ(tok.decode(Ids{0xED, 0xA0, 0x80}), fffd + fffd + fffd);  // surrogate: three
  EXPECT_EQ(tok.decode(Ids{0xFF, 'x'}), fffd + "x");
}

TEST(TokenizerDecode, UnknownIdsAreSkipped) {
  const Tokenizer tok = tiny();
  EXPECT_EQ(tok.decode(Ids{'a', 100000, -1, 'b'}), "ab");
}

TEST(TokenizerVocabulary, LookupsAndSizes) {
  const Tokenizer tok = tiny();
  EXPECT_EQ(tok.vocab_size(), 268u);
  EXPECT_EQ(tok.token_to_id("<think>"), TinyIds::kThink);
  EXPECT_EQ(tok.token_to_id(testing::bl(" the")), TinyIds::kSpaceThe);
  EXPECT_EQ(tok.id_to_token(TinyIds::kSpaceThe), "\xC4\xA0the");  // "Ġthe"
  EXPECT_TRUE(tok.is_special_token(TinyIds::kUser));
  EXPECT_FALSE(tok.is_special_token(TinyIds::kMask));
  EXPECT_FALSE(tok.is_special_token('a'));
}

// Seen while writing tests/fuzz/fuzz_tokenizer_json and reproduced through it
// (tests/fuzz/regressions/fuzz_tokenizer_json/vocab-id-*): the id -> token table was sized by the largest
// id, so id 2147483647 overflowed `max_id + 1` (undefined behaviour; a std::length_error here) and id
// 300000000 allocated 2.4 GB for a 60-byte file. Ids far apart are legal in the format and load as HF
// loads them.
TEST(TokenizerVocabulary, IdsFarApartNeedNoTableUpToTheLargest) {
  const nlohmann::json json = {
      {"model",
       {{"vocab", {{"a", 0}, {"b", 2147483647}, {"c", 300000000}}}, {"merges", nlohmann::json::array()}}}};
  const Tokenizer tok = Tokenizer::from_json_text(json.dump());
  EXPECT_EQ(tok.encode("abc", false), (Ids{0, 2147483647, 300000000}));
  EXPECT_EQ(tok.id_to_token(2147483647), "b");
  EXPECT_EQ(tok.id_to_token(300000000), "c");
  EXPECT_EQ(tok.id_to_token(1), std::nullopt);
  EXPECT_EQ(tok.decode(Ids{300000000, 0, 5, 2147483647}), "c a b");  // no decoder: joined by spaces
  EXPECT_EQ(tok.vocab_size(), 2147483648u);
}

TEST(TokenizerEncode, ConcurrentCallsAgreeWithSerialOnes) {
  // encode shares the BPE cache and per-thread PCRE2 state between threads.
  const Tokenizer tok = tiny();
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i)
    texts.push_back("the " + std::to_string(i * 7919) + " 你好 then<think>" + std::string(i % 5, ' '));
  std::vector<Ids> serial;
  for (const auto& t : texts) serial.push_back(tok.encode(t, true));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = w; i < texts.size(); i += 1 + w) {
          if (tok.encode(texts[i], true) != serial[i]) ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(TokenizerEncode, RejectsInvalidUtf8) {
  const Tokenizer tok = tiny();
  EXPECT_THROW((void)tok.encode("abc\xFF", false), UserError);
}

}  // namespace
}  // namespace ds::tokenizer
