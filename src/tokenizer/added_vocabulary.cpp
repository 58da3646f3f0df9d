#include "tokenizer/added_vocabulary.h"

#include <algorithm>
#include <array>

#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace ds::tokenizer {

namespace {

// Rust regex's Unicode \w, which HF uses for single_word: Alphabetic, marks, decimal digits, connector
// punctuation and the joiners.
constexpr std::string_view kWordCharPattern = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}]";

size_t previous_char_start(std::string_view text, size_t pos) {
  size_t i = pos;
  while (i > 0) {
    --i;
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) break;
  }
  return i;
}

}  // namespace

// A byte trie over the match patterns; node 0 is the root.
struct AddedVocabulary::Trie {
  std::unordered_map<uint64_t, int> children;  // key: node << 8 | byte
  std::vector<int> terminal{-1};               // token index ending at the node, or -1
  std::array<bool, 256> first_byte{};

  void insert(std::string_view pattern, size_t token_index) {
    int node = 0;
    for (const char c : pattern) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(c);
      const auto it = children.find(key);
      if (it != children.end()) {
        node = it->second;
      } else {
        const int child = static_cast<int>(terminal.size());
        terminal.push_back(-1);
        children.emplace(key, child);
        node = child;
      }
    }
    terminal[node] = static_cast<int>(token_index);
    first_byte[static_cast<uint8_t>(pattern.front())] = true;
  }

  [[nodiscard]] int child(int node, uint8_t byte) const {
    const auto it = children.find((static_cast<uint64_t>(node) << 8) | byte);
    return it == children.end() ? -1 : it->second;
  }
};

AddedVocabulary::AddedVocabulary()
    : raw_trie_(std::make_unique<Trie>()),
      normalized_trie_(std::make_unique<Trie>()),
      word_char_(std::make_unique<Regex>(kWordCharPattern, "single_word's \\w")) {}
AddedVocabulary::~AddedVocabulary() = default;
AddedVocabulary::AddedVocabulary(AddedVocabulary&&) noexcept = default;
AddedVocabulary& AddedVocabulary::operator=(AddedVocabulary&&) noexcept = default;

void AddedVocabulary::add_all(std::vector<std::pair<AddedToken, std::string>> tokens) {
  for (auto& [token, normalized] : tokens) insert(std::move(token), std::move(normalized));
  rebuild_tries();
}

void AddedVocabulary::insert(AddedToken token, std::string normalized_content) {
  if (token.content.empty()) return;
  const std::string content = token.content;
  // Re-adding a content replaces the earlier entry; the tries are rebuilt from the final set.
  if (const auto it = index_by_content_.find(token.content); it != index_by_content_.end()) {
    const size_t index = it->second;
    index_by_id_.erase(tokens_[index].id);
    tokens_[index] = std::move(token);
    patterns_[index] = tokens_[index].normalized ? std::move(normalized_content) : tokens_[index].content;
    index_by_id_[tokens_[index].id] = index;
  } else {
    const size_t index = tokens_.size();
    patterns_.push_back(token.normalized ? std::move(normalized_content) : token.content);
    index_by_content_.emplace(token.content, index);
    index_by_id_[token.id] = index;
    tokens_.push_back(std::move(token));
  }
  // HF keeps a content in the special set once it was added as special.
  const AddedToken& added = tokens_[index_by_content_.at(content)];
  if (added.special) special_contents_.emplace(added.content, true);
}

void AddedVocabulary::rebuild_tries() {
  raw_trie_ = std::make_unique<Trie>();
  normalized_trie_ = std::make_unique<Trie>();
  for (size_t i = 0; i < tokens_.size(); ++i) {
    // A later token that took the same id replaces this one, as in HF's id -> token map.
    const auto owner = index_by_id_.find(tokens_[i].id);
    if (owner == index_by_id_.end() || owner->second != i || patterns_[i].empty()) continue;
    (tokens_[i].normalized ? *normalized_trie_ : *raw_trie_).insert(patterns_[i], i);
  }
}

const AddedToken* AddedVocabulary::find_by_id(TokenId id) const {
  const auto it = index_by_id_.find(id);
  return it == index_by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<TokenId> AddedVocabulary::find_by_content(std::string_view content) const {
  const auto it = index_by_content_.find(content);
  if (it == index_by_content_.end()) return std::nullopt;
  return tokens_[it->second].id;
}

const std::string* AddedVocabulary::decoded_content(TokenId id) const {
  const auto it = index_by_id_.find(id);
  if (it == index_by_id_.end()) return nullptr;
  return tokens_[it->second].normalized ? &patterns_[it->second] : &tokens_[it->second].content;
}

bool AddedVocabulary::is_special_content(std::string_view content) const {
  return special_contents_.find(content) != special_contents_.end();
}

std::optional<AddedVocabulary::Match> AddedVocabulary::next_match(const Trie& trie, std::string_view text,
                                                                  size_t from) const {
  for (size_t pos = from; pos < text.size(); ++pos) {
    if (!trie.first_byte[static_cast<uint8_t>(text[pos])]) continue;
    int node = 0;
    std::optional<Match> longest;
    for (size_t k = pos; k < text.size(); ++k) {
      node = trie.child(node, static_cast<uint8_t>(text[k]));
      if (node < 0) break;
      if (trie.terminal[node] >= 0) longest = Match{pos, k + 1, static_cast<size_t>(trie.terminal[node])};
    }
    if (longest) return longest;
  }
  return std::nullopt;
}

bool AddedVocabulary::is_word_char_before(std::string_view text, size_t pos) const {
  return pos > 0 && word_char_->matches_at(text, previous_char_start(text, pos));
}

bool AddedVocabulary::is_word_char_at(std::string_view text, size_t pos) const {
  return pos < text.size() && word_char_->matches_at(text, pos);
}

void AddedVocabulary::split(std::string_view text, bool normalized_tokens, bool split_special_tokens,
                            std::vector<TextSegment>& out) const {
  const Trie& trie = normalized_tokens ? *normalized_trie_ : *raw_trie_;
  if (text.empty()) return;
  if (trie.terminal.size() == 1) {
    out.push_back({std::string(text), std::nullopt});
    return;
  }
  size_t start_offset = 0;  // end of the text already handed out
  size_t search_from = 0;
  while (const auto m = next_match(trie, text, search_from)) {
    search_from = m->end;
    const AddedToken& token = tokens_[m->token_index];
    if (split_special_tokens && token.special) continue;
    if (token.single_word && (is_word_char_before(text, m->start) || is_word_char_at(text, m->end))) continue;
    size_t start = m->start;
    size_t stop = m->end;
    if (token.lstrip) {
      size_t ws = start;
      while (ws > 0) {
        const size_t prev = previous_char_start(text, ws);
        size_t i = prev;
        if (!is_white_space(next_code_point(text, i))) break;
        ws = prev;
      }
      start = std::max(ws, start_offset);
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t i = stop;
        if (!is_white_space(next_code_point(text, i))) break;
        stop = i;
      }
    }
    if (start_offset < start)
      out.push_back({std::string(text.substr(start_offset, start - start_offset)), {}});
    out.push_back({std::string(text.substr(start, stop - start)), token.id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({std::string(text.substr(start_offset)), std::nullopt});
}

}  // namespace ds::tokenizer
