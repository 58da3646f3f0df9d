#include "engine/scheduler.h"

#include <algorithm>

#include "util/check.h"

namespace ds {
namespace {

// Served first: lower priority value, then earlier arrival.
bool before(const Sequence* a, const Sequence* b) {
  return a->priority != b->priority ? a->priority < b->priority : a->arrival < b->arrival;
}

}  // namespace

Scheduler::Scheduler(SchedulerConfig config, BlockManager& blocks) : config_(config), blocks_(blocks) {
  DS_CHECK(config_.max_num_seqs > 0 && config_.max_num_batched_tokens > 0,
           "scheduler limits must be positive");
}

void Scheduler::add(Sequence* seq) {
  seq->status = SequenceStatus::kWaiting;
  insert_waiting(seq);
}

void Scheduler::add_running(Sequence* seq) {
  seq->status = SequenceStatus::kRunning;
  running_.push_back(seq);
}

void Scheduler::insert_waiting(Sequence* seq) {
  const auto pos = std::upper_bound(waiting_.begin(), waiting_.end(), seq, before);
  waiting_.insert(pos, seq);
}

void Scheduler::remove(Sequence* seq) {
  std::erase(running_, seq);
  std::erase(swapped_, seq);
  std::erase(waiting_, seq);
  std::erase(paused_, seq);
  blocks_.free(*seq);
}

std::vector<const Sequence*> Scheduler::live_sequences() const {
  std::vector<const Sequence*> live(running_.begin(), running_.end());
  live.insert(live.end(), swapped_.begin(), swapped_.end());
  for (const Sequence* s : waiting_)
    if (!s->block_table.empty() || !s->swapped_blocks.empty()) live.push_back(s);
  for (const Sequence* s : paused_)
    if (!s->block_table.empty()) live.push_back(s);
  return live;
}

bool Scheduler::preempt_paused(SchedulerOutput& out) {
  Sequence* victim = nullptr;
  for (Sequence* s : paused_)
    if (!s->block_table.empty() && (victim == nullptr || before(victim, s))) victim = s;
  if (victim == nullptr) return false;
  // Recompute whatever the preemption mode: it is not coming back soon, and swap space is for the running.
  blocks_.free(*victim);
  victim->num_computed_tokens = 0;
  out.preempted.push_back(victim);
  ++counters_.preemptions_recompute;
  return true;
}

void Scheduler::apply_pauses() {
  for (auto it = running_.begin(); it != running_.end();) {
    if (!(*it)->paused) {
      ++it;
      continue;
    }
    (*it)->status = SequenceStatus::kPaused;
    paused_.push_back(*it);
    it = running_.erase(it);
  }
  for (auto it = paused_.begin(); it != paused_.end();) {
    Sequence* seq = *it;
    if (seq->paused) {
      ++it;
      continue;
    }
    if (seq->block_table.empty()) {
      seq->status = SequenceStatus::kWaiting;
      insert_waiting(seq);
    } else if (static_cast<int64_t>(running_.size()) < config_.max_num_seqs) {
      seq->status = SequenceStatus::kRunning;
      running_.push_back(seq);
    } else {
      ++it;  // resumed, waiting for room in the batch
      continue;
    }
    it = paused_.erase(it);
  }
}

void Scheduler::preempt(Sequence* victim, SchedulerOutput& out) {
  std::erase(running_, victim);
  out.preempted.push_back(victim);
  if (config_.preemption_mode == PreemptionMode::kSwap && blocks_.can_swap_out(*victim)) {
    const auto moves = blocks_.swap_out(*victim);
    out.swap_out.insert(out.swap_out.end(), moves.begin(), moves.end());
    victim->status = SequenceStatus::kSwapped;
    swapped_.push_back(victim);
    ++counters_.preemptions_swap;
  } else {
    // Recompute: the tokens stay, their KV goes; the prefix cache usually brings most of it back.
    blocks_.free(*victim);
    victim->num_computed_tokens = 0;
    victim->status = SequenceStatus::kWaiting;
    insert_waiting(victim);
    ++counters_.preemptions_recompute;
  }
}

bool Scheduler::preempt_one(SchedulerOutput& out, const Sequence* keep) {
  // The victim: last in service order among running sequences not scheduled in this step.
  Sequence* victim = nullptr;
  for (Sequence* s : running_) {
    if (s == keep) continue;
    const bool scheduled = std::any_of(out.scheduled.begin(), out.scheduled.end(),
                                       [&](const ScheduledSequence& x) { return x.seq == s; });
    if (scheduled) continue;
    if (victim == nullptr || before(victim, s)) victim = s;
  }
  if (victim == nullptr) return false;
  preempt(victim, out);
  return true;
}

SchedulerOutput Scheduler::schedule() {
  SchedulerOutput out;
  int64_t budget = config_.max_num_batched_tokens;
  apply_pauses();

  // 1. Running sequences: decodes first, then prefills still in progress (chunked).
  std::vector<Sequence*> order = running_;
  std::stable_sort(order.begin(), order.end(), [](const Sequence* a, const Sequence* b) {
    return (a->num_uncomputed_tokens() == 1) > (b->num_uncomputed_tokens() == 1);
  });
  for (Sequence* seq : order) {
    if (budget == 0) break;
    if (seq->status != SequenceStatus::kRunning) continue;  // preempted earlier in this loop
    const int64_t num_new = std::min(seq->num_uncomputed_tokens(), budget);
    DS_CHECK(num_new > 0, "running sequence {} has nothing to compute", seq->seq_id);
    bool room = blocks_.can_allocate(*seq, num_new);
    while (!room && (preempt_paused(out) || preempt_one(out, seq)))
      room = blocks_.can_allocate(*seq, num_new);
    if (!room) {
      preempt(seq, out);  // nothing else left to give up: this one waits
      continue;
    }
    blocks_.allocate(*seq, num_new);
    out.scheduled.push_back({seq, num_new});
    budget -= num_new;
  }

  // 2. Swapped sequences come back before anything new is admitted, unless we just had to preempt.
  const bool preempted_running =
      std::any_of(out.preempted.begin(), out.preempted.end(),
                  [](const Sequence* s) { return s->status != SequenceStatus::kPaused; });
  if (!preempted_running) {
    while (!swapped_.empty() && budget > 0 && static_cast<int64_t>(running_.size()) < config_.max_num_seqs) {
      Sequence* seq = swapped_.front();
      // Its blocks plus one more for the next token.
      if (!blocks_.can_swap_in(*seq) ||
          blocks_.num_free_blocks() < static_cast<int32_t>(seq->swapped_blocks.size()) + 1) {
        break;
      }
      swapped_.pop_front();
      const auto moves = blocks_.swap_in(*seq);
      out.swap_in.insert(out.swap_in.end(), moves.begin(), moves.end());
      seq->status = SequenceStatus::kRunning;
      running_.push_back(seq);
      const int64_t num_new = std::min(seq->num_uncomputed_tokens(), budget);
      blocks_.allocate(*seq, num_new);
      out.scheduled.push_back({seq, num_new});
      budget -= num_new;
    }
  }

  // 3. Waiting sequences, in (priority, arrival) order, while there is room; never past a blocked one.
  // Paused waiting sequences are stepped over: they wait for their client, not for room.
  if (!preempted_running && swapped_.empty()) {
    for (size_t i = 0;
         i < waiting_.size() && budget > 0 && static_cast<int64_t>(running_.size()) < config_.max_num_seqs;) {
      Sequence* seq = waiting_[i];
      if (seq->paused) {
        ++i;
        continue;
      }
      PrefixHit hit;
      int64_t num_new = 0;
      bool room = false;
      do {  // the prefix hit again after each paused sequence gives its blocks up
        hit = blocks_.find_prefix(*seq);
        const int64_t remaining = seq->num_tokens() - hit.num_tokens;
        if (!config_.enable_chunked_prefill && remaining > budget) break;
        num_new = std::min(remaining, budget);
        room = blocks_.can_allocate(*seq, num_new, &hit);
      } while (!room && preempt_paused(out));
      if (!room) break;
      waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(i));
      blocks_.allocate(*seq, num_new, &hit);
      seq->status = SequenceStatus::kRunning;
      running_.push_back(seq);
      out.scheduled.push_back({seq, num_new});
      budget -= num_new;
    }
  }
  out.num_batched_tokens = config_.max_num_batched_tokens - budget;
  return out;
}

}  // namespace ds
