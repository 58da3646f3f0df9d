// `--config FILE` for a subcommand: every long flag of the subcommand can also come from a YAML or JSON file
// (io/config_file.h), keyed by the flag's name without "--" (max-num-seqs or max_num_seqs, as vLLM accepts);
// a flag given on the command line keeps its value.
//
// CLI11 (2.1) reads config files for the top-level app only, so the entries are applied to the subcommand
// here, with the rule CLI11 uses for its own config files: an option that already has a result from the
// command line is left alone, the others get the file's value and run their callbacks and checks.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

namespace ds::cli {

// Throws CLI::ConfigError naming the file and line for a file outside the subset, an unknown key, or a
// value the flag refuses.
void apply_config_file(CLI::App& command, const std::string& path);

}  // namespace ds::cli
