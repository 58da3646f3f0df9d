// What the fuzz targets share: a check that turns a broken property into a crash libFuzzer records, and
// the rule for exceptions. A ds::UserError is the expected answer to malformed input; anything else that
// escapes (ds::InternalError, std::bad_alloc, std::out_of_range, ...) is a finding, so it is not caught:
// libFuzzer reports the uncaught exception as a crash and saves the input.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#define FUZZ_CHECK(cond, ...)                                                              \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                                   \
      std::fprintf(stderr, "\n");                                                          \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

namespace ds::fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace ds::fuzz
