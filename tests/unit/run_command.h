// Running a command (usually the deepserve binary under test) to completion from a test.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace ds::test_util {

struct CommandRun {
  int exit_code = -1;  // -1 when a signal ended it, or it could not start
  std::string output;  // stdout and stderr together
};

// Runs `command` through /bin/sh and waits for it.
inline CommandRun run_command(const std::string& command) {
  CommandRun r;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// `deepserve <args>` (DS_BINARY, the binary the tests were built with).
inline CommandRun run_deepserve(const std::string& args) {
  return run_command(std::string(DS_BINARY) + " " + args);
}

}  // namespace ds::test_util
