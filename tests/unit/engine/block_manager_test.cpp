#include <gtest/gtest.h>

#include "engine/block_manager.h"
#include "util/check.h"

namespace ds {
namespace {

Sequence make_seq(int64_t id, std::vector<int32_t> tokens, const BlockManager& bm) {
  Sequence s;
  s.seq_id = id;
  s.token_ids = std::move(tokens);
  s.num_prompt_tokens = s.num_tokens();
  bm.update_hashes(s);
  return s;
}

std::vector<int32_t> iota_tokens(int n, int start = 0) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<size_t>(i)] = start + i;
  return v;
}

TEST(BlockManager, AllocatesWhatTheTokensNeedAndFreesItAll) {
  BlockManager bm(10, 4, 0, true);
  Sequence s = make_seq(1, iota_tokens(9), bm);  // 9 tokens -> 3 blocks of 4
  ASSERT_TRUE(bm.can_allocate(s, 9));
  bm.allocate(s, 9);
  EXPECT_EQ(s.block_table.size(), 3u);
  EXPECT_EQ(bm.num_free_blocks(), 7);
  bm.check_invariants({&s});
  // One more token still fits the third block; four more need a fourth.
  s.num_computed_tokens = 9;
  EXPECT_EQ(s.num_computed_tokens, 9);
  s.token_ids.push_back(100);
  bm.allocate(s, 1);
  EXPECT_EQ(s.block_table.size(), 3u);
  s.num_computed_tokens = 10;
  bm.allocate(s, 3);
  EXPECT_EQ(s.block_table.size(), 4u);
  bm.free(s);
  EXPECT_EQ(bm.num_free_blocks(), 10);
  bm.check_invariants({});
}

TEST(BlockManager, CheckBeforeCommit) {
  BlockManager bm(2, 4, 0, false);
  Sequence s = make_seq(1, iota_tokens(12), bm);
  EXPECT_FALSE(bm.can_allocate(s, 12));
  EXPECT_THROW(bm.allocate(s, 12), InternalError);
}

TEST(BlockManager, PrefixHitsReuseFullBlocksButNeverTheLastToken) {
  BlockManager bm(16, 4, 0, true);
  Sequence a = make_seq(1, iota_tokens(10), bm);
  bm.allocate(a, 10);
  a.num_computed_tokens = 10;
  bm.cache_full_blocks(a);  // blocks 0 and 1 (tokens 0..7) are full
  Sequence b = make_seq(2, iota_tokens(8), bm);  // exactly two blocks: the last token must be computed
  const PrefixHit hit_b = bm.find_prefix(b);
  EXPECT_EQ(hit_b.num_tokens, 4);
  Sequence c = make_seq(3, iota_tokens(13), bm);
  const PrefixHit hit = bm.find_prefix(c);
  ASSERT_EQ(hit.num_tokens, 8);
  EXPECT_EQ(hit.blocks, (std::vector<int32_t>{a.block_table[0], a.block_table[1]}));
  bm.allocate(c, 5, &hit);
  EXPECT_EQ(c.num_computed_tokens, 8);
  EXPECT_EQ(c.block_table.size(), 4u);
  EXPECT_EQ(bm.stats().prefix_hits, 8);
  EXPECT_EQ(bm.stats().prefix_queries, 13);
  bm.check_invariants({&a, &c});  // the shared blocks count two references
  // A different first token breaks the chain.
  auto tokens = iota_tokens(13);
  tokens[0] = 99;
  Sequence d = make_seq(4, tokens, bm);
  EXPECT_EQ(bm.find_prefix(d).num_tokens, 0);
}

TEST(BlockManager, FreedCachedBlocksStayReusableUntilEvicted) {
  BlockManager bm(4, 4, 0, true);
  Sequence a = make_seq(1, iota_tokens(8), bm);
  bm.allocate(a, 8);
  a.num_computed_tokens = 8;
  bm.cache_full_blocks(a);
  bm.free(a);
  EXPECT_EQ(bm.num_free_blocks(), 4);
  Sequence b = make_seq(2, iota_tokens(9), bm);
  EXPECT_EQ(bm.find_prefix(b).num_tokens, 8);
  // Filling the cache with other tokens evicts them, least recently freed first.
  Sequence big = make_seq(3, iota_tokens(16, 500), bm);
  bm.allocate(big, 16);
  EXPECT_EQ(bm.find_prefix(b).num_tokens, 0);
  bm.check_invariants({&big});
}

TEST(BlockManager, ForkSharesFullBlocksAndCopiesThePartialOne) {
  BlockManager bm(8, 4, 0, true);
  Sequence p = make_seq(1, iota_tokens(6), bm);
  bm.allocate(p, 6);
  p.num_computed_tokens = 6;
  Sequence child;
  child.seq_id = 2;
  child.token_ids = p.token_ids;
  child.num_prompt_tokens = 6;
  const auto copies = bm.fork(p, child);
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].src, p.block_table[1]);
  EXPECT_EQ(child.block_table[0], p.block_table[0]);
  EXPECT_NE(child.block_table[1], p.block_table[1]);
  bm.check_invariants({&p, &child});
  bm.free(p);
  bm.free(child);
  EXPECT_EQ(bm.num_free_blocks(), 8);
}

TEST(BlockManager, SwapOutAndBackIn) {
  BlockManager bm(4, 4, 3, true);
  Sequence s = make_seq(1, iota_tokens(10), bm);
  bm.allocate(s, 10);
  const auto device_blocks = s.block_table;
  ASSERT_TRUE(bm.can_swap_out(s));
  const auto out = bm.swap_out(s);
  ASSERT_EQ(out.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(out[i].src, device_blocks[i]);
  EXPECT_EQ(bm.num_free_blocks(), 4);
  EXPECT_EQ(bm.num_free_cpu_blocks(), 0);
  bm.check_invariants({&s});
  const auto in = bm.swap_in(s);
  ASSERT_EQ(in.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(in[i].src, out[i].dst);
  EXPECT_EQ(bm.num_free_cpu_blocks(), 3);
  bm.check_invariants({&s});
  Sequence too_big = make_seq(2, iota_tokens(16), bm);
  bm.free(s);
  bm.allocate(too_big, 16);
  EXPECT_FALSE(bm.can_swap_out(too_big));  // 4 blocks, 3 in the pool
}

TEST(BlockManager, InvariantCheckerCatchesALeak) {
  BlockManager bm(4, 4, 0, false);
  Sequence s = make_seq(1, iota_tokens(4), bm);
  bm.allocate(s, 4);
  EXPECT_THROW(bm.check_invariants({}), InternalError);  // s holds a block nobody reported
}

}  // namespace
}  // namespace ds
