// GPU utilization and memory for /metrics, from NVML loaded at run time: dlopen("libnvidia-ml.so.1"), so the
// binary has no link-time dependency on the driver, and a machine without it (or without a GPU) just has no
// GPU metrics. Only the documented, stable entry points are used: nvmlInit_v2, nvmlDeviceGetCount_v2,
// nvmlDeviceGetHandleByIndex_v2, nvmlDeviceGetUtilizationRates, nvmlDeviceGetMemoryInfo (and nvmlShutdown).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace ds::server {

struct GpuSample {
  int index = 0;
  double utilization_perc = 0.0;   // percent of the last sample period a kernel ran (NVML's "gpu" rate)
  uint64_t memory_used_bytes = 0;  // as nvmlDeviceGetMemoryInfo counts it: driver-reserved memory included
  uint64_t memory_total_bytes = 0;
};

class GpuMonitor {
 public:
  static constexpr const char* kLibrary = "libnvidia-ml.so.1";

  // Loads `library` and initializes NVML. On any failure available() is false and error() says why; nothing
  // throws.
  explicit GpuMonitor(const std::string& library = kLibrary);
  ~GpuMonitor();
  GpuMonitor(const GpuMonitor&) = delete;
  GpuMonitor& operator=(const GpuMonitor&) = delete;

  [[nodiscard]] bool available() const { return api_ != nullptr; }
  [[nodiscard]] const std::string& error() const { return error_; }
  [[nodiscard]] int device_count() const { return device_count_; }
  // One sample per GPU; a GPU whose query fails is left out. Empty when NVML is not available.
  [[nodiscard]] std::vector<GpuSample> sample() const;

 private:
  struct Api;
  void* library_ = nullptr;
  Api* api_ = nullptr;
  int device_count_ = 0;
  std::string error_;
  mutable std::mutex mutex_;
};

}  // namespace ds::server
