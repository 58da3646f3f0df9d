#include "io/json_limits.h"

#include <gtest/gtest.h>

#include <string>

namespace ds {
namespace {

TEST(JsonLimitsTest, DepthCountsBracketsOutsideStringsOnly) {
  EXPECT_EQ(find_json_depth_excess(R"({"a": [1, {"b": [2]}]})", 4), std::nullopt);
  EXPECT_EQ(find_json_depth_excess(R"({"a": [1, {"b": [2]}]})", 3), 16u);  // the '[' of "b"
  // Brackets inside strings, escaped quotes included, do not count.
  EXPECT_EQ(find_json_depth_excess(R"({"a": "[[[[{{{{", "b": "\"[[[["})", 1), std::nullopt);
  EXPECT_EQ(find_json_depth_excess(R"(["\\", [[]]])", 2), 8u);  // "\\" ends the string
  // Siblings do not add up.
  EXPECT_EQ(find_json_depth_excess("[[],[],[],[]]", 2), std::nullopt);
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_EQ(find_json_depth_excess(deep), static_cast<size_t>(kMaxJsonDepth));
  EXPECT_EQ(find_json_depth_excess(std::string(64, '[') + std::string(64, ']')), std::nullopt);
}

TEST(JsonLimitsTest, ExcerptIsShortAndElidesDepth) {
  EXPECT_EQ(json_excerpt(nlohmann::json(5)), "5");
  EXPECT_EQ(json_excerpt(nlohmann::json("hot")), "\"hot\"");
  EXPECT_EQ(json_excerpt(nlohmann::json::parse(R"([1, [2, [3, [4]]], {"k": {"x": 1}}])")),
            R"([1,[2,[...]],{"k":{...}}])");
  EXPECT_EQ(json_excerpt(nlohmann::json::parse(R"([[], {}])")), "[[],{}]");
  // 100,000 levels (nlohmann parses them iteratively): quoted without recursing through them.
  const auto deep = nlohmann::json::parse(std::string(100000, '[') + std::string(100000, ']'));
  EXPECT_EQ(json_excerpt(deep), "[[[...]]]");
  // Long values are cut.
  const std::string excerpt = json_excerpt(nlohmann::json(std::vector<int>(100000, 7)), 20);
  EXPECT_EQ(excerpt, "[7,7,7,7,7,7,7,7,7,7...");
  EXPECT_EQ(json_excerpt(nlohmann::json(std::string(1000, 'x')), 5), "\"xxxx...");
}

TEST(JsonLimitsTest, TruncateKeepsUtf8Whole) {
  EXPECT_EQ(truncate_text("abc", 3), "abc");
  EXPECT_EQ(truncate_text("abcd", 3), "abc...");
  EXPECT_EQ(truncate_text("a\xc3\xa9z", 2), "a...");  // é is not split
}

}  // namespace
}  // namespace ds
