#include "util/thread_pool.h"

#include <algorithm>

namespace ds {

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::parallel_for(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(1, min_chunk);
  const int64_t max_chunks = std::max<int64_t>(1, n / min_chunk);
  const int64_t num_chunks = std::min<int64_t>(max_chunks, 4LL * num_threads());
  if (num_chunks <= 1 || workers_.empty()) {
    fn(0, n);
    return;
  }
  const int64_t chunk = (n + num_chunks - 1) / num_chunks;
  std::unique_lock lock(mutex_);
  job_ = &fn;
  job_n_ = n;
  job_chunk_ = chunk;
  next_ = 0;
  pending_chunks_ = (n + chunk - 1) / chunk;
  error_ = nullptr;
  ++generation_;
  work_cv_.notify_all();
  // The caller works too, then waits for the stragglers.
  while (next_ < job_n_) {
    const int64_t begin = next_;
    next_ += job_chunk_;
    lock.unlock();
    try {
      fn(begin, std::min(begin + chunk, n));
    } catch (...) {
      std::lock_guard g(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    lock.lock();
    --pending_chunks_;
  }
  done_cv_.wait(lock, [this] { return pending_chunks_ == 0; });
  job_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  std::unique_lock lock(mutex_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || (job_ != nullptr && generation_ != seen && next_ < job_n_); });
    if (stop_) return;
    seen = generation_;
    while (job_ != nullptr && next_ < job_n_) {
      const int64_t begin = next_;
      next_ += job_chunk_;
      const auto* fn = job_;
      const int64_t end = std::min(begin + job_chunk_, job_n_);
      lock.unlock();
      try {
        (*fn)(begin, end);
      } catch (...) {
        std::lock_guard g(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      lock.lock();
      if (--pending_chunks_ == 0) done_cv_.notify_all();
    }
  }
}

}  // namespace ds
