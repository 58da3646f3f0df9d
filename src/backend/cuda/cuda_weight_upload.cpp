// Weights to the GPU in parallel: reader threads copy the mapped checkpoint into pinned staging buffers (two per
// thread, so one fills while the other's copy to the device runs on the thread's own stream). Reading the map
// faults the file's pages in, so several threads read the file in parallel too.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "backend/cuda/cuda_context.h"
#include "util/check.h"

namespace ds::cuda {

void upload_parallel(std::span<const HostToDevice> copies, int device, int max_threads, size_t chunk_bytes) {
  struct Chunk {
    const std::byte* src;
    std::byte* dst;
    size_t bytes;
  };
  std::vector<Chunk> chunks;
  size_t total = 0;
  for (const HostToDevice& c : copies) {
    for (size_t off = 0; off < c.bytes; off += chunk_bytes)
      chunks.push_back({static_cast<const std::byte*>(c.src) + off, static_cast<std::byte*>(c.dst) + off,
                        std::min(chunk_bytes, c.bytes - off)});
    total += c.bytes;
  }
  if (chunks.empty()) return;
  const size_t staging = std::min(chunk_bytes, total);
  const int threads = static_cast<int>(std::min<size_t>(static_cast<size_t>(std::max(1, max_threads)), chunks.size()));
  std::atomic<size_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr error;
  auto worker = [&] {
    cudaStream_t stream = nullptr;
    void* buffers[2] = {nullptr, nullptr};
    cudaEvent_t done[2] = {nullptr, nullptr};
    try {
      DS_CUDA_CHECK(cudaSetDevice(device));
      DS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
      for (int i = 0; i < 2; ++i) {
        DS_CUDA_CHECK(cudaHostAlloc(&buffers[i], staging, cudaHostAllocDefault));
        DS_CUDA_CHECK(cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming));
      }
      bool used[2] = {false, false};
      for (size_t k = 0;; ++k) {
        const size_t i = next.fetch_add(1);
        if (i >= chunks.size()) break;
        {
          const std::lock_guard lock(error_mutex);
          if (error) break;
        }
        const int slot = static_cast<int>(k % 2);
        if (used[slot]) DS_CUDA_CHECK(cudaEventSynchronize(done[slot]));  // its previous copy has left
        std::memcpy(buffers[slot], chunks[i].src, chunks[i].bytes);
        DS_CUDA_CHECK(
            cudaMemcpyAsync(chunks[i].dst, buffers[slot], chunks[i].bytes, cudaMemcpyHostToDevice, stream));
        DS_CUDA_CHECK(cudaEventRecord(done[slot], stream));
        used[slot] = true;
      }
      DS_CUDA_CHECK(cudaStreamSynchronize(stream));
    } catch (...) {
      const std::lock_guard lock(error_mutex);
      if (!error) error = std::current_exception();
    }
    if (stream != nullptr) {
      cudaStreamSynchronize(stream);
      cudaStreamDestroy(stream);
    }
    for (int i = 0; i < 2; ++i) {
      if (done[i] != nullptr) cudaEventDestroy(done[i]);
      if (buffers[i] != nullptr) cudaFreeHost(buffers[i]);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (std::thread& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace ds::cuda
