// deepserve <serve|generate|tokenize>: parses the subcommand and its flags, then calls the layers below.
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <cstdio>

#include "cli/generate.h"
#include "cli/serve.h"
#include "cli/tokenize.h"
#include "util/check.h"

int main(int argc, char** argv) {
  CLI::App app{"deepserve: an inference server for DeepSeek-V3/R1-family checkpoints"};
  app.require_subcommand(1);
  app.set_version_flag("--version", DEEPSERVE_VERSION);
  ds::cli::GenerateOptions generate_options;
  CLI::App* generate = ds::cli::add_generate_command(app, generate_options);
  ds::cli::ServeOptions serve_options;
  CLI::App* serve = ds::cli::add_serve_command(app, serve_options);
  ds::cli::TokenizeOptions tokenize_options;
  CLI::App* tokenize = ds::cli::add_tokenize_command(app, tokenize_options);
  CLI11_PARSE(app, argc, argv);
  try {
    if (generate->parsed()) return ds::cli::run_generate(generate_options);
    if (serve->parsed()) return ds::cli::run_serve(serve_options);
    if (tokenize->parsed()) return ds::cli::run_tokenize(tokenize_options);
  } catch (const ds::UserError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}
