#include "server/gpu_metrics.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <memory>
#include <type_traits>

namespace ds::server {
namespace {

// The slice of NVML's C ABI used here, as nvml.h declares it (NVML API v2 entry points; these structs
// have kept their layout since the first NVML release).
using NvmlReturn = int;  // nvmlReturn_t; NVML_SUCCESS is 0
constexpr NvmlReturn kNvmlSuccess = 0;
struct NvmlDevice;  // nvmlDevice_t is an opaque handle: struct nvmlDevice_st*
struct NvmlUtilization {
  unsigned int gpu;     // percent of time over the past sample period one or more kernels ran
  unsigned int memory;  // percent of time device memory was read or written
};
struct NvmlMemory {
  unsigned long long total;  // bytes
  unsigned long long free;
  unsigned long long used;
};

}  // namespace

struct GpuMonitor::Api {
  NvmlReturn (*init)();
  NvmlReturn (*shutdown)();
  NvmlReturn (*device_count)(unsigned int*);
  NvmlReturn (*device_handle)(unsigned int, NvmlDevice**);
  NvmlReturn (*utilization)(NvmlDevice*, NvmlUtilization*);
  NvmlReturn (*memory)(NvmlDevice*, NvmlMemory*);
};

GpuMonitor::GpuMonitor(const std::string& library) {
  library_ = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library_ == nullptr) {
    const char* why = dlerror();
    error_ = fmt::format("cannot load {}: {}", library, why != nullptr ? why : "unknown error");
    return;
  }
  auto api = std::make_unique<Api>();
  auto bind = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(library_, name));
    if (fn == nullptr && error_.empty()) error_ = fmt::format("{} has no {}", library, name);
  };
  bind(api->init, "nvmlInit_v2");
  bind(api->shutdown, "nvmlShutdown");
  bind(api->device_count, "nvmlDeviceGetCount_v2");
  bind(api->device_handle, "nvmlDeviceGetHandleByIndex_v2");
  bind(api->utilization, "nvmlDeviceGetUtilizationRates");
  bind(api->memory, "nvmlDeviceGetMemoryInfo");
  if (!error_.empty()) {
    dlclose(library_);
    library_ = nullptr;
    return;
  }
  if (const NvmlReturn rc = api->init(); rc != kNvmlSuccess) {
    error_ = fmt::format("nvmlInit_v2 failed (NVML error {})", rc);
    dlclose(library_);
    library_ = nullptr;
    return;
  }
  unsigned int count = 0;
  if (const NvmlReturn rc = api->device_count(&count); rc != kNvmlSuccess) {
    error_ = fmt::format("nvmlDeviceGetCount_v2 failed (NVML error {})", rc);
    api->shutdown();
    dlclose(library_);
    library_ = nullptr;
    return;
  }
  device_count_ = static_cast<int>(count);
  api_ = api.release();
}

GpuMonitor::~GpuMonitor() {
  if (api_ != nullptr) api_->shutdown();
  delete api_;
  if (library_ != nullptr) dlclose(library_);
}

std::vector<GpuSample> GpuMonitor::sample() const {
  std::vector<GpuSample> out;
  if (api_ == nullptr) return out;
  std::lock_guard lock(mutex_);
  for (int i = 0; i < device_count_; ++i) {
    NvmlDevice* device = nullptr;
    if (api_->device_handle(static_cast<unsigned int>(i), &device) != kNvmlSuccess) continue;
    NvmlUtilization utilization{};
    NvmlMemory memory{};
    if (api_->utilization(device, &utilization) != kNvmlSuccess) continue;
    if (api_->memory(device, &memory) != kNvmlSuccess) continue;
    out.push_back({i, static_cast<double>(utilization.gpu), memory.used, memory.total});
  }
  return out;
}

}  // namespace ds::server
