#include "model/tensor_parallel_runner.h"

#include <fmt/format.h>

namespace ds {

TensorParallelRunner::Worker::Worker() : thread_([this] { loop(); }) {}

TensorParallelRunner::Worker::~Worker() {
  {
    const std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void TensorParallelRunner::Worker::post(std::function<void()> task) {
  {
    const std::lock_guard lock(mu_);
    DS_CHECK(!busy_, "a rank's worker was given a second task before the first was waited for");
    task_ = std::move(task);
    busy_ = true;
    error_ = nullptr;
  }
  cv_.notify_all();
}

void TensorParallelRunner::Worker::wait() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return !busy_; });
  if (error_) std::rethrow_exception(error_);
}

void TensorParallelRunner::Worker::loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || (busy_ && task_); });
    if (stop_) return;
    std::function<void()> task = std::move(task_);
    task_ = nullptr;
    lock.unlock();
    std::exception_ptr error;
    try {
      task();
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    error_ = error;
    busy_ = false;
    cv_.notify_all();
  }
}

TensorParallelRunner::TensorParallelRunner(const std::filesystem::path& dir,
                                           std::span<Backend* const> backends,
                                           std::vector<std::unique_ptr<Communicator>> comms, bool expert_parallel)
    : comms_(std::move(comms)) {
  const int n = static_cast<int>(backends.size());
  DS_CHECK(n >= 1 && static_cast<int>(comms_.size()) == n, "{} backends for a group of {}", n, comms_.size());
  models_.resize(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) workers_.push_back(std::make_unique<Worker>());
  on_all([&](int r) {
    ModelParallel p;
    p.tp = TensorParallel{n, r, expert_parallel};
    p.comm = comms_[static_cast<size_t>(r)].get();
    models_[static_cast<size_t>(r)] = DeepseekModel::load(dir, *backends[static_cast<size_t>(r)], p);
  });
}

TensorParallelRunner::~TensorParallelRunner() {
  workers_.clear();
}

void TensorParallelRunner::on_all(const std::function<void(int)>& fn) {
  for (size_t r = 0; r < workers_.size(); ++r) {
    workers_[r]->post([this, &fn, r] {
      try {
        fn(static_cast<int>(r));
      } catch (const std::exception& e) {
        comms_[r]->abort(e.what());  // the other ranks stop waiting for this one
        throw;
      }
    });
  }
  std::exception_ptr first;
  for (auto& w : workers_) {
    try {
      w->wait();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

void TensorParallelRunner::allocate_kv_cache(int64_t num_blocks, int32_t block_size) {
  on_all([&](int r) { models_[static_cast<size_t>(r)]->allocate_kv_cache(num_blocks, block_size); });
}

void TensorParallelRunner::allocate_swap_space(int64_t num_blocks) {
  on_all([&](int r) { models_[static_cast<size_t>(r)]->allocate_swap_space(num_blocks); });
}

void TensorParallelRunner::swap_out(std::span<const BlockMove> moves) {
  on_all([&](int r) { models_[static_cast<size_t>(r)]->swap_out(moves); });
}

void TensorParallelRunner::swap_in(std::span<const BlockMove> moves) {
  on_all([&](int r) { models_[static_cast<size_t>(r)]->swap_in(moves); });
}

void TensorParallelRunner::copy_blocks(std::span<const BlockMove> moves) {
  on_all([&](int r) { models_[static_cast<size_t>(r)]->copy_blocks(moves); });
}

Tensor TensorParallelRunner::forward(const ForwardBatch& batch) {
  std::vector<Tensor> logits(models_.size());
  on_all([&](int r) { logits[static_cast<size_t>(r)] = models_[static_cast<size_t>(r)]->forward(batch); });
  return logits.front();
}

DecodeGraphSummary TensorParallelRunner::capture_decode_graphs(std::span<const int64_t> sizes,
                                                               int32_t max_blocks_per_seq) {
  std::vector<DecodeGraphSummary> out(models_.size());
  on_all([&](int r) {
    out[static_cast<size_t>(r)] =
        models_[static_cast<size_t>(r)]->capture_decode_graphs(sizes, max_blocks_per_seq);
  });
  return out.front();
}

}  // namespace ds
