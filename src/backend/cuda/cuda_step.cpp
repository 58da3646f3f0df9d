#include "backend/cuda/cuda_step.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "backend/cuda/cuda_context.h"
#include "util/check.h"

namespace ds::cuda {
namespace {

constexpr size_t kAlign = 16;

size_t aligned(size_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}

bool is_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  DS_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

}  // namespace

StepBuffers::~StepBuffers() {
  // CudaContext calls release() first; this only guards against a leak if it did not.
  if (pinned_ != nullptr) (void)cudaFreeHost(pinned_);
  if (copied_ != nullptr) (void)cudaEventDestroy(copied_);
}

void StepBuffers::begin(const ForwardBatch& b, int32_t table_pitch, cudaStream_t stream) {
  const int32_t pitch = table_pitch > 0 ? table_pitch : b.max_blocks_per_seq;
  DS_CHECK(pitch >= b.max_blocks_per_seq, "block table pitch {} below the batch's {} blocks per sequence",
           pitch, b.max_blocks_per_seq);
  const auto n = static_cast<size_t>(b.num_tokens()), seqs = static_cast<size_t>(b.num_seqs());
  host_ = {b.slot_mapping.data(),
           b.token_ids.data(),
           b.positions.data(),
           b.query_start_loc.data(),
           b.seq_lens.data(),
           b.logits_indices.data(),
           nullptr,
           b.block_table.data()};
  bytes_ = {b.slot_mapping.size() * sizeof(int64_t),
            b.token_ids.size() * sizeof(int32_t),
            b.positions.size() * sizeof(int32_t),
            b.query_start_loc.size() * sizeof(int32_t),
            b.seq_lens.size() * sizeof(int32_t),
            b.logits_indices.size() * sizeof(int32_t),
            n * sizeof(int32_t),
            b.block_table.size() * sizeof(int32_t)};
  size_t at = 0;
  for (size_t i = 0; i < kCount; ++i) {
    offset_[i] = at;
    at += aligned(bytes_[i]);
  }
  const size_t table_at = offset_[static_cast<size_t>(StepArray::kBlockTable)];
  const size_t host_bytes = at;  // the table compact: seqs x max_blocks_per_seq
  const size_t device_bytes = table_at + seqs * static_cast<size_t>(pitch) * sizeof(int32_t);
  table_pitch_ = pitch;

  if (is_capturing(stream)) {
    // Recording: nothing is copied; the kernels take the addresses, which the same shapes reproduce.
    DS_CHECK(device_ != nullptr && device_bytes <= device_bytes_,
             "a step captured in a graph needs {} bytes of step buffers, {} are reserved: run the same batch "
             "shape before capturing it",
             device_bytes, device_bytes_);
    base_ = device_;
    active_ = true;
    return;
  }

  // The previous step's copy out of the staging buffer must be done before it is overwritten.
  if (copied_ == nullptr) DS_CUDA_CHECK(cudaEventCreateWithFlags(&copied_, cudaEventDisableTiming));
  DS_CUDA_CHECK(cudaEventSynchronize(copied_));
  if (host_bytes > pinned_bytes_) {
    const size_t grown = std::max(host_bytes, pinned_bytes_ * 3 / 2);
    if (pinned_ != nullptr) DS_CUDA_CHECK(cudaFreeHost(pinned_));
    pinned_ = nullptr;
    pinned_bytes_ = 0;
    DS_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&pinned_), grown));
    pinned_bytes_ = grown;
  }
  overflow_.reset();
  if (device_bytes <= device_bytes_) {
    base_ = device_;
  } else if (!frozen_) {
    if (device_ != nullptr) DS_CUDA_CHECK(cudaFreeAsync(device_, stream));
    device_ = nullptr;
    const size_t grown = std::max(device_bytes, device_bytes_ * 3 / 2);
    device_bytes_ = 0;
    DS_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&device_), grown, stream));
    device_bytes_ = grown;
    base_ = device_;
  } else {
    overflow_ = std::make_unique<DeviceBuffer>(stream, device_bytes);
    base_ = overflow_->as<std::byte>();
  }

  for (size_t i = 0; i < kCount; ++i)
    if (host_[i] != nullptr && bytes_[i] > 0) std::memcpy(pinned_ + offset_[i], host_[i], bytes_[i]);
  auto* seq_of_token =
      reinterpret_cast<int32_t*>(pinned_ + offset_[static_cast<size_t>(StepArray::kSeqOfToken)]);
  for (size_t s = 0; s < seqs; ++s)
    for (int32_t t = b.query_start_loc[s]; t < b.query_start_loc[s + 1]; ++t)
      seq_of_token[t] = static_cast<int32_t>(s);
  if (table_at > 0) DS_CUDA_CHECK(cudaMemcpyAsync(base_, pinned_, table_at, cudaMemcpyHostToDevice, stream));
  const size_t row_bytes = static_cast<size_t>(b.max_blocks_per_seq) * sizeof(int32_t);
  if (seqs > 0 && row_bytes > 0)
    DS_CUDA_CHECK(cudaMemcpy2DAsync(base_ + table_at, static_cast<size_t>(pitch) * sizeof(int32_t),
                                    pinned_ + table_at, row_bytes, row_bytes, seqs, cudaMemcpyHostToDevice,
                                    stream));
  DS_CUDA_CHECK(cudaEventRecord(copied_, stream));
  active_ = true;
}

void StepBuffers::end() {
  active_ = false;
  host_.fill(nullptr);
}

const void* StepBuffers::find(const void* host, size_t bytes) const {
  if (!active_ || host == nullptr) return nullptr;
  for (size_t i = 0; i < kCount; ++i)
    if (host_[i] == host && bytes_[i] == bytes && i != static_cast<size_t>(StepArray::kBlockTable))
      return base_ + offset_[i];
  return nullptr;
}

void StepBuffers::release(cudaStream_t stream) {
  end();
  overflow_.reset();
  if (device_ != nullptr) (void)cudaFreeAsync(device_, stream);
  device_ = nullptr;
  device_bytes_ = 0;
  (void)cudaStreamSynchronize(stream);
  if (pinned_ != nullptr) (void)cudaFreeHost(pinned_);
  pinned_ = nullptr;
  pinned_bytes_ = 0;
  if (copied_ != nullptr) (void)cudaEventDestroy(copied_);
  copied_ = nullptr;
}

}  // namespace ds::cuda
