// The streaming detokenizer: deltas concatenate to decode(all ids) and never split a UTF-8 character.
#include <gtest/gtest.h>

#include <random>

#include "tiny_tokenizer.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/utf8.h"

namespace ds::tokenizer {
namespace {

using testing::TinyIds;
using Ids = std::vector<TokenId>;

const Tokenizer& tiny() {
  static const Tokenizer tok = Tokenizer::from_json_text(testing::tiny_tokenizer().dump());
  return tok;
}

std::vector<std::string> stream(const Tokenizer& tok, const Ids& ids, bool skip_special) {
  IncrementalDetokenizer detok(tok, skip_special);
  std::vector<std::string> deltas;
  for (const TokenId id : ids) deltas.push_back(detok.step(id));
  deltas.push_back(detok.finish());
  return deltas;
}

std::string concat(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += p;
  return out;
}

TEST(Detokenizer, HoldsBackASplitCharacterUntilComplete) {
  // 你 = E4 BD A0 as three byte tokens, then "!".
  const auto deltas = stream(tiny(), Ids{'a', 0xE4, 0xBD, 0xA0, '!'}, false);
  EXPECT_EQ(deltas, (std::vector<std::string>{"a", "", "", "你", "!", ""}));
}

TEST(Detokenizer, MergedPrefixThenByte) {
  const auto deltas = stream(tiny(), Ids{TinyIds::kE4Bd, 0xA0}, false);
  EXPECT_EQ(deltas, (std::vector<std::string>{"", "你", ""}));
}

TEST(Detokenizer, UnfinishedCharacterAtTheEndIsFlushedAsReplacement) {
  const auto deltas = stream(tiny(), Ids{'x', 0xF0, 0x9F, 0x98}, false);
  EXPECT_EQ(deltas, (std::vector<std::string>{"x", "", "", "", "\xEF\xBF\xBD"}));
}

TEST(Detokenizer, InterruptedCharacterIsReplacedAsSoonAsItIsBroken) {
  const auto deltas = stream(tiny(), Ids{0xE4, 0xBD, 'z'}, false);
  EXPECT_EQ(deltas, (std::vector<std::string>{"", "", "\xEF\xBF\xBDz", ""}));
}

TEST(Detokenizer, SkipsSpecialTokensWhenAsked) {
  const Ids ids{TinyIds::kBos, 'h', 'i', TinyIds::kThink, TinyIds::kMask};
  EXPECT_EQ(concat(stream(tiny(), ids, true)), "hi<mask>");
  EXPECT_EQ(concat(stream(tiny(), ids, false)), tiny().decode(ids, false));
}

TEST(Detokenizer, KeepsListedSpecialTokensWhenSkipping) {
  // <think> is special in the tiny tokenizer; a parser that reads it asks for it to be kept.
  const Ids ids{TinyIds::kBos, 'h', TinyIds::kThink, 'i', TinyIds::kEos};
  IncrementalDetokenizer detok(tiny(), true, {TinyIds::kThink});
  std::string text;
  for (const TokenId id : ids) text += detok.step(id);
  text += detok.finish();
  EXPECT_EQ(text, "h<think>i");
  // Without skipping, the list changes nothing.
  IncrementalDetokenizer all(tiny(), false, {TinyIds::kThink});
  text.clear();
  for (const TokenId id : ids) text += all.step(id);
  text += all.finish();
  EXPECT_EQ(text, tiny().decode(ids, false));
}

TEST(Detokenizer, FallbackKeepsListedSpecialTokensWhenSkipping) {
  nlohmann::json json = {
      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}}}, {"merges", nlohmann::json::array()}}},
      {"added_tokens", nlohmann::json::array({{{"id", 2}, {"content", "<s>"}, {"special", true}},
                                              {{"id", 3}, {"content", "<t>"}, {"special", true}}})}};
  const Tokenizer tok = Tokenizer::from_json_text(json.dump());
  IncrementalDetokenizer detok(tok, true, {3});
  std::string text;
  for (const TokenId id : Ids{0, 2, 3, 1}) text += detok.step(id);
  text += detok.finish();
  EXPECT_EQ(text, tok.decode(Ids{0, 3, 1}, false));
  EXPECT_EQ(concat(stream(tok, Ids{0, 2, 3, 1}, true)), tok.decode(Ids{0, 2, 3, 1}, true));
}

// Random id sequences, biased towards bytes >= 0x80 so that characters are split across tokens in every
// possible way (and often left invalid).
TEST(Detokenizer, RandomSequencesMatchFullDecode) {
  const Tokenizer& tok = tiny();
  std::mt19937 rng(1234);
  const Ids specials{TinyIds::kBos, TinyIds::kEos, TinyIds::kUser, TinyIds::kThink, TinyIds::kMask};
  const Ids lead_bytes{0xC3, 0xE4, 0xE6, 0xF0, 0xE0, 0xED, 0xF4};
  for (int trial = 0; trial < 3000; ++trial) {
    const int length = std::uniform_int_distribution<int>(0, 24)(rng);
    Ids ids;
    for (int i = 0; i < length; ++i) {
      const int kind = std::uniform_int_distribution<int>(0, 9)(rng);
      if (kind < 3) {
        ids.push_back(std::uniform_int_distribution<int>(0x80, 0xBF)(rng));  // continuation byte
      } else if (kind < 5) {
        ids.push_back(lead_bytes[std::uniform_int_distribution<size_t>(0, lead_bytes.size() - 1)(rng)]);
      } else if (kind < 7) {
        ids.push_back(std::uniform_int_distribution<int>(0, 255)(rng));
      } else if (kind < 8) {
        ids.push_back(specials[std::uniform_int_distribution<size_t>(0, specials.size() - 1)(rng)]);
      } else {
        ids.push_back(std::uniform_int_distribution<int>(256, 261)(rng));  // merged tokens (you, " the", ...)
      }
    }
    for (const bool skip : {false, true}) {
      const auto deltas = stream(tok, ids, skip);
      ASSERT_EQ(concat(deltas), tok.decode(ids, skip)) << "trial " << trial;
      for (const std::string& delta : deltas) ASSERT_TRUE(is_valid_utf8(delta)) << "trial " << trial;
    }
  }
}

TEST(Detokenizer, RandomTextRoundTrips) {
  // Encode real text, stream it back: the concatenation is the text itself.
  const Tokenizer& tok = tiny();
  const std::vector<std::string> alphabet = {"a", " ",  "你", "好", "ä", "\xF0\x9F\x98\x80",
                                             "1", "\n", "カ", "é"};
  std::mt19937 rng(99);
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    const int n = std::uniform_int_distribution<int>(0, 30)(rng);
    for (int i = 0; i < n; ++i)
      text += alphabet[std::uniform_int_distribution<size_t>(0, alphabet.size() - 1)(rng)];
    EXPECT_EQ(concat(stream(tok, tok.encode(text, false), false)), text);
  }
}

TEST(Detokenizer, FallbackForTokenizersWithoutByteLevelDecoder) {
  // No decoder: HF joins the tokens with spaces; the detokenizer re-decodes and emits the new suffix.
  nlohmann::json json = {
      {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}}}, {"merges", nlohmann::json::array()}}}};
  const Tokenizer tok = Tokenizer::from_json_text(json.dump());
  const auto deltas = stream(tok, Ids{0, 1, 0}, false);
  EXPECT_EQ(deltas, (std::vector<std::string>{"a", " b", " a", ""}));
}

}  // namespace
}  // namespace ds::tokenizer
