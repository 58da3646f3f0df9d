#include "cli/load_model.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "backend/cpu/cpu_backend.h"
#ifdef DEEPSERVE_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "model/tensor_parallel_runner.h"
#include "parallel/communicator.h"
#include "util/check.h"

namespace ds::cli {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Reads every page once, showing bytes and GB/s when asked to and on a terminal; silent otherwise.
void prefetch_with_progress(const Checkpoint& checkpoint, bool progress) {
  const bool tty = progress && isatty(STDERR_FILENO) != 0;
  const auto t0 = std::chrono::steady_clock::now();
  checkpoint.prefetch([&](uint64_t done, uint64_t total) {
    if (!tty) return;
    const double s = seconds_since(t0);
    std::fprintf(stderr, "\rloading %s: %.2f / %.2f GB (%.2f GB/s)", checkpoint.dir().filename().c_str(),
                 static_cast<double>(done) / 1e9, static_cast<double>(total) / 1e9,
                 s > 0 ? static_cast<double>(done) / 1e9 / s : 0.0);
    if (done == total) std::fprintf(stderr, "\n");
  });
}

}  // namespace

std::unique_ptr<Backend> make_backend(const std::string& device, const std::string& dtype, int threads) {
  DS_REQUIRE(dtype != "float16" && dtype != "half", InvalidArgument,
             "--dtype {}: not supported; DeepSeek's checkpoints are bfloat16 or FP8, whose range float16 does not "
             "hold: use --dtype bfloat16 with --device cuda (or auto)", dtype);
  const bool fp32 = dtype == "float32" || dtype == "float";
  DS_REQUIRE(!(device == "cuda" && fp32), InvalidArgument,
             "--dtype {}: the CUDA backend computes in bfloat16 (fp32 accumulation, fp32 residual stream and "
             "logits); use --dtype bfloat16 or auto, or --device cpu for the float32 reference", dtype);
  DS_REQUIRE(!(device == "cpu" && dtype == "bfloat16"), InvalidArgument,
             "--dtype bfloat16: the CPU backend is the float32 reference; use --device cuda for bfloat16, or "
             "--dtype float32 or auto on the CPU");
  if (device == "cuda") {
#ifdef DEEPSERVE_HAVE_CUDA
    return std::make_unique<CudaBackend>();
#else
    throw InvalidArgument(
        "--device cuda: this build has no CUDA backend (configure with -DDEEPSERVE_CUDA=ON where nvcc is "
        "installed), use --device cpu");
#endif
  }
  return std::make_unique<CpuBackend>(threads);
}

std::unique_ptr<DeepseekModel> load_model(const std::string& dir, Backend& backend, bool progress) {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<DeepseekModel> model = DeepseekModel::load(dir, backend);
  const double load_s = seconds_since(t0);
  const std::optional<DeviceMemoryInfo> memory = backend.device_memory();
  if (!memory) {
    prefetch_with_progress(model->checkpoint(), progress);
    return model;
  }
  const WeightUploadStats& up = memory->weight_upload;
  const double gb = static_cast<double>(memory->weight_bytes) / 1e9;
  std::fprintf(stderr,
               "deepserve: weights: %.2f GB to the GPU in %.1f s (%.2f GB/s; the copy took %.1f s with %d readers, "
               "of their time %.0f%% reading the checkpoint, %.0f%% waiting on copies to the GPU)\n",
               gb, load_s, load_s > 0 ? gb / load_s : 0.0, up.wall_s, up.threads,
               up.wall_s > 0 ? 100.0 * up.read_s / (up.wall_s * up.threads) : 0.0,
               up.wall_s > 0 ? 100.0 * up.wait_s / (up.wall_s * up.threads) : 0.0);
  return model;
}

LoadedModel load_runner(const std::string& dir, const std::string& device, const std::string& dtype, int threads,
                        const ParallelOptions& parallel, bool progress) {
  const int tp = parallel.tensor_parallel_size;
  DS_REQUIRE(tp >= 1 && tp <= 64, InvalidArgument, "--tensor-parallel-size {}: use 1 to 64", tp);
  DS_REQUIRE(parallel.dist_timeout_s > 0, InvalidArgument, "--dist-timeout {}: must be positive (seconds)",
             parallel.dist_timeout_s);
  LoadedModel out;
  DS_REQUIRE(tp > 1 || !parallel.enable_expert_parallel, InvalidArgument,
             "--enable-expert-parallel needs more than one rank (--tensor-parallel-size > 1)");
  if (tp == 1) {
    out.backends.push_back(make_backend(device, dtype, threads));
    auto model = load_model(dir, *out.backends.front(), progress);
    out.runner = model.get();
    out.owner = std::move(model);
    return out;
  }
  DS_REQUIRE(device == "cpu", InvalidArgument,
             "--tensor-parallel-size {} with --device {}: tensor parallelism runs on --device cpu ranks in this "
             "version; GPU ranks over NCCL are not built yet (use --tensor-parallel-size 1)",
             tp, device);
  // The cores shared out between the ranks (each rank's GEMMs on its own threads).
  const int cores = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<Backend*> ranks;
  for (int r = 0; r < tp; ++r) {
    out.backends.push_back(make_backend(device, dtype, std::max(1, cores / tp)));
    ranks.push_back(out.backends.back().get());
  }
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(parallel.dist_timeout_s * 1000));
  auto runner =
      std::make_unique<TensorParallelRunner>(dir, ranks, HostGroup::make(tp, timeout), parallel.enable_expert_parallel);
  // The ranks map the same files: one pass puts their pages in the page cache for all of them.
  prefetch_with_progress(runner->rank_model(0).checkpoint(), progress);
  out.runner = runner.get();
  out.owner = std::move(runner);
  return out;
}

}  // namespace ds::cli
