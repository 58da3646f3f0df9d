#include "server/access_log.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>

#include "util/check.h"

namespace ds::server {

AccessLog::AccessLog(const std::string& path) {
  if (path == "-") {
    file_ = stdout;
    return;
  }
  file_ = std::fopen(path.c_str(), "a");
  DS_REQUIRE(file_ != nullptr, InvalidArgument, "--access-log: cannot open {} for appending", path);
  owned_ = true;
}

AccessLog::~AccessLog() {
  if (owned_) std::fclose(file_);
}

std::string AccessLog::format(const ExchangeSummary& s) {
  const auto now = std::chrono::system_clock::now();
  const double ts = std::chrono::duration<double>(now.time_since_epoch()).count();
  nlohmann::json line = {{"ts", std::round(ts * 1000.0) / 1000.0},
                         {"request_id", s.request_id},
                         {"user", s.user},
                         {"remote", s.remote},
                         {"method", s.method},
                         {"route", s.route},
                         {"status", s.status},
                         {"prompt_tokens", s.prompt_tokens},
                         {"completion_tokens", s.completion_tokens},
                         {"latency_ms", std::round(s.latency_s * 1e4) / 10.0}};
  if (s.client_disconnected) line["client_disconnected"] = true;
  if (s.request_details) line["request"] = *s.request_details;
  return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void AccessLog::write(const ExchangeSummary& summary) {
  const std::string line = format(summary) + "\n";
  std::lock_guard lock(mutex_);
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

}  // namespace ds::server
