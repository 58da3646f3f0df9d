// Tensor parallelism inside one process: one DeepseekModel per rank, each holding its slice of the weights
// (model/shard.h) on its own backend, each driven by its own thread, in lockstep through the group's
// communicator. The engine sees one ModelRunner.
//
// Threads, not processes, within a node (DESIGN.md): the engine, the scheduler and the HTTP server stay one
// process with one address space; every rank's step description is the same object, never serialized; a
// rank's fault is the process's fault, which is what a group needs anyway (one dead rank ends the group).
// Each rank's calls run on that rank's thread, so a device backend sets its device once, on its own thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "model/deepseek.h"
#include "model/runner.h"
#include "parallel/communicator.h"

namespace ds {

class TensorParallelRunner final : public ModelRunner {
 public:
  // Loads rank r's slice of the checkpoint in `dir` onto backends[r] (one backend per rank, each used only
  // from rank r's thread afterwards), ranks in parallel. comms: the group, one per rank, in rank order.
  // expert_parallel: the routed experts whole on ranks (TensorParallel::expert_parallel).
  TensorParallelRunner(const std::filesystem::path& dir, std::span<Backend* const> backends,
                       std::vector<std::unique_ptr<Communicator>> comms, bool expert_parallel = false);
  ~TensorParallelRunner() override;

  [[nodiscard]] int size() const { return static_cast<int>(models_.size()); }
  [[nodiscard]] DeepseekModel& rank_model(int r) const { return *models_.at(static_cast<size_t>(r)); }

  [[nodiscard]] const ModelConfig& config() const override { return models_.front()->config(); }
  [[nodiscard]] Backend& backend() const override { return models_.front()->backend(); }
  void allocate_kv_cache(int64_t num_blocks, int32_t block_size) override;
  [[nodiscard]] int64_t num_kv_blocks() const override { return models_.front()->num_kv_blocks(); }
  [[nodiscard]] int32_t block_size() const override { return models_.front()->block_size(); }
  [[nodiscard]] int64_t kv_block_bytes(int32_t block_size) const override {
    return models_.front()->kv_block_bytes(block_size);
  }
  void allocate_swap_space(int64_t num_blocks) override;
  void swap_out(std::span<const BlockMove> moves) override;
  void swap_in(std::span<const BlockMove> moves) override;
  void copy_blocks(std::span<const BlockMove> moves) override;
  // Every rank runs the step; rank 0's logits are returned (all ranks compute the same ones).
  [[nodiscard]] Tensor forward(const ForwardBatch& batch) override;
  DecodeGraphSummary capture_decode_graphs(std::span<const int64_t> sizes,
                                           int32_t max_blocks_per_seq) override;

 private:
  // A rank's thread: runs one task at a time.
  class Worker {
   public:
    Worker();
    ~Worker();
    void post(std::function<void()> task);
    // Waits for the posted task; rethrows what it threw.
    void wait();

   private:
    void loop();
    std::mutex mu_;
    std::condition_variable cv_;
    std::function<void()> task_;
    bool busy_ = false, stop_ = false;
    std::exception_ptr error_;
    std::thread thread_;
  };

  // Runs fn(rank) on every rank's thread and waits for all; rethrows the first rank's error (a rank that
  // fails ends the group: the others' collectives fail within the timeout and end too).
  void on_all(const std::function<void(int)>& fn);

  std::vector<std::unique_ptr<Communicator>> comms_;
  std::vector<std::unique_ptr<DeepseekModel>> models_;
  std::vector<std::unique_ptr<Worker>> workers_;
};

}  // namespace ds
