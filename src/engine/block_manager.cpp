#include "engine/block_manager.h"

#include <algorithm>
#include <map>

#include "util/check.h"

namespace ds {
namespace {

constexpr uint64_t kRootHash = 0x9e3779b97f4a7c15ULL;

// splitmix64-style mixing of the parent key and each token id.
uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

}  // namespace

BlockManager::BlockManager(int32_t num_blocks, int32_t block_size, int32_t num_cpu_blocks, bool enable_prefix_caching)
    : block_size_(block_size),
      num_cpu_blocks_(num_cpu_blocks),
      enable_prefix_caching_(enable_prefix_caching),
      blocks_(static_cast<size_t>(num_blocks)) {
  DS_CHECK(num_blocks > 0 && block_size > 0 && num_cpu_blocks >= 0, "block manager of {} x {} (+{} cpu)", num_blocks,
           block_size, num_cpu_blocks);
  for (int32_t i = 0; i < num_blocks; ++i) push_free(i);
  for (int32_t i = num_cpu_blocks - 1; i >= 0; --i) free_cpu_.push_back(i);
}

double BlockManager::usage() const {
  return 1.0 - static_cast<double>(num_free_) / static_cast<double>(blocks_.size());
}

void BlockManager::update_hashes(Sequence& seq) const {
  const int64_t full = seq.num_tokens() / block_size_;
  while (static_cast<int64_t>(seq.block_hashes.size()) < full) {
    const size_t i = seq.block_hashes.size();
    uint64_t h = i == 0 ? kRootHash : seq.block_hashes[i - 1];
    const int32_t* tokens = seq.token_ids.data() + i * static_cast<size_t>(block_size_);
    for (int32_t t = 0; t < block_size_; ++t) h = mix(h, static_cast<uint32_t>(tokens[t]));
    seq.block_hashes.push_back(h);
  }
}

PrefixHit BlockManager::find_prefix(const Sequence& seq) {
  PrefixHit hit;
  if (!enable_prefix_caching_) return hit;
  // Prompt log-probs need the logits of every prompt position, which a cached block does not keep: the
  // sample that scores its prompt reads nothing from the cache, as in vLLM (its own full blocks are still
  // registered for others).
  if (seq.params.prompt_logprobs && seq.index == 0 && seq.num_output_tokens() == 0) return hit;
  DS_CHECK(seq.block_table.empty() && seq.num_computed_tokens == 0, "prefix lookup for a sequence with blocks");
  // Leave the last token out: it must be computed to produce the logits of the next one.
  const int64_t max_blocks = std::min<int64_t>((seq.num_tokens() - 1) / block_size_,
                                               static_cast<int64_t>(seq.block_hashes.size()));
  for (int64_t i = 0; i < max_blocks; ++i) {
    const auto it = cached_.find(seq.block_hashes[static_cast<size_t>(i)]);
    if (it == cached_.end()) break;
    const Block& b = blocks_[static_cast<size_t>(it->second)];
    const uint64_t parent = i == 0 ? kRootHash : seq.block_hashes[static_cast<size_t>(i - 1)];
    if (b.parent_hash != parent ||
        !std::equal(b.tokens.begin(), b.tokens.end(), seq.token_ids.begin() + i * block_size_)) {
      break;
    }
    hit.blocks.push_back(it->second);
  }
  hit.num_tokens = static_cast<int64_t>(hit.blocks.size()) * block_size_;
  return hit;
}

int64_t BlockManager::blocks_needed(const Sequence& seq, int64_t num_new_tokens, const PrefixHit* hit) const {
  const int64_t computed = hit != nullptr ? hit->num_tokens : seq.num_computed_tokens;
  const int64_t have = static_cast<int64_t>(seq.block_table.size()) +
                       (hit != nullptr ? static_cast<int64_t>(hit->blocks.size()) : 0);
  const int64_t total = (computed + num_new_tokens + block_size_ - 1) / block_size_;
  return std::max<int64_t>(0, total - have);
}

bool BlockManager::can_allocate(const Sequence& seq, int64_t num_new_tokens, const PrefixHit* hit) const {
  int64_t available = num_free_;
  // Hit blocks that nobody holds sit in the free list: adopting them takes them out of it.
  if (hit != nullptr)
    for (int32_t id : hit->blocks)
      if (blocks_[static_cast<size_t>(id)].ref_count == 0) --available;
  return blocks_needed(seq, num_new_tokens, hit) <= available;
}

void BlockManager::allocate(Sequence& seq, int64_t num_new_tokens, const PrefixHit* hit) {
  DS_CHECK(can_allocate(seq, num_new_tokens, hit), "allocate without room (seq {})", seq.seq_id);
  const int64_t needed = blocks_needed(seq, num_new_tokens, hit);
  if (hit != nullptr) {
    for (int32_t id : hit->blocks) {
      Block& b = blocks_[static_cast<size_t>(id)];
      if (b.in_free_list) unlink_free(id);
      ++b.ref_count;
      seq.block_table.push_back(id);
    }
    seq.num_computed_tokens = hit->num_tokens;
    seq.num_cached_blocks = static_cast<int64_t>(hit->blocks.size());
    stats_.prefix_queries += seq.num_tokens();
    stats_.prefix_hits += hit->num_tokens;
  }
  for (int64_t i = 0; i < needed; ++i) {
    const int32_t id = take_free_block();
    blocks_[static_cast<size_t>(id)].ref_count = 1;
    seq.block_table.push_back(id);
  }
}

void BlockManager::cache_full_blocks(Sequence& seq) {
  if (!enable_prefix_caching_) return;
  const int64_t full = std::min<int64_t>(seq.num_computed_tokens / block_size_,
                                         static_cast<int64_t>(seq.block_hashes.size()));
  // Only the blocks that filled up since the last call: this runs for every sequence on every step.
  for (int64_t i = seq.num_cached_blocks; i < full; ++i) {
    Block& b = blocks_[static_cast<size_t>(seq.block_table[static_cast<size_t>(i)])];
    if (b.hash.has_value()) continue;
    const uint64_t h = seq.block_hashes[static_cast<size_t>(i)];
    if (cached_.contains(h)) continue;  // another block already holds this prefix
    b.hash = h;
    b.parent_hash = i == 0 ? kRootHash : seq.block_hashes[static_cast<size_t>(i - 1)];
    b.tokens.assign(seq.token_ids.begin() + i * block_size_, seq.token_ids.begin() + (i + 1) * block_size_);
    cached_[h] = seq.block_table[static_cast<size_t>(i)];
  }
  seq.num_cached_blocks = std::max(seq.num_cached_blocks, full);
}

void BlockManager::free(Sequence& seq) {
  // Release the tail first: the LRU then evicts a sequence's last blocks before its shared prefix.
  for (auto it = seq.block_table.rbegin(); it != seq.block_table.rend(); ++it) release(*it);
  seq.block_table.clear();
  seq.num_cached_blocks = 0;
  for (int32_t id : seq.swapped_blocks) free_cpu_.push_back(id);
  seq.swapped_blocks.clear();
}

bool BlockManager::can_fork(const Sequence& parent) const {
  return parent.num_tokens() % block_size_ == 0 || num_free_ >= 1;
}

std::vector<BlockMove> BlockManager::fork(const Sequence& parent, Sequence& child) {
  DS_CHECK(can_fork(parent), "fork without room");
  std::vector<BlockMove> copies;
  child.block_table = parent.block_table;
  child.num_computed_tokens = parent.num_computed_tokens;
  child.num_cached_blocks = parent.num_cached_blocks;
  const bool partial_last = parent.num_computed_tokens % block_size_ != 0;
  for (size_t i = 0; i < child.block_table.size(); ++i) {
    if (partial_last && i + 1 == child.block_table.size()) {
      const int32_t copy = take_free_block();
      blocks_[static_cast<size_t>(copy)].ref_count = 1;
      copies.push_back({child.block_table[i], copy});
      child.block_table[i] = copy;
    } else {
      ++blocks_[static_cast<size_t>(child.block_table[i])].ref_count;
    }
  }
  return copies;
}

bool BlockManager::can_swap_out(const Sequence& seq) const {
  return static_cast<int64_t>(free_cpu_.size()) >= static_cast<int64_t>(seq.block_table.size());
}

std::vector<BlockMove> BlockManager::swap_out(Sequence& seq) {
  DS_CHECK(can_swap_out(seq), "swap out without room in the CPU pool");
  std::vector<BlockMove> moves;
  for (int32_t id : seq.block_table) {
    const int32_t cpu = free_cpu_.back();
    free_cpu_.pop_back();
    moves.push_back({id, cpu});
    seq.swapped_blocks.push_back(cpu);
    release(id);
  }
  seq.block_table.clear();
  seq.num_cached_blocks = 0;
  stats_.swapped_out_blocks += static_cast<int64_t>(moves.size());
  return moves;
}

bool BlockManager::can_swap_in(const Sequence& seq) const {
  return num_free_ >= static_cast<int32_t>(seq.swapped_blocks.size());
}

std::vector<BlockMove> BlockManager::swap_in(Sequence& seq) {
  DS_CHECK(can_swap_in(seq), "swap in without free blocks");
  std::vector<BlockMove> moves;
  for (int32_t cpu : seq.swapped_blocks) {
    const int32_t id = take_free_block();
    blocks_[static_cast<size_t>(id)].ref_count = 1;
    moves.push_back({cpu, id});
    seq.block_table.push_back(id);
    free_cpu_.push_back(cpu);
  }
  seq.swapped_blocks.clear();
  stats_.swapped_in_blocks += static_cast<int64_t>(moves.size());
  return moves;
}

void BlockManager::check_invariants(const std::vector<const Sequence*>& live) const {
  std::map<int32_t, int32_t> refs;
  std::vector<bool> cpu_used(static_cast<size_t>(num_cpu_blocks_), false);
  for (const Sequence* s : live) {
    for (int32_t id : s->block_table) {
      DS_CHECK(id >= 0 && id < num_blocks(), "seq {} holds block {} out of range", s->seq_id, id);
      ++refs[id];
    }
    for (int32_t id : s->swapped_blocks) {
      DS_CHECK(!cpu_used[static_cast<size_t>(id)], "cpu block {} held twice", id);
      cpu_used[static_cast<size_t>(id)] = true;
    }
  }
  int32_t free_count = 0;
  for (int32_t id = free_head_; id != -1; id = blocks_[static_cast<size_t>(id)].next) ++free_count;
  DS_CHECK(free_count == num_free_, "free list holds {} blocks, counter says {}", free_count, num_free_);
  int32_t used = 0;
  for (int32_t id = 0; id < num_blocks(); ++id) {
    const Block& b = blocks_[static_cast<size_t>(id)];
    const int32_t expected = refs.contains(id) ? refs.at(id) : 0;
    DS_CHECK(b.ref_count == expected, "block {}: ref count {} but {} references", id, b.ref_count, expected);
    DS_CHECK(b.in_free_list == (b.ref_count == 0), "block {}: ref count {} and in_free_list {}", id, b.ref_count,
             b.in_free_list);
    if (b.ref_count > 0) ++used;
    if (b.hash) DS_CHECK(cached_.contains(*b.hash) && cached_.at(*b.hash) == id, "block {} hash not mapped", id);
  }
  DS_CHECK(used + num_free_ == num_blocks(), "used {} + free {} != total {}", used, num_free_, num_blocks());
  const auto cpu_in_use = std::count(cpu_used.begin(), cpu_used.end(), true);
  DS_CHECK(cpu_in_use + static_cast<int64_t>(free_cpu_.size()) == num_cpu_blocks_, "cpu blocks leaked");
  for (const auto& [h, id] : cached_) DS_CHECK(blocks_[static_cast<size_t>(id)].hash == h, "stale cache entry");
}

int32_t BlockManager::take_free_block() {
  DS_CHECK(free_head_ != -1, "no free block");
  const int32_t id = free_head_;
  unlink_free(id);
  Block& b = blocks_[static_cast<size_t>(id)];
  if (b.hash) {
    cached_.erase(*b.hash);  // evicted: its prefix is gone from the cache
    b.hash.reset();
    b.tokens.clear();
  }
  return id;
}

void BlockManager::push_free(int32_t id, bool front) {
  Block& b = blocks_[static_cast<size_t>(id)];
  if (front) {
    b.prev = -1;
    b.next = free_head_;
    if (free_head_ != -1) blocks_[static_cast<size_t>(free_head_)].prev = id;
    free_head_ = id;
    if (free_tail_ == -1) free_tail_ = id;
  } else {
    b.prev = free_tail_;
    b.next = -1;
    if (free_tail_ != -1) blocks_[static_cast<size_t>(free_tail_)].next = id;
    free_tail_ = id;
    if (free_head_ == -1) free_head_ = id;
  }
  b.in_free_list = true;
  ++num_free_;
}

void BlockManager::unlink_free(int32_t id) {
  Block& b = blocks_[static_cast<size_t>(id)];
  DS_CHECK(b.in_free_list, "block {} is not free", id);
  if (b.prev != -1) blocks_[static_cast<size_t>(b.prev)].next = b.next; else free_head_ = b.next;
  if (b.next != -1) blocks_[static_cast<size_t>(b.next)].prev = b.prev; else free_tail_ = b.prev;
  b.prev = b.next = -1;
  b.in_free_list = false;
  --num_free_;
}

void BlockManager::release(int32_t id) {
  Block& b = blocks_[static_cast<size_t>(id)];
  DS_CHECK(b.ref_count > 0, "block {} released more often than taken", id);
  if (--b.ref_count == 0) {
    // A block outside the prefix cache holds nothing reusable: it goes first in line for reuse; cached ones
    // queue at the tail and are evicted least recently freed first.
    push_free(id, /*front=*/!b.hash);
  }
}

}  // namespace ds
