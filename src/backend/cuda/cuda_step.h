// One step's host arrays (the ForwardBatch) on the device, for Backend::stage_step: copied together from a
// pinned staging buffer to a device buffer whose address stays fixed once graphs are captured, so that a
// graph recorded with these addresses reads each replay's arrays.
// Internal to src/backend/cuda.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "backend/backend.h"

namespace ds::cuda {

class DeviceBuffer;

enum class StepArray : int {
  kSlotMapping,    // int64 [num_tokens]
  kTokenIds,       // int32 [num_tokens]
  kPositions,      // int32 [num_tokens]
  kQueryStartLoc,  // int32 [num_seqs + 1]
  kSeqLens,        // int32 [num_seqs]
  kLogitsIndices,  // int32 [logits rows]
  kSeqOfToken,     // int32 [num_tokens], derived from query_start_loc
  kBlockTable,     // int32 [num_seqs, table_pitch]
  kCount
};

class StepBuffers {
 public:
  StepBuffers() = default;
  ~StepBuffers();
  StepBuffers(const StepBuffers&) = delete;
  StepBuffers& operator=(const StepBuffers&) = delete;

  // Lays the batch's arrays out and, unless the stream is capturing, copies them to the device on `stream`
  // (two copies: the arrays, then the block table into rows of table_pitch entries). table_pitch 0: the
  // batch's max_blocks_per_seq. The layout depends only on the arrays' sizes and the pitch, so a graph
  // replayed after begin() of a batch of the captured shape reads that batch.
  void begin(const ForwardBatch& batch, int32_t table_pitch, cudaStream_t stream);
  void end();
  [[nodiscard]] bool active() const { return active_; }
  // The device copy of `host` when it is one of the current step's arrays (same address and size), else null.
  [[nodiscard]] const void* find(const void* host, size_t bytes) const;
  template <class T>
  [[nodiscard]] const T* device(StepArray a) const {
    return reinterpret_cast<const T*>(base_ + offset_[static_cast<size_t>(a)]);
  }
  [[nodiscard]] int32_t table_pitch() const { return table_pitch_; }
  // Graphs hold the device buffer's addresses from now on: it never moves again. A later batch too large for
  // it gets a buffer of its own for that step.
  void freeze() { frozen_ = true; }
  // Frees the buffers (waits for the stream first).
  void release(cudaStream_t stream);

 private:
  static constexpr size_t kCount = static_cast<size_t>(StepArray::kCount);
  bool active_ = false, frozen_ = false;
  std::array<const void*, kCount> host_{};  // the batch's arrays (seq_of_token: none)
  std::array<size_t, kCount> bytes_{};      // their sizes as given (the table: compact, on the host)
  std::array<size_t, kCount> offset_{};     // where each lies in the device buffer
  int32_t table_pitch_ = 0;
  std::byte* base_ = nullptr;  // the device buffer this step uses
  std::byte* pinned_ = nullptr;
  size_t pinned_bytes_ = 0;
  std::byte* device_ = nullptr;
  size_t device_bytes_ = 0;
  std::unique_ptr<DeviceBuffer> overflow_;  // a frozen buffer's stand-in for an oversized step
  cudaEvent_t copied_ = nullptr;            // the last copy out of pinned_ has finished
};

}  // namespace ds::cuda
