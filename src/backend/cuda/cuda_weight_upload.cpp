// Weights to the GPU in parallel: reader threads read the checkpoint's files with pread into pinned staging
// buffers (two per thread, so one fills while the other's copy to the device runs on the thread's own stream).
// pread copies straight from the page cache (or the disk), where a copy out of the map would fault its pages
// into this process first; copies given as host memory only (fd < 0) are read from there.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "backend/cuda/cuda_context.h"
#include "util/check.h"

namespace ds::cuda {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct Chunk {
  const HostToDevice* copy;
  size_t offset;  // into the copy
  size_t bytes;
};

// The chunk's bytes into buf: pread from the file, or memcpy from host memory.
void read_chunk(const Chunk& c, void* buf) {
  const HostToDevice& copy = *c.copy;
  if (copy.fd < 0) {
    std::memcpy(buf, static_cast<const std::byte*>(copy.src) + c.offset, c.bytes);
    return;
  }
  auto* out = static_cast<std::byte*>(buf);
  size_t done = 0;
  while (done < c.bytes) {
    const uint64_t at = copy.file_offset + c.offset + done;
    const ssize_t n = ::pread(copy.fd, out + done, c.bytes - done, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    DS_REQUIRE(n > 0, CheckpointError, "{}: reading {} bytes at offset {}: {}",
               copy.file != nullptr ? copy.file->string() : std::string("checkpoint"), c.bytes - done, at,
               n == 0 ? std::string("unexpected end of file (truncated while loading?)") : std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

}  // namespace

UploadStats upload_parallel(std::span<const HostToDevice> copies, int device, int max_threads, size_t chunk_bytes) {
  const Clock::time_point start = Clock::now();
  std::vector<Chunk> chunks;
  size_t total = 0;
  for (const HostToDevice& c : copies) {
    for (size_t off = 0; off < c.bytes; off += chunk_bytes) chunks.push_back({&c, off, std::min(chunk_bytes, c.bytes - off)});
    total += c.bytes;
  }
  UploadStats stats;
  if (chunks.empty()) return stats;
  const size_t staging = std::min(chunk_bytes, total);
  const int threads = static_cast<int>(std::min<size_t>(static_cast<size_t>(std::max(1, max_threads)), chunks.size()));
  stats.threads = threads;
  std::atomic<size_t> next{0};
  std::mutex mutex;  // guards error and the stats sums
  std::exception_ptr error;
  auto worker = [&] {
    cudaStream_t stream = nullptr;
    void* buffers[2] = {nullptr, nullptr};
    cudaEvent_t done[2] = {nullptr, nullptr};
    double read_s = 0, wait_s = 0;
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
          const std::lock_guard lock(mutex);
          if (error) break;
        }
        const int slot = static_cast<int>(k % 2);
        Clock::time_point t = Clock::now();
        if (used[slot]) DS_CUDA_CHECK(cudaEventSynchronize(done[slot]));  // its previous copy has left
        wait_s += seconds_since(t);
        t = Clock::now();
        read_chunk(chunks[i], buffers[slot]);
        read_s += seconds_since(t);
        std::byte* dst = static_cast<std::byte*>(chunks[i].copy->dst) + chunks[i].offset;
        DS_CUDA_CHECK(cudaMemcpyAsync(dst, buffers[slot], chunks[i].bytes, cudaMemcpyHostToDevice, stream));
        DS_CUDA_CHECK(cudaEventRecord(done[slot], stream));
        used[slot] = true;
      }
      const Clock::time_point t = Clock::now();
      DS_CUDA_CHECK(cudaStreamSynchronize(stream));
      wait_s += seconds_since(t);
    } catch (...) {
      const std::lock_guard lock(mutex);
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
    const std::lock_guard lock(mutex);
    stats.read_s += read_s;
    stats.wait_s += wait_s;
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (std::thread& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  stats.wall_s = seconds_since(start);
  return stats;
}

}  // namespace ds::cuda
