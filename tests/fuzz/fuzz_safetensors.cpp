// Arbitrary bytes as a .safetensors file -> SafetensorsFile::open. A malformed file must give a
// ds::CheckpointError; one that opens must describe only bytes inside the mapping: every tensor's
// [data, data + nbytes) lies in the data region after the header, its byte count matches its shape and
// dtype, and tensors do not overlap. Every tensor byte is read, so ASan sees any view past the end.
//
// The input reaches open() through a memfd (an anonymous in-memory file) named by /proc/self/fd/N: the
// real path through open/fstat/mmap, with no disk writes and no temp file to clean up.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_check.h"
#include "io/dtype.h"
#include "io/safetensors.h"
#include "util/check.h"

namespace {

int memfd() {
  static const int fd = [] {
    const int fd = ::memfd_create("fuzz.safetensors", MFD_CLOEXEC);
    FUZZ_CHECK(fd >= 0, "memfd_create failed");
    return fd;
  }();
  return fd;
}

void write_input(const uint8_t* data, size_t size) {
  const int fd = memfd();
  FUZZ_CHECK(::ftruncate(fd, 0) == 0 && ::ftruncate(fd, static_cast<off_t>(size)) == 0, "ftruncate");
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    FUZZ_CHECK(n > 0, "pwrite");
    done += static_cast<size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_input(data, size);
  std::unique_ptr<ds::SafetensorsFile> file;
  try {
    file = ds::SafetensorsFile::open("/proc/self/fd/" + std::to_string(memfd()));
  } catch (const ds::CheckpointError&) {
    return 0;
  }

  FUZZ_CHECK(file->file_size() == size, "file_size %zu != input size %zu", file->file_size(), size);
  uint64_t header_len = 0;
  std::memcpy(&header_len, data, sizeof header_len);
  const std::byte* begin = file->bytes().data();
  const std::byte* data_begin = begin + 8 + header_len;
  const std::byte* end = begin + size;
  volatile uint8_t sink = 0;
  std::vector<std::pair<const std::byte*, const std::byte*>> ranges;
  for (const auto& [name, view] : file->tensors()) {
    FUZZ_CHECK(view.name == name, "view named %s under key %s", view.name.c_str(), name.c_str());
    FUZZ_CHECK(
        view.data >= data_begin && view.data <= end && view.nbytes <= static_cast<size_t>(end - view.data),
        "tensor %s outside the data region", name.c_str());
    uint64_t numel = 1;
    for (const int64_t d : view.shape) {
      FUZZ_CHECK(d >= 0, "negative dimension");
      numel *= static_cast<uint64_t>(d);
    }
    FUZZ_CHECK(numel * ds::dtype_size(view.dtype) == view.nbytes,
               "tensor %s: nbytes does not match its shape", name.c_str());
    FUZZ_CHECK(static_cast<uint64_t>(view.numel()) == numel, "numel() disagrees");
    for (size_t i = 0; i < view.nbytes; ++i) sink = sink + static_cast<uint8_t>(view.data[i]);
    if (view.nbytes > 0) ranges.emplace_back(view.data, view.data + view.nbytes);
  }
  // Non-empty tensors do not share a byte.
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    FUZZ_CHECK(ranges[i].first >= ranges[i - 1].second, "two tensors overlap");
  }
  return 0;
}
