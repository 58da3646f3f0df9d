#include "server/user_limits.h"

#include <fmt/format.h>

#include "server/metrics.h"

namespace ds::server {

UserLimiter::Slot::Slot(std::shared_ptr<UserLimiter> limiter, std::string user)
    : limiter_(std::move(limiter)), user_(std::move(user)) {}

UserLimiter::Slot::~Slot() {
  release();
}

void UserLimiter::Slot::release() {
  std::call_once(released_, [this] { limiter_->release(user_); });
}

std::shared_ptr<UserLimiter::Slot> UserLimiter::try_acquire(const std::string& user) {
  {
    std::lock_guard lock(mutex_);
    int64_t& count = counts_[user];
    if (max_ > 0 && count >= max_) {
      if (count == 0) counts_.erase(user);
      return nullptr;
    }
    ++count;
  }
  return std::make_shared<Slot>(shared_from_this(), user);
}

int64_t UserLimiter::in_flight(const std::string& user) const {
  std::lock_guard lock(mutex_);
  const auto it = counts_.find(user);
  return it == counts_.end() ? 0 : it->second;
}

void UserLimiter::release(const std::string& user) {
  std::lock_guard lock(mutex_);
  const auto it = counts_.find(user);
  if (it == counts_.end()) return;
  if (--it->second <= 0) counts_.erase(it);
}

void UserCounters::record(const std::string& user) {
  std::lock_guard lock(mutex_);
  auto it = counts_.find(user);
  if (it == counts_.end()) {
    // A new name gets its own label only while fewer than kMaxUsers have one ("other" is not counted).
    const size_t named = counts_.size() - (counts_.count(kOther) ? 1 : 0);
    it = counts_.emplace(named < kMaxUsers ? user : std::string(kOther), 0).first;
  }
  ++it->second;
}

std::map<std::string, int64_t> UserCounters::snapshot() const {
  std::lock_guard lock(mutex_);
  return counts_;
}

std::string UserCounters::render(const std::string& model_name) const {
  std::string out =
      "# HELP deepserve:requests_by_user_total HTTP requests answered, by user (the first 64 users by name, "
      "the rest as \"other\").\n# TYPE deepserve:requests_by_user_total counter\n";
  for (const auto& [user, count] : snapshot()) {
    out += fmt::format("deepserve:requests_by_user_total{{model_name=\"{}\",user=\"{}\"}} {}\n",
                       escape_label_value(model_name), escape_label_value(user), count);
  }
  return out;
}

}  // namespace ds::server
