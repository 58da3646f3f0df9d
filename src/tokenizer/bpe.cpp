#include "tokenizer/bpe.h"

#include <algorithm>
#include <limits>

#include <nlohmann/json.hpp>

#include "tokenizer/json_fields.h"
#include "tokenizer/utf8.h"
#include "util/check.h"

namespace ds::tokenizer {

namespace jf = json_fields;
using nlohmann::json;

namespace {

// HF caches pieces shorter than this many bytes (utils::cache::MAX_LENGTH).
constexpr size_t kMaxCachedPieceBytes = 256;
constexpr size_t kCacheShards = 16;
constexpr size_t kCacheEntriesPerShard = 4096;

uint64_t pair_key(TokenId left, TokenId right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

std::pair<std::string, std::string> parse_merge(const json& entry, const std::string& path) {
  if (entry.is_string()) {
    const std::string& line = entry.get_ref<const std::string&>();
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
      jf::fail(path,
               fmt::format("expected \"left right\" (two tokens separated by one space), got {:?}", line));
    }
    return {line.substr(0, space), line.substr(space + 1)};
  }
  if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
    return {entry[0].get<std::string>(), entry[1].get<std::string>()};
  }
  jf::fail(path, "expected a \"left right\" string or a [\"left\", \"right\"] pair");
}

}  // namespace

struct BpeModel::Cache {
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<TokenId>, StringHash, std::equal_to<>> entries;
  };
  std::array<Shard, kCacheShards> shards;

  Shard& shard_for(std::string_view piece) { return shards[StringHash{}(piece) % kCacheShards]; }
};

BpeModel::BpeModel(const json& config, const std::string& path) : cache_(std::make_unique<Cache>()) {
  const std::string type = jf::get_optional_string(config, "type", path).value_or("BPE");
  if (type != "BPE") {
    jf::fail(jf::child(path, "type"), fmt::format("model {:?} is not supported (only BPE)", type));
  }

  // vocab: {"token": id, ...}
  const std::string vocab_path = jf::child(path, "vocab");
  const json& vocab = jf::require(config, "vocab", path);
  jf::expect_object(vocab, vocab_path);
  vocab_.reserve(vocab.size());
  for (const auto& [token, id_json] : vocab.items()) {
    if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 ||
        id_json.get<int64_t>() > std::numeric_limits<TokenId>::max()) {
      jf::fail(jf::child(vocab_path, token), "expected a non-negative integer id");
    }
    vocab_.insert_or_assign(token, static_cast<TokenId>(id_json.get<int64_t>()));
  }
  // Not a table up to the largest id: nothing in the format keeps ids dense, and {"a": 2147483647} would
  // allocate 16 GiB. Memory stays proportional to the number of entries.
  id_to_token_.assign(vocab_.size(), nullptr);
  for (const auto& [token, id] : vocab_) {
    if (static_cast<size_t>(id) < id_to_token_.size()) {
      id_to_token_[id] = &token;
    } else {
      sparse_id_to_token_[id] = &token;
    }
  }

  continuing_subword_prefix_ =
      jf::get_optional_string(config, "continuing_subword_prefix", path).value_or("");
  end_of_word_suffix_ = jf::get_optional_string(config, "end_of_word_suffix", path).value_or("");
  fuse_unk_ = jf::get_bool(config, "fuse_unk", false, path);
  byte_fallback_ = jf::get_bool(config, "byte_fallback", false, path);
  ignore_merges_ = jf::get_bool(config, "ignore_merges", false, path);
  if (const auto unk = jf::get_optional_string(config, "unk_token", path)) {
    const auto it = vocab_.find(*unk);
    if (it == vocab_.end()) {
      jf::fail(jf::child(path, "unk_token"), fmt::format("{:?} is not in model.vocab", *unk));
    }
    unk_id_ = it->second;
  }
  if (config.contains("dropout") && !config["dropout"].is_null()) {
    const json& dropout = config["dropout"];
    if (!dropout.is_number() || dropout.get<double>() != 0.0) {
      jf::fail(jf::child(path, "dropout"),
               "BPE dropout is random at encode time; only null or 0 is supported");
    }
  }

  // merges: rank = position in the list ("#version" header lines of old merges.txt files do not count).
  const std::string merges_path = jf::child(path, "merges");
  const json& merges = jf::require(config, "merges", path);
  if (!merges.is_array()) jf::fail(merges_path, "expected an array");
  merges_.reserve(merges.size());
  uint32_t rank = 0;
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string entry_path = jf::element(merges_path, i);
    if (merges[i].is_string() && merges[i].get_ref<const std::string&>().starts_with("#version")) continue;
    const auto [left, right] = parse_merge(merges[i], entry_path);
    const auto left_id = token_to_id(left);
    const auto right_id = token_to_id(right);
    if (!left_id || !right_id) {
      jf::fail(entry_path, fmt::format("token {:?} is not in model.vocab", left_id ? right : left));
    }
    const size_t strip = std::min(continuing_subword_prefix_.size(), right.size());
    const std::string merged = left + right.substr(strip);
    const auto merged_id = token_to_id(merged);
    if (!merged_id) jf::fail(entry_path, fmt::format("merged token {:?} is not in model.vocab", merged));
    // A repeated pair keeps its last rank, as HF's map construction does.
    merges_.insert_or_assign(pair_key(*left_id, *right_id), Merge{rank, *merged_id});
    ++rank;
  }

  small_char_ids_.fill(-1);
  for (char32_t cp = 0; cp < small_char_ids_.size(); ++cp) {
    std::string s;
    append_utf8(s, cp);
    if (const auto id = token_to_id(s)) small_char_ids_[cp] = *id;
  }
}

BpeModel::~BpeModel() = default;

std::optional<TokenId> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(TokenId id) const {
  if (id < 0) return nullptr;
  if (static_cast<size_t>(id) < id_to_token_.size()) return id_to_token_[id];
  const auto it = sparse_id_to_token_.find(id);
  return it == sparse_id_to_token_.end() ? nullptr : it->second;
}

const BpeModel::Merge* BpeModel::find_merge(TokenId left, TokenId right) const {
  const auto it = merges_.find(pair_key(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

std::optional<TokenId> BpeModel::char_id(std::string_view ch) const {
  if (ch.size() <= 2) {
    size_t i = 0;
    const char32_t cp = next_code_point(ch, i);
    if (cp < small_char_ids_.size()) {
      const TokenId id = small_char_ids_[cp];
      if (id < 0) return std::nullopt;
      return id;
    }
  }
  return token_to_id(ch);
}

void BpeModel::tokenize(std::string_view piece, std::vector<TokenId>& out) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    if (const auto id = token_to_id(piece)) {
      out.push_back(*id);
      return;
    }
  }
  if (piece.size() >= kMaxCachedPieceBytes) {
    merge_word(piece, out);
    return;
  }
  Cache::Shard& shard = cache_->shard_for(piece);
  {
    std::lock_guard lock(shard.mutex);
    const auto it = shard.entries.find(piece);
    if (it != shard.entries.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  merge_word(piece, out);
  std::vector<TokenId> ids(out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
  std::lock_guard lock(shard.mutex);
  if (shard.entries.size() >= kCacheEntriesPerShard) shard.entries.clear();
  shard.entries.emplace(std::string(piece), std::move(ids));
}

void BpeModel::merge_word(std::string_view piece, std::vector<TokenId>& out) const {
  struct Symbol {
    TokenId id;
    int prev;
    int next;
    uint32_t len;  // bytes of the piece it covers; 0 once merged into its left neighbour
  };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  auto add = [&](TokenId id, size_t len) {
    const int index = static_cast<int>(symbols.size());
    if (!symbols.empty()) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1, static_cast<uint32_t>(len)});
  };

  // 1. One symbol per character (or per byte with byte_fallback, or <unk>).
  const bool plain_chars = continuing_subword_prefix_.empty() && end_of_word_suffix_.empty();
  // A run of characters outside the vocabulary waiting to become <unk> (fused when fuse_unk).
  bool has_pending_unk = false;
  size_t pending_unk_len = 0;
  std::string decorated;
  size_t i = 0;
  while (i < piece.size()) {
    const size_t start = i;
    i += utf8_char_length(static_cast<unsigned char>(piece[i]));
    i = std::min(i, piece.size());
    const std::string_view ch = piece.substr(start, i - start);
    std::optional<TokenId> id;
    if (plain_chars) {
      id = char_id(ch);
    } else {
      decorated.clear();
      if (start != 0) decorated += continuing_subword_prefix_;
      decorated += ch;
      if (i == piece.size()) decorated += end_of_word_suffix_;
      id = token_to_id(decorated);
    }
    if (id) {
      if (has_pending_unk) add(*unk_id_, pending_unk_len);
      has_pending_unk = false;
      add(*id, ch.size());
      continue;
    }
    if (byte_fallback_) {
      const std::string_view bytes = plain_chars ? ch : std::string_view(decorated);
      std::vector<TokenId> byte_ids;
      for (const char b : bytes) {
        const auto byte_id = token_to_id(fmt::format("<0x{:02X}>", static_cast<uint8_t>(b)));
        if (!byte_id) break;
        byte_ids.push_back(*byte_id);
      }
      if (byte_ids.size() == bytes.size()) {
        for (const TokenId byte_id : byte_ids) add(byte_id, 1);
        continue;
      }
    }
    if (unk_id_) {
      if (has_pending_unk && fuse_unk_) {
        pending_unk_len += ch.size();
      } else {
        if (has_pending_unk) add(*unk_id_, pending_unk_len);
        has_pending_unk = true;
        pending_unk_len = ch.size();
      }
    }
    // Without an unk token a character outside the vocabulary is dropped, as in HF.
  }
  if (has_pending_unk) add(*unk_id_, pending_unk_len);

  // 2. Merge the lowest-ranked adjacent pair until none is left (min-heap on rank, then position).
  struct Candidate {
    uint32_t rank;
    int pos;
    TokenId new_id;
  };
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::vector<Candidate> heap;
  heap.reserve(symbols.size());
  for (size_t k = 0; k + 1 < symbols.size(); ++k) {
    if (const Merge* m = find_merge(symbols[k].id, symbols[k + 1].id)) {
      heap.push_back({m->rank, static_cast<int>(k), m->new_id});
    }
  }
  std::make_heap(heap.begin(), heap.end(), later);
  auto push = [&](const Candidate& c) {
    heap.push_back(c);
    std::push_heap(heap.begin(), heap.end(), later);
  };
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (left.len == 0 || left.next < 0) continue;
    const int right_pos = left.next;
    const Symbol right = symbols[right_pos];
    // Skip entries made stale by an earlier merge of one of the two symbols.
    const Merge* current = find_merge(left.id, right.id);
    if (current == nullptr || current->new_id != top.new_id) continue;

    left.id = top.new_id;
    left.len += right.len;
    left.next = right.next;
    symbols[right_pos].len = 0;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const Merge* m = find_merge(symbols[left.prev].id, left.id)) push({m->rank, left.prev, m->new_id});
    }
    if (left.next >= 0) {
      if (const Merge* m = find_merge(left.id, symbols[left.next].id)) push({m->rank, top.pos, m->new_id});
    }
  }
  for (const Symbol& s : symbols) {
    if (s.len != 0) out.push_back(s.id);
  }
}

}  // namespace ds::tokenizer
