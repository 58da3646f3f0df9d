#include "server/metrics.h"

#include <fmt/format.h>

#include <cmath>

namespace ds::server {

std::string escape_label_value(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

namespace {

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

class Writer {
 public:
  explicit Writer(const std::string& model_name)
      : labels_(fmt::format("model_name=\"{}\"", escape_label_value(model_name))) {}

  void header(const std::string& name, const char* type, const char* help) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  void sample(const std::string& name, double value, const std::string& extra_labels = {}) {
    out_ += fmt::format("{}{{{}{}}} {}\n", name, labels_, extra_labels.empty() ? "" : "," + extra_labels,
                        number(value));
  }
  void gauge(const std::string& name, double value, const char* help) {
    header(name, "gauge", help);
    sample(name, value);
  }
  void counter(const std::string& name, double value, const char* help) {
    header(name, "counter", help);
    sample(name, value);
  }
  void histogram(const std::string& name, const Histogram& h, const char* help) {
    header(name, "histogram", help);
    int64_t cumulative = 0;
    for (size_t i = 0; i < h.bounds().size(); ++i) {
      cumulative += h.counts()[i];
      sample(name + "_bucket", static_cast<double>(cumulative),
             fmt::format("le=\"{}\"", number(h.bounds()[i])));
    }
    sample(name + "_bucket", static_cast<double>(h.count()), "le=\"+Inf\"");
    sample(name + "_sum", h.sum());
    sample(name + "_count", static_cast<double>(h.count()));
  }
  [[nodiscard]] std::string take() { return std::move(out_); }

 private:
  std::string labels_;
  std::string out_;
};

}  // namespace

void HttpCounters::record(const ExchangeSummary& summary) {
  std::lock_guard lock(mutex_);
  ++answers_[{summary.route, summary.status}];
  if (summary.client_disconnected) ++client_disconnects_;
}

std::map<std::pair<std::string, int>, int64_t> HttpCounters::snapshot() const {
  std::lock_guard lock(mutex_);
  return answers_;
}

int64_t HttpCounters::client_disconnects() const {
  std::lock_guard lock(mutex_);
  return client_disconnects_;
}

std::string render_metrics(const MetricsInput& in) {
  Writer w(in.model_name);
  if (in.engine != nullptr) {
    const EngineStats& s = *in.engine;
    w.gauge("deepserve:num_requests_running", static_cast<double>(s.num_running),
            "Number of requests in model execution batches.");
    w.gauge("deepserve:num_requests_waiting", static_cast<double>(s.num_waiting),
            "Number of requests waiting to be processed.");
    w.gauge("deepserve:num_requests_swapped", static_cast<double>(s.num_swapped),
            "Number of requests swapped out to CPU memory.");
    w.gauge("deepserve:num_requests_paused", static_cast<double>(s.num_paused),
            "Number of sequences paused because their client is not reading the stream.");
    w.gauge("deepserve:kv_cache_usage_perc", s.kv_cache_usage, "KV-cache usage. 1 means 100 percent usage.");
    w.gauge("deepserve:kv_cache_fragmentation_ratio", s.kv_cache_fragmentation,
            "Allocated but unused KV slots over allocated KV slots.");
    w.gauge("deepserve:num_free_kv_blocks", static_cast<double>(s.num_free_blocks), "Free device KV blocks.");
    w.counter("deepserve:prefix_cache_queries_total", static_cast<double>(s.prefix_cache_queries),
              "Prefix cache queries, in terms of number of queried tokens.");
    w.counter("deepserve:prefix_cache_hits_total", static_cast<double>(s.prefix_cache_hits),
              "Prefix cache hits, in terms of number of cached tokens.");
    w.counter("deepserve:prompt_tokens_total", static_cast<double>(s.prompt_tokens),
              "Number of prefill tokens processed.");
    w.counter("deepserve:generation_tokens_total", static_cast<double>(s.generation_tokens),
              "Number of generation tokens processed.");
    w.header("deepserve:num_preemptions_total", "counter", "Cumulative number of preemptions, by mode.");
    w.sample("deepserve:num_preemptions_total", static_cast<double>(s.preemptions_recompute),
             "mode=\"recompute\"");
    w.sample("deepserve:num_preemptions_total", static_cast<double>(s.preemptions_swap), "mode=\"swap\"");
    w.header("deepserve:request_success_total", "counter", "Count of finished requests, by finish reason.");
    for (const char* reason : {"stop", "length", "abort", "error"}) {
      const auto it = s.finished.find(reason);
      w.sample("deepserve:request_success_total",
               it == s.finished.end() ? 0.0 : static_cast<double>(it->second),
               fmt::format("finished_reason=\"{}\"", reason));
    }
    w.histogram("deepserve:time_to_first_token_seconds", s.time_to_first_token,
                "Histogram of time to first token in seconds.");
    w.histogram("deepserve:inter_token_latency_seconds", s.inter_token_latency,
                "Histogram of inter-token latency in seconds.");
    w.histogram("deepserve:e2e_request_latency_seconds", s.e2e_request_latency,
                "Histogram of end to end request latency in seconds.");
    w.histogram("deepserve:request_queue_time_seconds", s.request_queue_time,
                "Histogram of time spent in WAITING phase for request.");
    w.histogram("deepserve:batch_wait_time_seconds", s.batch_wait_time,
                "Histogram of the time a sequence waits to join a batch, each time it waits: from arrival, "
                "preemption or an unshared fork to the step that schedules it.");
  }
  if (in.gpus != nullptr && !in.gpus->empty()) {
    w.header("deepserve:gpu_utilization_perc", "gauge",
             "GPU utilization: percent of NVML's last sample period in which a kernel ran.");
    for (const auto& g : *in.gpus)
      w.sample("deepserve:gpu_utilization_perc", g.utilization_perc, fmt::format("gpu=\"{}\"", g.index));
    w.header("deepserve:gpu_memory_used_bytes", "gauge",
             "GPU memory in use (all processes and the driver's reservation), bytes.");
    for (const auto& g : *in.gpus) {
      w.sample("deepserve:gpu_memory_used_bytes", static_cast<double>(g.memory_used_bytes),
               fmt::format("gpu=\"{}\"", g.index));
    }
    w.header("deepserve:gpu_memory_total_bytes", "gauge", "GPU memory in all, bytes.");
    for (const auto& g : *in.gpus) {
      w.sample("deepserve:gpu_memory_total_bytes", static_cast<double>(g.memory_total_bytes),
               fmt::format("gpu=\"{}\"", g.index));
    }
  }
  w.gauge("deepserve:num_http_connections", static_cast<double>(in.num_connections),
          "Open HTTP connections.");
  w.gauge("deepserve:server_draining", in.draining ? 1.0 : 0.0, "1 while the server shuts down.");
  if (in.http != nullptr) {
    w.header("deepserve:http_requests_total", "counter", "HTTP requests answered, by route and status.");
    for (const auto& [key, count] : in.http->snapshot()) {
      w.sample("deepserve:http_requests_total", static_cast<double>(count),
               fmt::format("route=\"{}\",status=\"{}\"", escape_label_value(key.first), key.second));
    }
    w.counter("deepserve:http_client_disconnects_total", static_cast<double>(in.http->client_disconnects()),
              "Requests whose client went away before the answer was complete.");
  }
  return w.take();
}

}  // namespace ds::server
