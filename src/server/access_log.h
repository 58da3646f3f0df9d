// The access log: one JSON object per answered request, one per line (request id, user, route, status,
// tokens in and out, latency). Written to a file or to stdout ("-"). Prompts and sampling parameters appear
// only with --log-requests (the "request" object, see server/request_log.h).
#pragma once

#include <cstdio>
#include <mutex>
#include <string>

#include "server/http_server.h"

namespace ds::server {

class AccessLog {
 public:
  // "-" is stdout; throws UserError when the file cannot be opened for appending.
  explicit AccessLog(const std::string& path);
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  void write(const ExchangeSummary& summary);
  [[nodiscard]] static std::string format(const ExchangeSummary& summary);

 private:
  std::mutex mutex_;
  std::FILE* file_ = nullptr;
  bool owned_ = false;
};

}  // namespace ds::server
