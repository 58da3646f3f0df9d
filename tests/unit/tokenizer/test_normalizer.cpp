// NFC normalization (tables generated from Python's unicodedata by tools/gen_unicode_nfc.py).
#include <gtest/gtest.h>

#include "tiny_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_nfc.h"

namespace ds::tokenizer {
namespace {

TEST(Nfc, ComposesDecomposesAndReorders) {
  EXPECT_EQ(to_nfc("plain ascii"), "plain ascii");
  EXPECT_EQ(to_nfc("e\u0301"), "\u00e9");              // e + combining acute -> é
  EXPECT_EQ(to_nfc("\u1100\u1161\u11a8"), "\uac01");   // Hangul jamo L V T -> 각
  EXPECT_EQ(to_nfc("\uac00\u11a8"), "\uac01");         // LV syllable + T
  EXPECT_EQ(to_nfc("A\u0307\u0323"), "\u1ea0\u0307");  // marks reordered (dot below first), then composed
  EXPECT_EQ(to_nfc("\u212b"), "\u00c5");               // singleton: ANGSTROM SIGN -> Å
  EXPECT_EQ(to_nfc("\u0344"), "\u0308\u0301");         // non-starter decomposition stays decomposed
  EXPECT_EQ(to_nfc("\u0958"), "\u0915\u093c");         // composition exclusion (Devanagari QA)
  EXPECT_EQ(to_nfc("\u0301a"), "\u0301a");             // leading mark has nothing to join
  EXPECT_EQ(to_nfc("你好 \U0001F600"), "你好 \U0001F600");
}

TEST(Nfc, TokenizerAppliesItOnlyWhenAsked) {
  auto json = testing::tiny_tokenizer();
  const Tokenizer plain = Tokenizer::from_json_text(json.dump());
  EXPECT_NE(plain.encode("cafe\u0301", false), plain.encode("caf\u00e9", false));
  json["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}}}};
  const Tokenizer nfc = Tokenizer::from_json_text(json.dump());
  EXPECT_EQ(nfc.encode("cafe\u0301", false), nfc.encode("caf\u00e9", false));
  EXPECT_EQ(nfc.decode(nfc.encode("cafe\u0301", false)), "caf\u00e9");
}

}  // namespace
}  // namespace ds::tokenizer
