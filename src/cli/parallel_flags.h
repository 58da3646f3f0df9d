// The parallel layout's flags, with vLLM's and SGLang's names (--tensor-parallel-size, --dist-timeout).
#pragma once

#include <CLI/CLI.hpp>

namespace ds::cli {

struct ParallelOptions {
  int tensor_parallel_size = 1;
  bool enable_expert_parallel = false;  // the routed experts whole on ranks instead of sliced
  double dist_timeout_s = 600;  // a collective that a rank does not reach within this ends the group
};

// Adds them to a subcommand (and so to its --config file).
void add_parallel_flags(CLI::App& cmd, ParallelOptions& o);

}  // namespace ds::cli
