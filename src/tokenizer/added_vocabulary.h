// Added tokens of tokenizer.json ("added_tokens"): strings matched in the text before pre-tokenization
// and turned straight into their id, like DeepSeek-V3's "<｜User｜>" or "<think>".
//
// As in HuggingFace tokenizers: non-normalized tokens are found in the raw text, normalized ones in the
// normalized text; the leftmost, then longest, token wins; single_word tokens only match between non-word
// characters; lstrip/rstrip tokens swallow the whitespace before/after them. A special token can be
// treated as plain text instead (split_special_tokens).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/bpe.h"

namespace ds::tokenizer {

class Regex;

struct AddedToken {
  TokenId id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
};

// A part of the input: either text still to be encoded, or an added token already recognised.
struct TextSegment {
  std::string text;
  std::optional<TokenId> token;  // set: `text` is the matched span (with stripped whitespace)
};

class AddedVocabulary {
 public:
  AddedVocabulary();
  ~AddedVocabulary();
  AddedVocabulary(AddedVocabulary&&) noexcept;
  AddedVocabulary& operator=(AddedVocabulary&&) noexcept;

  // Registers tokens (HF's add_tokens), each with its content after the tokenizer's normalizer (used to
  // match normalized tokens and to decode them). Re-adding a content replaces the earlier entry.
  void add_all(std::vector<std::pair<AddedToken, std::string>> tokens);

  // Splits `text` at the added tokens of one kind (normalized or not).
  void split(std::string_view text, bool normalized_tokens, bool split_special_tokens,
             std::vector<TextSegment>& out) const;

  [[nodiscard]] const AddedToken* find_by_id(TokenId id) const;
  [[nodiscard]] std::optional<TokenId> find_by_content(std::string_view content) const;
  // The string decode() produces for this token (the normalized content for normalized tokens).
  [[nodiscard]] const std::string* decoded_content(TokenId id) const;
  [[nodiscard]] bool is_special_content(std::string_view content) const;
  [[nodiscard]] const std::vector<AddedToken>& tokens() const { return tokens_; }
  [[nodiscard]] bool empty() const { return tokens_.empty(); }

 private:
  struct Trie;
  struct Match {
    size_t start;
    size_t end;
    size_t token_index;
  };
  // Leftmost-longest match of any pattern at or after `from`.
  [[nodiscard]] std::optional<Match> next_match(const Trie& trie, std::string_view text, size_t from) const;
  [[nodiscard]] bool is_word_char_before(std::string_view text, size_t pos) const;
  [[nodiscard]] bool is_word_char_at(std::string_view text, size_t pos) const;
  void insert(AddedToken token, std::string normalized_content);
  void rebuild_tries();

  std::vector<AddedToken> tokens_;
  std::vector<std::string> patterns_;  // what is matched (normalized content for normalized tokens)
  std::unordered_map<TokenId, size_t> index_by_id_;
  std::unordered_map<std::string, size_t, StringHash, std::equal_to<>> index_by_content_;
  std::unordered_map<std::string, bool, StringHash, std::equal_to<>> special_contents_;
  std::unique_ptr<Trie> raw_trie_;
  std::unique_ptr<Trie> normalized_trie_;
  std::unique_ptr<Regex> word_char_;
};

}  // namespace ds::tokenizer
