// Per-user accounting: --max-requests-per-user (generation requests in flight per user, 429 past it) and the
// requests-by-user counter of /metrics, whose label set is bounded (the first 64 users by name, then
// "other"). The user is the JWT `sub`, the API key's name, or "anonymous" without authentication.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace ds::server {

class UserLimiter : public std::enable_shared_from_this<UserLimiter> {
 public:
  // A request's place in its user's count; release() (or the destructor) gives it back, once.
  class Slot {
   public:
    Slot(std::shared_ptr<UserLimiter> limiter, std::string user);
    ~Slot();
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    void release();  // any thread; idempotent

   private:
    std::shared_ptr<UserLimiter> limiter_;
    std::string user_;
    std::once_flag released_;
  };

  // max_in_flight 0: unlimited.
  explicit UserLimiter(int64_t max_in_flight) : max_(max_in_flight) {}
  [[nodiscard]] int64_t max_in_flight() const { return max_; }
  // A slot, or nullptr when `user` already has max_in_flight requests in flight.
  [[nodiscard]] std::shared_ptr<Slot> try_acquire(const std::string& user);
  [[nodiscard]] int64_t in_flight(const std::string& user) const;

 private:
  void release(const std::string& user);

  const int64_t max_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, int64_t> counts_;  // users with something in flight only
};

class UserCounters {
 public:
  static constexpr size_t kMaxUsers = 64;
  static constexpr const char* kOther = "other";

  void record(const std::string& user);
  [[nodiscard]] std::map<std::string, int64_t> snapshot() const;
  // deepserve:requests_by_user_total in the Prometheus text format.
  [[nodiscard]] std::string render(const std::string& model_name) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, int64_t> counts_;
};

}  // namespace ds::server
