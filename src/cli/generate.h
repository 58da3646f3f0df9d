// `deepserve generate`: run a prompt (or a JSON-lines file of requests) through the engine and print the
// continuation.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "cli/parallel_flags.h"

namespace ds::cli {

struct GenerateOptions {
  std::string model_dir;
  std::string prompt;
  std::string prompt_ids;  // "1,2,3"
  std::string chat_file;   // a conversation (JSON), rendered with the model's chat template
  std::string batch_file;  // JSON lines of OpenAI-style request bodies
  int max_tokens = 16;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = -1;
  uint64_t seed = 0;
  bool seed_given = false;
  std::string device = "cpu";
  ParallelOptions parallel;  // --tensor-parallel-size, --dist-timeout
  std::string dtype = "auto";  // --dtype: the activations' dtype (make_backend checks it against the device)
  int threads = 0;
  bool ignore_eos = false;
  bool json = false;
  // Engine sizing.
  int64_t max_num_seqs = 64;
  int64_t max_num_batched_tokens = 2048;
  int32_t block_size = 16;
  bool enforce_eager = false;  // --enforce-eager: no CUDA graphs, every op launched from the host
  double kv_cache_gib = 0.0;  // the latent KV cache, GiB; 0: 1 GiB on the CPU, from the next on a GPU
  double gpu_memory_utilization = 0.9;
};

CLI::App* add_generate_command(CLI::App& app, GenerateOptions& options);
int run_generate(const GenerateOptions& options);

}  // namespace ds::cli
