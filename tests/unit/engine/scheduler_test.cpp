#include <gtest/gtest.h>

#include <memory>

#include "engine/scheduler.h"

namespace ds {
namespace {

class SchedulerTest : public ::testing::Test {
 protected:
  Sequence* add(int prompt_len, int priority = 0) {
    auto s = std::make_unique<Sequence>();
    s->seq_id = static_cast<int64_t>(seqs_.size()) + 1;
    s->arrival = s->seq_id;
    s->priority = priority;
    s->token_ids.assign(static_cast<size_t>(prompt_len), 7);
    for (int i = 0; i < prompt_len; ++i)
      s->token_ids[static_cast<size_t>(i)] = static_cast<int32_t>(s->seq_id * 1000 + i);
    s->num_prompt_tokens = prompt_len;
    blocks_->update_hashes(*s);
    seqs_.push_back(std::move(s));
    scheduler_->add(seqs_.back().get());
    return seqs_.back().get();
  }
  // What the engine does after a forward pass: tokens computed, one sampled where the sequence completed.
  void complete(const SchedulerOutput& out) {
    for (const auto& s : out.scheduled) {
      s.seq->num_computed_tokens += s.num_new_tokens;
      if (s.seq->num_computed_tokens == s.seq->num_tokens()) {
        s.seq->token_ids.push_back(1);
        blocks_->update_hashes(*s.seq);
      }
    }
  }
  void make(SchedulerConfig config, int num_blocks, int cpu_blocks = 0) {
    blocks_ = std::make_unique<BlockManager>(num_blocks, 4, cpu_blocks, false);
    scheduler_ = std::make_unique<Scheduler>(config, *blocks_);
  }

  std::vector<std::unique_ptr<Sequence>> seqs_;
  std::unique_ptr<BlockManager> blocks_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(SchedulerTest, LongPromptIsChunkedAndDecodesGoFirst) {
  SchedulerConfig config;
  config.max_num_batched_tokens = 8;
  make(config, 64);
  Sequence* a = add(3);
  auto out = scheduler_->schedule();
  ASSERT_EQ(out.scheduled.size(), 1u);
  EXPECT_EQ(out.scheduled[0].num_new_tokens, 3);
  complete(out);
  Sequence* b = add(20);
  out = scheduler_->schedule();  // a decodes (1 token), b gets the other 7
  ASSERT_EQ(out.scheduled.size(), 2u);
  EXPECT_EQ(out.scheduled[0].seq, a);
  EXPECT_EQ(out.scheduled[0].num_new_tokens, 1);
  EXPECT_EQ(out.scheduled[1].seq, b);
  EXPECT_EQ(out.scheduled[1].num_new_tokens, 7);
  EXPECT_EQ(out.num_batched_tokens, 8);
  complete(out);
  out = scheduler_->schedule();
  EXPECT_EQ(out.scheduled[0].seq, a);
  EXPECT_EQ(out.scheduled[1].num_new_tokens, 7);
}

TEST_F(SchedulerTest, WithoutChunkingAPromptWaitsForAWholeBudget) {
  SchedulerConfig config;
  config.max_num_batched_tokens = 8;
  config.enable_chunked_prefill = false;
  make(config, 64);
  add(5);
  add(5);
  const auto out = scheduler_->schedule();
  ASSERT_EQ(out.scheduled.size(), 1u);  // 5 + 5 > 8
}

TEST_F(SchedulerTest, MaxNumSeqsAndPriorityOrder) {
  SchedulerConfig config;
  config.max_num_seqs = 2;
  make(config, 64);
  add(2, /*priority=*/5);
  Sequence* urgent = add(2, /*priority=*/0);
  Sequence* second = add(2, /*priority=*/1);
  const auto out = scheduler_->schedule();
  ASSERT_EQ(out.scheduled.size(), 2u);
  EXPECT_EQ(out.scheduled[0].seq, urgent);
  EXPECT_EQ(out.scheduled[1].seq, second);
  EXPECT_EQ(scheduler_->num_waiting(), 1u);
}

TEST_F(SchedulerTest, RecomputePreemptionOfTheLatestArrival) {
  SchedulerConfig config;
  make(config, 4);  // 16 slots
  Sequence* a = add(8);
  Sequence* b = add(8);
  auto out = scheduler_->schedule();
  ASSERT_EQ(out.scheduled.size(), 2u);
  complete(out);  // both now hold 9 tokens: each needs a third block, only 4 exist
  out = scheduler_->schedule();
  ASSERT_EQ(out.preempted.size(), 1u);
  EXPECT_EQ(out.preempted[0], b);
  EXPECT_EQ(b->num_computed_tokens, 0);
  EXPECT_EQ(b->status, SequenceStatus::kWaiting);
  ASSERT_EQ(out.scheduled.size(), 1u);
  EXPECT_EQ(out.scheduled[0].seq, a);
  EXPECT_EQ(scheduler_->counters().preemptions_recompute, 1);
  blocks_->check_invariants(scheduler_->live_sequences());
}

TEST_F(SchedulerTest, SwapPreemptionMovesBlocksAndBringsThemBack) {
  SchedulerConfig config;
  config.preemption_mode = PreemptionMode::kSwap;
  make(config, 4, 8);
  Sequence* a = add(8);
  Sequence* b = add(8);
  auto out = scheduler_->schedule();
  complete(out);
  out = scheduler_->schedule();
  ASSERT_EQ(out.preempted.size(), 1u);
  EXPECT_EQ(b->status, SequenceStatus::kSwapped);
  EXPECT_EQ(out.swap_out.size(), 2u);
  EXPECT_EQ(b->num_computed_tokens, 8);  // its KV survives in the CPU pool
  complete(out);
  scheduler_->remove(a);  // a finishes: room for b again
  out = scheduler_->schedule();
  EXPECT_EQ(out.swap_in.size(), 2u);
  ASSERT_EQ(out.scheduled.size(), 1u);
  EXPECT_EQ(out.scheduled[0].seq, b);
  EXPECT_EQ(out.scheduled[0].num_new_tokens, 1);
  blocks_->check_invariants(scheduler_->live_sequences());
}

// Backpressure: a paused sequence leaves the batch with its blocks and comes back with them; when a new
// sequence needs room, the paused one gives its blocks up first (and recomputes when it resumes).
TEST_F(SchedulerTest, PausedSequenceLeavesTheBatchAndIsTheFirstToGiveUpItsBlocks) {
  SchedulerConfig config;
  make(config, 4);  // 4 blocks of 4 tokens
  Sequence* a = add(7);
  auto out = scheduler_->schedule();
  complete(out);
  ASSERT_EQ(a->block_table.size(), 2u);
  a->paused = true;
  out = scheduler_->schedule();
  EXPECT_TRUE(out.scheduled.empty());
  EXPECT_EQ(scheduler_->num_paused(), 1u);
  EXPECT_EQ(scheduler_->num_running(), 0u);
  EXPECT_EQ(a->block_table.size(), 2u);  // kept
  a->paused = false;
  out = scheduler_->schedule();
  ASSERT_EQ(out.scheduled.size(), 1u);
  EXPECT_EQ(out.scheduled[0].seq, a);
  EXPECT_EQ(out.scheduled[0].num_new_tokens, 1);  // a decode: nothing recomputed
  complete(out);
  blocks_->check_invariants(scheduler_->live_sequences());

  a->paused = true;
  (void)scheduler_->schedule();
  Sequence* b = add(12);  // needs 3 of the 4 blocks: only by taking a's
  out = scheduler_->schedule();
  ASSERT_EQ(out.scheduled.size(), 1u);
  EXPECT_EQ(out.scheduled[0].seq, b);
  EXPECT_TRUE(a->block_table.empty());
  EXPECT_EQ(a->num_computed_tokens, 0);
  EXPECT_EQ(scheduler_->counters().preemptions_recompute, 1);
  complete(out);
  blocks_->check_invariants(scheduler_->live_sequences());
  // Resumed, a recomputes from the waiting queue once b is done.
  a->paused = false;
  scheduler_->remove(b);
  out = scheduler_->schedule();
  ASSERT_EQ(out.scheduled.size(), 1u);
  EXPECT_EQ(out.scheduled[0].seq, a);
  EXPECT_EQ(out.scheduled[0].num_new_tokens, a->num_tokens());
}

}  // namespace
}  // namespace ds
