// What serve and generate share before the engine starts: the backend --device names, and the model loaded
// onto it with a line saying how fast.
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"
#include "cli/parallel_flags.h"
#include "model/deepseek.h"

namespace ds::cli {

// "cpu" (threads: 0 = every core) or "cuda"; InvalidArgument for cuda in a build without it, and for a --dtype the
// device does not compute in: the CPU backend is the float32 reference, the CUDA backend computes in bfloat16
// (fp32 accumulation, fp32 residual stream and logits); "auto" is each one's own, float16 neither.
std::unique_ptr<Backend> make_backend(const std::string& device, const std::string& dtype, int threads);

// Loads the checkpoint at dir onto backend. A GPU backend uploads the weights while loading; the line
// "deepserve: weights: 31.41 GB to the GPU in 8.3 s (3.77 GB/s; ...)" goes to stderr. The CPU reads the
// mapped files in place: every page is read once now (with `progress`, a progress line on a terminal) so the first
// requests do not wait on the disk.
std::unique_ptr<DeepseekModel> load_model(const std::string& dir, Backend& backend, bool progress);

// The model as the engine drives it: one backend and model at tensor-parallel size 1, else one backend per rank
// and a TensorParallelRunner (ranks as threads; --device cpu only in this version: the CUDA ranks over NCCL
// are not built yet, and asking for them is an error that says so).
struct LoadedModel {
  std::vector<std::unique_ptr<Backend>> backends;
  std::unique_ptr<ModelRunner> owner;
  ModelRunner* runner = nullptr;
};
LoadedModel load_runner(const std::string& dir, const std::string& device, const std::string& dtype, int threads,
                        const ParallelOptions& parallel, bool progress);

}  // namespace ds::cli
