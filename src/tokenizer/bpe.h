// The BPE model of tokenizer.json ("model": {"type": "BPE", "vocab", "merges", ...}).
//
// A piece is split into characters, each looked up in the vocabulary, then the adjacent pair with the
// lowest merge rank is merged (leftmost first on ties) until no pair in the piece has a merge. This is the
// priority-queue formulation of HuggingFace's Word::merge_all, so ids match it exactly, including for
// pieces where merges overlap ("aaa"). Results are cached per piece, as HF does.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace ds::tokenizer {

using TokenId = int32_t;

// Heterogeneous lookup for std::string keys with std::string_view probes.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, TokenId, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  // Parses `config` (the "model" object); `path` names it in errors. Accepts merges as "a b" strings (the
  // form of the official DeepSeek-V3 file) or as ["a", "b"] pairs.
  BpeModel(const nlohmann::json& config, const std::string& path);
  ~BpeModel();
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one pre-tokenized piece.
  void tokenize(std::string_view piece, std::vector<TokenId>& out) const;

  [[nodiscard]] std::optional<TokenId> token_to_id(std::string_view token) const;
  // nullptr when no vocabulary entry has this id.
  [[nodiscard]] const std::string* id_to_token(TokenId id) const;
  // Number of vocabulary entries (HF's get_vocab_size: added tokens get ids from here on).
  [[nodiscard]] size_t size() const { return vocab_.size(); }
  [[nodiscard]] const Vocab& vocab() const { return vocab_; }

 private:
  struct Merge {
    uint32_t rank;
    TokenId new_id;
  };
  struct Cache;

  void merge_word(std::string_view piece, std::vector<TokenId>& out) const;
  [[nodiscard]] const Merge* find_merge(TokenId left, TokenId right) const;
  [[nodiscard]] std::optional<TokenId> char_id(std::string_view ch) const;

  Vocab vocab_;
  // id -> token, pointing into vocab_ keys: a table for ids below the number of entries (all of them in a
  // vocabulary without gaps), a map for the rest.
  std::vector<const std::string*> id_to_token_;
  std::unordered_map<TokenId, const std::string*> sparse_id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;  // key: left id << 32 | right id
  std::array<TokenId, 512> small_char_ids_{};   // ids of single code points below U+0200, -1 if none

  std::optional<TokenId> unk_id_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;

  std::unique_ptr<Cache> cache_;
};

}  // namespace ds::tokenizer
