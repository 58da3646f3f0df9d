#include <gtest/gtest.h>

#include "engine/stop_strings.h"

namespace ds {
namespace {

// Feeds the deltas and returns everything emitted, plus whether it stopped.
std::pair<std::string, bool> run(StopStringMatcher& m, const std::vector<std::string>& deltas) {
  std::string out;
  for (const auto& d : deltas) {
    const auto r = m.feed(d);
    out += r.emit;
    if (r.stopped) return {out, true};
  }
  return {out + m.flush(), false};
}

TEST(StopStrings, SplitAcrossDeltasStopsBeforeTheString) {
  StopStringMatcher m({"o, w"}, false);
  EXPECT_EQ(run(m, {"Hel", "lo,", " wo", "rld"}), std::make_pair(std::string("Hell"), true));
}

TEST(StopStrings, IncludeStopStringInOutput) {
  StopStringMatcher m({"END"}, true);
  EXPECT_EQ(run(m, {"abc E", "N", "D and more"}), std::make_pair(std::string("abc END"), true));
}

TEST(StopStrings, HeldBackTextIsReleasedWhenItStopsLookingLikeAStop) {
  StopStringMatcher m({"</answer>"}, false);
  auto r = m.feed("x </ans");
  EXPECT_EQ(r.emit, "x ");  // "</ans" could still become the stop string
  r = m.feed("wer? no");
  EXPECT_EQ(r.emit, "</answer? no");
  EXPECT_FALSE(r.stopped);
}

TEST(StopStrings, EarliestMatchWins) {
  StopStringMatcher m({"cd", "b"}, false);
  EXPECT_EQ(run(m, {"abcd"}), std::make_pair(std::string("a"), true));
}

TEST(StopStrings, NothingAfterTheStop) {
  StopStringMatcher m({"\n\n"}, false);
  EXPECT_TRUE(m.feed("one\n\ntwo").stopped);
  EXPECT_EQ(m.feed("three").emit, "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopStrings, MultiByteStopStringsStayWholeCharacters) {
  StopStringMatcher m({"停止"}, false);
  // "停" arrives whole but could start the stop string: held back, then released as whole characters.
  auto r = m.feed("好停");
  EXPECT_EQ(r.emit, "好");
  r = m.feed("下");
  EXPECT_EQ(r.emit, "停下");
}

TEST(StopStrings, BeforeMinTokensStopsDoNotEndTheStream) {
  StopStringMatcher m({"x"}, false);
  const auto r = m.feed("axb", /*check_stops=*/false);
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.emit, "axb");
}

TEST(StopStrings, WithoutStopsEverythingPassesThrough) {
  StopStringMatcher m({}, false);
  EXPECT_EQ(m.feed("abc").emit, "abc");
}

}  // namespace
}  // namespace ds
