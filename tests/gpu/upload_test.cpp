// Weights to the GPU (cuda_weight_upload.cpp): every byte arrives, read from the files with pread or from host
// memory, in chunks that do not divide the copies evenly; a file that ends early is a clear CheckpointError.
#include <cuda_runtime.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_context.h"
#include "io/safetensors.h"
#include "unit/model/fixture.h"
#include "util/check.h"

namespace ds {
namespace {

std::vector<std::byte> to_host(const void* device, size_t bytes) {
  std::vector<std::byte> out(bytes);
  EXPECT_EQ(cudaMemcpy(out.data(), device, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

TEST(UploadTest, EveryWeightOnTheDeviceIsTheCheckpointsBytes) {
  const Checkpoint checkpoint = Checkpoint::open(testing::fixture_dir("deepseek_v3_tiny_fp8"));
  std::vector<Weight> weights;
  for (const std::string& name : checkpoint.names()) {
    const TensorView& t = checkpoint.get(name);
    if (t.shape.size() != 2 || t.dtype == DType::kF32) continue;  // matrices; scales go up with their weight
    Weight w;
    w.tensor = &t;
    w.rows = t.dim(0), w.cols = t.dim(1);
    weights.push_back(w);
  }
  ASSERT_GT(weights.size(), 10u);
  std::vector<Weight*> pointers;
  for (Weight& w : weights) pointers.push_back(&w);
  CudaBackend gpu;
  gpu.prepare_weights(pointers);
  int64_t bytes = 0;
  for (const Weight& w : weights) {
    ASSERT_NE(w.device_data, nullptr) << w.name();
    EXPECT_GE(w.tensor->fd, 0) << w.name();
    const std::vector<std::byte> back = to_host(w.device_data, w.tensor->nbytes);
    EXPECT_EQ(std::memcmp(back.data(), w.tensor->data, w.tensor->nbytes), 0) << w.name();
    bytes += static_cast<int64_t>(w.tensor->nbytes);
  }
  const auto mem = gpu.device_memory();
  ASSERT_TRUE(mem.has_value());
  EXPECT_EQ(mem->weight_bytes, bytes);
  EXPECT_GE(mem->weight_upload.threads, 1);
  EXPECT_GT(mem->weight_upload.wall_s, 0.0);
  std::printf("SUMMARY upload: %zu weights, %lld bytes, %d readers, %.3f s\n", weights.size(),
              static_cast<long long>(bytes), mem->weight_upload.threads, mem->weight_upload.wall_s);
}

// A file of n bytes with byte i = i * 7 mod 251, and its descriptor.
struct PatternFile {
  std::filesystem::path path;
  int fd = -1;
  std::vector<std::byte> bytes;
  explicit PatternFile(size_t n) {
    path = std::filesystem::temp_directory_path() / ("ds_upload_test_" + std::to_string(::getpid()));
    for (size_t i = 0; i < n; ++i) bytes.push_back(static_cast<std::byte>(i * 7 % 251));
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(n));
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  ~PatternFile() {
    if (fd >= 0) ::close(fd);
    std::filesystem::remove(path);
  }
};

TEST(UploadTest, FileAndHostCopiesInUnevenChunksArriveWhole) {
  PatternFile file(1'000'003);
  ASSERT_GE(file.fd, 0);
  std::vector<std::byte> host(300'007);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<std::byte>(i % 253);
  void* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, 2'000'000), cudaSuccess);
  auto* d = static_cast<std::byte*>(dev);
  // From the file at an odd offset, from the file whole, from host memory; 4 KiB + 1 chunks, 3 readers.
  const std::vector<cuda::HostToDevice> copies = {
      {nullptr, d, 500'000, file.fd, 12'345, &file.path},
      {nullptr, d + 500'000, file.bytes.size(), file.fd, 0, &file.path},
      {host.data(), d + 1'600'000, host.size()},
  };
  const cuda::UploadStats stats = cuda::upload_parallel(copies, 0, 3, 4097);
  EXPECT_EQ(stats.threads, 3);
  EXPECT_EQ(to_host(d, 500'000), std::vector<std::byte>(file.bytes.begin() + 12'345, file.bytes.begin() + 512'345));
  EXPECT_EQ(to_host(d + 500'000, file.bytes.size()), file.bytes);
  EXPECT_EQ(to_host(d + 1'600'000, host.size()), host);
  cudaFree(dev);
}

TEST(UploadTest, AFileEndingBeforeTheTensorIsACheckpointError) {
  PatternFile file(1000);
  void* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, 4096), cudaSuccess);
  const std::vector<cuda::HostToDevice> copies = {{nullptr, dev, 200, file.fd, 900, &file.path}};
  try {
    cuda::upload_parallel(copies, 0, 2, 64);
    ADD_FAILURE() << "no error";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("unexpected end of file"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(file.path.string()), std::string::npos) << e.what();
  }
  cudaFree(dev);
}

}  // namespace
}  // namespace ds
