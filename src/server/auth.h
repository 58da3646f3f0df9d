// API keys (--api-key, --api-key-file). Only SHA-256 digests of the keys are kept; a presented key is hashed
// and compared with every stored digest in constant time, without stopping at the first match, so neither
// the timing nor the order of the keys tells an attacker anything about them.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ds::server {

using Sha256 = std::array<uint8_t, 32>;
[[nodiscard]] Sha256 sha256(std::string_view data);

class ApiKeys {
 public:
  // `name` is who the key belongs to: it becomes the user in logs and metrics.
  void add(std::string name, std::string_view key);
  // One key per line: "KEY" or "NAME KEY" (whitespace between); blank lines and lines starting with '#'
  // are skipped. Throws UserError naming the file and line.
  void add_file(const std::filesystem::path& path);
  [[nodiscard]] bool empty() const { return keys_.empty(); }
  [[nodiscard]] size_t size() const { return keys_.size(); }
  // The user for an Authorization header value ("Bearer KEY"), or nullopt.
  [[nodiscard]] std::optional<std::string> authenticate(std::string_view authorization) const;

 private:
  struct Key {
    std::string name;
    Sha256 digest;
  };
  std::vector<Key> keys_;
};

}  // namespace ds::server
