// Scheduler: which sequences run in the next step, and how many tokens each.
//
// One token budget per step (max_num_batched_tokens) shared by decodes and prefills; decodes go first, a
// prompt longer than what is left is chunked over several steps (chunked prefill). Queues: running, swapped,
// waiting (by priority, then arrival). When the KV cache runs out, the lowest-priority, latest-arrived
// running sequence is preempted: by recompute (its blocks are freed; it re-enters the waiting queue and
// recomputes, often from the prefix cache) or by swap (its blocks move to the CPU pool and come back before
// any new admission).
//
// Paused sequences (Sequence::paused: their client is not reading) leave the batch for the paused queue with
// their blocks. They are the first preempted (by recompute) when a running or a waiting sequence needs
// room, so a paused request never keeps another out. Cleared, they rejoin the running queue (with their
// blocks, while there is room under max_num_seqs) or the waiting queue (preempted meanwhile) before anything
// new.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "engine/block_manager.h"
#include "engine/sequence.h"

namespace ds {

enum class PreemptionMode { kRecompute, kSwap };

struct SchedulerConfig {
  int64_t max_num_seqs = 256;
  int64_t max_num_batched_tokens = 2048;
  bool enable_chunked_prefill = true;
  PreemptionMode preemption_mode = PreemptionMode::kRecompute;
};

struct ScheduledSequence {
  Sequence* seq = nullptr;
  int64_t num_new_tokens = 0;  // tokens of seq computed this step, from seq->num_computed_tokens on
};

struct SchedulerOutput {
  std::vector<ScheduledSequence> scheduled;
  std::vector<BlockMove> swap_out;  // device -> cpu, before the forward pass
  std::vector<BlockMove> swap_in;   // cpu -> device, before the forward pass
  std::vector<Sequence*> preempted;
  int64_t num_batched_tokens = 0;

  [[nodiscard]] bool empty() const { return scheduled.empty(); }
};

struct SchedulerCounters {
  int64_t preemptions_recompute = 0;
  int64_t preemptions_swap = 0;
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, BlockManager& blocks);

  void add(Sequence* seq);  // to the waiting queue
  // Removes seq from whichever queue holds it and frees its blocks (finish or abort).
  void remove(Sequence* seq);
  // A running sequence whose blocks were handed over (n > 1 fork): enters the running queue directly.
  void add_running(Sequence* seq);

  [[nodiscard]] SchedulerOutput schedule();

  [[nodiscard]] size_t num_waiting() const { return waiting_.size(); }
  [[nodiscard]] size_t num_running() const { return running_.size(); }
  [[nodiscard]] size_t num_swapped() const { return swapped_.size(); }
  [[nodiscard]] size_t num_paused() const { return paused_.size(); }
  [[nodiscard]] const SchedulerCounters& counters() const { return counters_; }
  [[nodiscard]] const SchedulerConfig& config() const { return config_; }
  // Every sequence that holds blocks (for BlockManager::check_invariants).
  [[nodiscard]] std::vector<const Sequence*> live_sequences() const;

 private:
  // Frees room by preempting the lowest-priority running sequence that is not `keep` and not yet scheduled;
  // returns false when there is none left.
  bool preempt_one(SchedulerOutput& out, const Sequence* keep);
  void preempt(Sequence* victim, SchedulerOutput& out);
  // Frees the blocks of one paused sequence (the last in service order); false when none holds any.
  bool preempt_paused(SchedulerOutput& out);
  // Moves newly paused running sequences to paused_, and resumed ones back.
  void apply_pauses();
  void insert_waiting(Sequence* seq);

  SchedulerConfig config_;
  BlockManager& blocks_;
  std::vector<Sequence*> running_;  // admission order
  std::deque<Sequence*> swapped_;
  std::deque<Sequence*> waiting_;  // (priority, arrival) order
  std::vector<Sequence*> paused_;  // left the running queue while paused, in the order they left
  SchedulerCounters counters_;
};

}  // namespace ds
