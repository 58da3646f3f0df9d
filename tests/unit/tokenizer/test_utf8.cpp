#include <gtest/gtest.h>

#include "tokenizer/utf8.h"

namespace ds::tokenizer {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

TEST(Utf8, LossyReplacesMaximalSubparts) {
  EXPECT_EQ(utf8_lossy("abc"), "abc");
  EXPECT_EQ(utf8_lossy("\xE4\xBD\xA0"), "\xE4\xBD\xA0");
  EXPECT_EQ(utf8_lossy("\xE4\xBD"), kFffd);
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98"
                       "a"),
            kFffd + "a");
  EXPECT_EQ(utf8_lossy("\xC0\xAF"), kFffd + kFffd);  // overlong: C0 can never start a character
  EXPECT_EQ(utf8_lossy("\xF4\x90\x80\x80"), kFffd + kFffd + kFffd + kFffd);  // above U+10FFFF
  EXPECT_EQ(utf8_lossy("\x80\x80"), kFffd + kFffd);
}

TEST(Utf8, IncompleteSuffix) {
  EXPECT_EQ(utf8_incomplete_suffix(""), 0u);
  EXPECT_EQ(utf8_incomplete_suffix("ab"), 0u);
  EXPECT_EQ(utf8_incomplete_suffix("a\xE4"), 1u);
  EXPECT_EQ(utf8_incomplete_suffix("a\xE4\xBD"), 2u);
  EXPECT_EQ(utf8_incomplete_suffix("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(utf8_incomplete_suffix("\xE4\xBD\xA0"), 0u);  // complete
  EXPECT_EQ(utf8_incomplete_suffix("\xE0\x80"), 0u);      // already invalid: nothing can complete it
  EXPECT_EQ(utf8_incomplete_suffix("\x80"), 0u);
}

TEST(Utf8, Validation) {
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(is_valid_utf8("h\xC3\xA9 \xF0\x9F\x98\x80"));
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));  // surrogate
  EXPECT_FALSE(is_valid_utf8("\xE4\xBD"));
}

}  // namespace
}  // namespace ds::tokenizer
