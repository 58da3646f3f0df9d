// What the engine reports about itself, for /metrics and for tests: gauges, counters and latency histograms.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ds {

// A Prometheus-style histogram: cumulative counts per upper bound, plus sum and count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  [[nodiscard]] const std::vector<double>& bounds() const { return bounds_; }
  [[nodiscard]] const std::vector<int64_t>& counts() const { return counts_; }  // per bucket, not cumulative
  [[nodiscard]] double sum() const { return sum_; }
  [[nodiscard]] int64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // bounds_.size() + 1 (the last is +Inf)
  double sum_ = 0.0;
  int64_t count_ = 0;
};

struct EngineStats {
  // Gauges.
  int64_t num_running = 0;
  int64_t num_waiting = 0;
  int64_t num_swapped = 0;
  int64_t num_paused = 0;               // sequences out of the batch while their client does not read
  double kv_cache_usage = 0.0;          // fraction of device blocks held
  double kv_cache_fragmentation = 0.0;  // allocated but unused slots over allocated slots
  int64_t num_free_blocks = 0;
  // Counters.
  int64_t prefix_cache_queries = 0;  // tokens
  int64_t prefix_cache_hits = 0;     // tokens
  int64_t prompt_tokens = 0;
  int64_t generation_tokens = 0;
  int64_t computed_prompt_tokens = 0;  // prompt tokens that went through a forward pass (not from the cache)
  int64_t preemptions_recompute = 0;
  int64_t preemptions_swap = 0;
  int64_t steps = 0;
  std::map<std::string, int64_t> finished;  // by finish reason
  // Latencies in seconds.
  Histogram time_to_first_token{{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                                 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}};
  Histogram inter_token_latency{
      {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0}};
  Histogram e2e_request_latency{
      {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0}};
  Histogram request_queue_time{{0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0}};
  // Each wait of a sequence to join a step's batch: from submit() (or its preemption, or its fork when it
  // could not share its parent's blocks) to the step that schedules it. request_queue_time counts a
  // request's first wait only; this one counts every wait of every sample, so re-queueing under KV
  // pressure shows here.
  Histogram batch_wait_time{
      {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0}};
};

}  // namespace ds
