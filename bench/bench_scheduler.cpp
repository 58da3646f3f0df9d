// One scheduling step with N running sequences in decode: Scheduler::schedule() plus the bookkeeping the
// engine does after the forward pass (count the computed token, append the sampled one, extend the prefix
// hashes, register full blocks). The GPU waits on this every step, so it must stay far below a decode step.
#include <benchmark/benchmark.h>

#include <fmt/format.h>

#include <memory>
#include <vector>

#include "engine/scheduler.h"

namespace ds {
namespace {

void BM_ScheduleDecodeStep(benchmark::State& state) {
  const int64_t num_seqs = state.range(0);
  const int32_t block_size = 16;
  const int64_t context = 1024;
  BlockManager blocks(static_cast<int32_t>(num_seqs * (context / block_size + 64)), block_size, 0, true);
  SchedulerConfig config;
  config.max_num_seqs = num_seqs;
  config.max_num_batched_tokens = 8192;
  Scheduler scheduler(config, blocks);
  std::vector<std::unique_ptr<Sequence>> seqs;
  for (int64_t i = 0; i < num_seqs; ++i) {
    auto s = std::make_unique<Sequence>();
    s->seq_id = i + 1;
    s->arrival = i;
    s->token_ids.resize(static_cast<size_t>(context));
    for (int64_t t = 0; t < context; ++t) s->token_ids[static_cast<size_t>(t)] = static_cast<int32_t>((i * 7919 + t) % 129280);
    s->num_prompt_tokens = context;
    blocks.update_hashes(*s);
    scheduler.add(s.get());
    seqs.push_back(std::move(s));
  }
  // Prefill everything once so that every sequence is in decode.
  for (;;) {
    const SchedulerOutput out = scheduler.schedule();
    if (out.scheduled.empty()) break;
    bool all_decode = true;
    for (const auto& s : out.scheduled) {
      all_decode = all_decode && s.num_new_tokens == 1 && s.seq->num_computed_tokens == s.seq->num_tokens() - 1;
      s.seq->num_computed_tokens += s.num_new_tokens;
      if (s.seq->num_computed_tokens == s.seq->num_tokens()) s.seq->token_ids.push_back(1);
    }
    if (all_decode && out.scheduled.size() == static_cast<size_t>(num_seqs)) break;
  }
  int32_t next_token = 2;
  for (auto _ : state) {
    const SchedulerOutput out = scheduler.schedule();
    for (const auto& s : out.scheduled) {
      Sequence& seq = *s.seq;
      seq.num_computed_tokens += s.num_new_tokens;
      blocks.cache_full_blocks(seq);
      seq.token_ids.push_back(next_token++ % 129280);
      blocks.update_hashes(seq);
    }
    benchmark::DoNotOptimize(out.num_batched_tokens);
    if (out.scheduled.size() != static_cast<size_t>(num_seqs)) {
      state.SkipWithError(fmt::format("{} of {} sequences scheduled, {} preempted", out.scheduled.size(), num_seqs, out.preempted.size()).c_str());
      break;
    }
  }
  state.counters["seqs"] = static_cast<double>(num_seqs);
}
// Every iteration grows each sequence by a token: a fixed iteration count keeps them inside their blocks.
BENCHMARK(BM_ScheduleDecodeStep)->Arg(32)->Arg(256)->Iterations(512)->Repetitions(5)->ReportAggregatesOnly(true)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace ds
BENCHMARK_MAIN();
