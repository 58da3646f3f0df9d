#include "cli/config_flags.h"

#include <fmt/format.h>

#include <algorithm>

#include "io/config_file.h"
#include "util/check.h"

namespace ds::cli {

void apply_config_file(CLI::App& command, const std::string& path) {
  std::vector<ConfigEntry> entries;
  try {
    entries = read_config_file(path);
  } catch (const UserError& e) {
    throw CLI::ConfigError(fmt::format("--config: {}", e.what()));
  }
  for (const ConfigEntry& entry : entries) {
    const std::string where = entry.line > 0 ? fmt::format("{}:{}", path, entry.line) : path;
    std::string flag = entry.key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    CLI::Option* option =
        flag == "config" || flag == "help" ? nullptr : command.get_option_no_throw("--" + flag);
    if (option == nullptr) {
      throw CLI::ConfigError(fmt::format("--config: {}: unknown key '{}': `deepserve {}` has no flag --{}",
                                         where, entry.key, command.get_name(), flag));
    }
    if (option->count() > 0) continue;  // given on the command line: the command line wins
    try {
      if (option->get_expected_min() == 0) {
        // A flag: true / false (a negated name like no-enable-prefix-caching inverts it, as on the command
        // line).
        if (entry.is_list || entry.values.size() != 1) {
          throw CLI::ConfigError(
              fmt::format("--config: {}: '{}' takes true or false, not a list", where, entry.key));
        }
        option->add_result(option->get_flag_value(flag, entry.values.front()));
      } else {
        if (entry.is_list && option->get_items_expected_max() == 1) {
          throw CLI::ConfigError(
              fmt::format("--config: {}: '{}' takes one value, not a list", where, entry.key));
        }
        option->add_result(entry.values);
      }
      option->run_callback();
    } catch (const CLI::ConfigError&) {
      throw;
    } catch (const CLI::Error& e) {
      throw CLI::ConfigError(fmt::format("--config: {}: '{}': {}", where, entry.key, e.what()));
    }
  }
}

}  // namespace ds::cli
