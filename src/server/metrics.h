// GET /metrics: Prometheus text exposition (format 0.0.4) of the engine's stats under vLLM's metric names
// with the `deepserve:` prefix (deepserve:num_requests_running, ...), every series labelled with model_name
// as vLLM does, plus the server's own counters (HTTP answers by route and status, open connections), and per
// GPU (label gpu="N") utilization and memory when NVML is there (server/gpu_metrics.h).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include <vector>

#include "engine/stats.h"
#include "server/gpu_metrics.h"
#include "server/http_server.h"

namespace ds::server {

// A Prometheus label value with \, " and newline escaped as the exposition format wants.
[[nodiscard]] std::string escape_label_value(const std::string& value);

// HTTP answers by (route, status); routes come from the route table, so the label set stays bounded.
class HttpCounters {
 public:
  void record(const ExchangeSummary& summary);
  [[nodiscard]] std::map<std::pair<std::string, int>, int64_t> snapshot() const;
  [[nodiscard]] int64_t client_disconnects() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, int64_t> answers_;
  int64_t client_disconnects_ = 0;
};

struct MetricsInput {
  const EngineStats* engine = nullptr;
  const HttpCounters* http = nullptr;
  std::string model_name;
  int64_t num_connections = 0;
  bool draining = false;
  const std::vector<GpuSample>* gpus = nullptr;  // --device cuda with NVML loaded; else none
};

[[nodiscard]] std::string render_metrics(const MetricsInput& input);

}  // namespace ds::server
