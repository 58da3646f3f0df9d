// A main for a libFuzzer target built without libFuzzer (the ctest replay, tests/CMakeLists.txt): runs the
// target on every file under the directories or files given, then on `--random N` inputs of random bytes
// from a fixed seed. Exits non-zero only through the target's own crash (abort, uncaught exception).
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

void run_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  (void)LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

}  // namespace

int main(int argc, char** argv) {
  size_t files = 0, random_inputs = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--random" && i + 1 < argc) {
      random_inputs = std::stoul(argv[++i]);
      continue;
    }
    if (std::filesystem::is_directory(arg)) {
      for (const auto& entry : std::filesystem::directory_iterator(arg))
        if (entry.is_regular_file()) {
          run_file(entry.path());
          ++files;
        }
    } else {
      run_file(arg);
      ++files;
    }
  }
  std::mt19937_64 rng(19);
  for (size_t n = 0; n < random_inputs; ++n) {
    std::vector<uint8_t> bytes(rng() % 256);
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    (void)LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
  }
  std::printf("replayed %zu files and %zu random inputs\n", files, random_inputs);
  return 0;
}
