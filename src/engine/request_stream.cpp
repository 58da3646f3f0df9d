// RequestStream: the queue of deltas between the engine thread and one request's reader (engine.h).
#include "engine/engine.h"

namespace ds {

bool RequestStream::next(RequestDelta& out) {
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [&] { return !queue_.empty() || open_samples_ == 0; });
  if (queue_.empty()) return false;
  out = std::move(queue_.front());
  queue_.pop_front();
  return true;
}

bool RequestStream::try_next(RequestDelta& out) {
  std::lock_guard lock(mutex_);
  if (queue_.empty()) return false;
  out = std::move(queue_.front());
  queue_.pop_front();
  return true;
}

bool RequestStream::finished() const {
  std::lock_guard lock(mutex_);
  return open_samples_ == 0 && queue_.empty();
}

void RequestStream::set_listener(std::function<void()> listener) {
  std::function<void()> call_now;
  {
    std::lock_guard lock(mutex_);
    listener_ = std::move(listener);
    if (!queue_.empty()) call_now = listener_;
  }
  if (call_now) call_now();
}

void RequestStream::push(RequestDelta delta) {
  std::function<void()> listener;
  {
    std::lock_guard lock(mutex_);
    if (delta.finish_reason != FinishReason::kNone) --open_samples_;
    queue_.push_back(std::move(delta));
    listener = listener_;
  }
  cv_.notify_all();
  if (listener) listener();
}

}  // namespace ds
