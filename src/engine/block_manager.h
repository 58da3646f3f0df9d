// BlockManager: bookkeeping of the paged MLA latent cache. Pure C++, no tensors: it hands out block ids and
// says which blocks to copy or swap; the backend owns the memory.
//
// - Blocks are reference-counted; a block shared by several sequences (prefix hits, n > 1 samples) is freed
//   when its last user lets go.
// - Prefix caching: a full block is keyed by hash(parent block's key, its token ids) and kept in a map; its
//   tokens are stored too, so a hash collision can never hand out the wrong KV. Freed cached blocks stay
//   reusable until evicted, least recently freed first.
// - Check-then-commit: can_allocate() before allocate(), can_swap_in() before swap_in()...; a commit whose
//   check would fail is our bug (DS_CHECK).
#pragma once

#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "engine/sequence.h"

namespace ds {

struct PrefixHit {
  std::vector<int32_t> blocks;  // cached blocks holding the sequence's first tokens
  int64_t num_tokens = 0;       // blocks.size() * block_size
};

struct BlockManagerStats {
  int64_t prefix_queries = 0;  // prompt tokens looked up in the prefix cache
  int64_t prefix_hits = 0;     // of them, found
  int64_t swapped_out_blocks = 0;
  int64_t swapped_in_blocks = 0;
};

class BlockManager {
 public:
  BlockManager(int32_t num_blocks, int32_t block_size, int32_t num_cpu_blocks, bool enable_prefix_caching);

  [[nodiscard]] int32_t block_size() const { return block_size_; }
  [[nodiscard]] int32_t num_blocks() const { return static_cast<int32_t>(blocks_.size()); }
  [[nodiscard]] int32_t num_free_blocks() const { return num_free_; }
  [[nodiscard]] int32_t num_free_cpu_blocks() const { return static_cast<int32_t>(free_cpu_.size()); }
  [[nodiscard]] int32_t num_cpu_blocks() const { return num_cpu_blocks_; }
  // Fraction of blocks held by sequences (cached-but-free blocks count as free).
  [[nodiscard]] double usage() const;
  [[nodiscard]] const BlockManagerStats& stats() const { return stats_; }

  // Extends seq.block_hashes over its full blocks (call after appending tokens).
  void update_hashes(Sequence& seq) const;

  // The longest run of full blocks at the start of seq's tokens that is already cached. Leaves at least one
  // token uncomputed, so the step that follows has a logit to sample from. allocate() with the hit counts
  // the query and the hit. Empty for a sequence that still has to score its prompt (prompt_logprobs).
  [[nodiscard]] PrefixHit find_prefix(const Sequence& seq);

  // Room for seq to hold num_computed + num_new_tokens tokens (adopting `hit` first, when given)?
  [[nodiscard]] bool can_allocate(const Sequence& seq, int64_t num_new_tokens, const PrefixHit* hit = nullptr) const;
  void allocate(Sequence& seq, int64_t num_new_tokens, const PrefixHit* hit = nullptr);

  // After a step computed seq's tokens up to seq.num_computed_tokens: register its newly full blocks.
  void cache_full_blocks(Sequence& seq);

  // Drops seq's references (device and swap blocks).
  void free(Sequence& seq);

  // n > 1: child shares parent's blocks; the partial last block (which the child will write into) is copied.
  [[nodiscard]] bool can_fork(const Sequence& parent) const;
  [[nodiscard]] std::vector<BlockMove> fork(const Sequence& parent, Sequence& child);

  [[nodiscard]] bool can_swap_out(const Sequence& seq) const;
  [[nodiscard]] std::vector<BlockMove> swap_out(Sequence& seq);  // device block -> cpu block
  [[nodiscard]] bool can_swap_in(const Sequence& seq) const;
  [[nodiscard]] std::vector<BlockMove> swap_in(Sequence& seq);   // cpu block -> device block

  // free + used + cached-free == total; ref counts equal the references the sequences hold; no block both
  // free and referenced. `live` is every sequence that holds blocks. Throws InternalError on a violation.
  void check_invariants(const std::vector<const Sequence*>& live) const;

 private:
  struct Block {
    int32_t ref_count = 0;
    std::optional<uint64_t> hash;  // set while the block is full and registered in cached_
    uint64_t parent_hash = 0;      // with tokens: checked on every hit, so a 64-bit collision needs both
    std::vector<int32_t> tokens;   // to collide at once
    int32_t prev = -1, next = -1;  // free list links (LRU: evict from the head)
    bool in_free_list = false;
  };

  [[nodiscard]] int64_t blocks_needed(const Sequence& seq, int64_t num_new_tokens, const PrefixHit* hit) const;
  [[nodiscard]] int32_t take_free_block();  // evicts a cached block's hash if it had one
  void push_free(int32_t id, bool front = false);  // tail: most recently freed
  void unlink_free(int32_t id);
  void release(int32_t id);

  int32_t block_size_;
  int32_t num_cpu_blocks_;
  bool enable_prefix_caching_;
  std::vector<Block> blocks_;
  int32_t free_head_ = -1, free_tail_ = -1, num_free_ = 0;
  std::unordered_map<uint64_t, int32_t> cached_;  // hash -> block id
  std::vector<int32_t> free_cpu_;
  BlockManagerStats stats_;
};

}  // namespace ds
