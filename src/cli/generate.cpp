#include "cli/generate.h"

#include "util/check.h"

namespace ds::cli {

CLI::App* add_generate_command(CLI::App& app, GenerateOptions& options) {
  CLI::App* cmd = app.add_subcommand("generate", "Generate a continuation of a prompt");
  cmd->add_option("--model", options.model_dir, "Checkpoint directory (HuggingFace layout)")->required();
  return cmd;
}

int run_generate(const GenerateOptions& options) {
  throw UserError("generate: the model is not wired up in this build yet");
}

}  // namespace ds::cli
