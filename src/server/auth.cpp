#include "server/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <fstream>

#include "util/check.h"

namespace ds::server {

Sha256 sha256(std::string_view data) {
  Sha256 out{};
  unsigned int len = 0;
  DS_CHECK(
      EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) == 1 && len == out.size(),
      "SHA-256 failed");
  return out;
}

void ApiKeys::add(std::string name, std::string_view key) {
  DS_REQUIRE(!key.empty(), InvalidArgument, "an API key must not be empty");
  keys_.push_back({std::move(name), sha256(key)});
}

void ApiKeys::add_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  DS_REQUIRE(in.good(), InvalidArgument, "--api-key-file: cannot open {}", path.string());
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    const auto last = line.find_last_not_of(" \t\r");
    const std::string text = line.substr(first, last - first + 1);
    const auto space = text.find_first_of(" \t");
    if (space == std::string::npos) {
      add(fmt::format("key-{}", keys_.size() + 1), text);
      continue;
    }
    const auto key_start = text.find_first_not_of(" \t", space);
    const std::string key = text.substr(key_start);
    DS_REQUIRE(key.find_first_of(" \t") == std::string::npos, InvalidArgument,
               "--api-key-file {} line {}: expected 'KEY' or 'NAME KEY'", path.string(), line_no);
    add(text.substr(0, space), key);
  }
}

std::optional<std::string> ApiKeys::authenticate(std::string_view authorization) const {
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() <= kBearer.size()) return std::nullopt;
  for (size_t i = 0; i < kBearer.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(authorization[i])) !=
        std::tolower(static_cast<unsigned char>(kBearer[i])))
      return std::nullopt;
  const Sha256 presented = sha256(authorization.substr(kBearer.size()));
  // Every digest is compared; the match (if any) is selected without a data-dependent branch.
  size_t match = keys_.size();
  for (size_t i = 0; i < keys_.size(); ++i) {
    const size_t equal = CRYPTO_memcmp(presented.data(), keys_[i].digest.data(), presented.size()) == 0;
    match = equal * i + (1 - equal) * match;
  }
  if (match == keys_.size()) return std::nullopt;
  return keys_[match].name;
}

}  // namespace ds::server
