// `deepserve tokenize`: the rendered prompt and its ids, as the model will see them.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace ds::cli {

struct TokenizeOptions {
  std::string model_dir;
  std::string text;
  std::string chat_file;
  bool add_generation_prompt = false;
  bool no_special_tokens = false;
  bool json = false;
};

CLI::App* add_tokenize_command(CLI::App& app, TokenizeOptions& options);
int run_tokenize(const TokenizeOptions& options);

}  // namespace ds::cli
