// A hand-written byte-level BPE tokenizer.json for tests whose expectations can be checked by hand:
// token id b (0..255) is the single byte b, then a handful of merges, then DeepSeek-V3's pre-tokenizer,
// BOS template and ByteLevel decoder, and a few added tokens.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/byte_level.h"

namespace ds::tokenizer::testing {

// The byte-level spelling of raw bytes ("the" -> "the", " the" -> "Ġthe").
inline std::string bl(std::string_view raw) {
  std::string out;
  ByteLevelAlphabet::get().encode(raw, out);
  return out;
}

// DeepSeek-V3's three Split patterns, as its tokenizer.json has them.
inline const char* kDeepSeekDigits = R"(\p{N}{1,3})";
inline const char* kDeepSeekCjk = "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+";
inline const char* kDeepSeekMain =
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";

inline nlohmann::json deepseek_pre_tokenizer(bool with_byte_level = true) {
  using nlohmann::json;
  json steps = json::array();
  for (const char* pattern : {kDeepSeekDigits, kDeepSeekCjk, kDeepSeekMain}) {
    steps.push_back(
        {{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}});
  }
  if (with_byte_level) {
    steps.push_back(
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}});
  }
  return {{"type", "Sequence"}, {"pretokenizers", steps}};
}

// Merges of the tiny tokenizer, in rank order; each result gets the next id from 256.
inline std::vector<std::pair<std::string, std::string>> tiny_merges() {
  return {{" ", "t"}, {"h", "e"}, {" t", "he"}, {"1", "2"}, {"\xE4\xBD", "\xA0"}, {"\xE4", "\xBD"}};
}

struct TinyIds {
  static constexpr int kSpaceT = 256;
  static constexpr int kHe = 257;
  static constexpr int kSpaceThe = 258;
  static constexpr int kTwelve = 259;
  static constexpr int kNi = 260;     // "你" = E4 BD A0
  static constexpr int kE4Bd = 261;   // "\xE4\xBD"
  static constexpr int kBos = 262;    // <｜begin▁of▁sentence｜>
  static constexpr int kEos = 263;    // <｜end▁of▁sentence｜>
  static constexpr int kUser = 264;   // <｜User｜>
  static constexpr int kThink = 265;  // <think>
  static constexpr int kMask = 266;   // <mask>: lstrip + rstrip, not special
  static constexpr int kWord = 267;   // "ab": single_word, not special
};

inline nlohmann::json tiny_tokenizer(bool string_merges = true) {
  using nlohmann::json;
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[bl(std::string(1, static_cast<char>(b)))] = b;
  // Merge results in the order of their ids (not of their ranks).
  const std::vector<std::string> merged = {" t", "he", " the", "12", "\xE4\xBD\xA0", "\xE4\xBD"};
  for (size_t i = 0; i < merged.size(); ++i) vocab[bl(merged[i])] = 256 + static_cast<int>(i);
  json merges = json::array();
  for (const auto& [left, right] : tiny_merges()) {
    if (string_merges) {
      merges.push_back(bl(left) + " " + bl(right));
    } else {
      merges.push_back(json::array({bl(left), bl(right)}));
    }
  }
  auto added = [](int id, const std::string& content, bool special, bool lstrip = false, bool rstrip = false,
                  bool single_word = false) {
    return json{{"id", id},          {"content", content}, {"single_word", single_word},
                {"lstrip", lstrip},  {"rstrip", rstrip},   {"normalized", !special},
                {"special", special}};
  };
  const std::string bos = "<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>";
  json tok;
  tok["version"] = "1.0";
  tok["truncation"] = nullptr;
  tok["padding"] = nullptr;
  tok["added_tokens"] = json::array({
      added(TinyIds::kBos, bos, true),
      added(TinyIds::kEos, "<\uFF5Cend\u2581of\u2581sentence\uFF5C>", true),
      added(TinyIds::kUser, "<\uFF5CUser\uFF5C>", true),
      added(TinyIds::kThink, "<think>", true),
      added(TinyIds::kMask, "<mask>", false, /*lstrip=*/true, /*rstrip=*/true),
      added(TinyIds::kWord, "ab", false, false, false, /*single_word=*/true),
  });
  tok["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array()}};
  tok["pre_tokenizer"] = deepseek_pre_tokenizer();
  tok["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"pair", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                            {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                            {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
                            {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
      {"special_tokens",
       {{bos, {{"id", bos}, {"ids", json::array({TinyIds::kBos})}, {"tokens", json::array({bos})}}}}}};
  tok["decoder"] = {
      {"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  tok["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"ignore_merges", false},
                  {"vocab", vocab},
                  {"merges", merges}};
  return tok;
}

}  // namespace ds::tokenizer::testing
