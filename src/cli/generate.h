// `deepserve generate`: run a prompt through the model and stream the continuation to stdout.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ds::cli {

struct GenerateOptions {
  std::string model_dir;
  std::string prompt;
  std::string prompt_ids;  // "1,2,3"
  int max_tokens = 16;
  double temperature = 1.0;
  double top_p = 1.0;
  uint64_t seed = 0;
  std::string device = "cpu";
  int threads = 0;
  bool ignore_eos = false;
  bool json = false;
};

CLI::App* add_generate_command(CLI::App& app, GenerateOptions& options);
int run_generate(const GenerateOptions& options);

}  // namespace ds::cli
