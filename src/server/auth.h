// API keys (--api-key, --api-key-file). Only SHA-256 digests of the keys are kept; a presented key is hashed
// and compared with every stored digest in constant time, without stopping at the first match, so neither
// the timing nor the order of the keys tells an attacker anything about them.
//
// Auth puts API keys and JWTs (jwt.h) together behind one thread-safe authenticate(), and reloads the key
// file and the JWKS (SIGHUP) without disturbing requests in flight.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/http_server.h"
#include "server/jwt.h"

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

struct AuthOptions {
  std::vector<std::string> api_keys;   // --api-key: the users key-1, key-2, ...
  std::filesystem::path api_key_file;  // empty: none
  std::filesystem::path jwks_file;     // empty: no JWT
  JwtOptions jwt;
};

class Auth {
 public:
  Auth() = default;  // no authentication
  explicit Auth(ApiKeys keys);
  // Reads the key file and the JWKS; throws InvalidArgument naming the file that cannot be used (an empty
  // key file included: it would lock everyone out, or, worse, be taken for "no authentication").
  explicit Auth(AuthOptions options);

  // Fixed at construction: a reload never turns authentication off.
  [[nodiscard]] bool enabled() const { return enabled_; }
  // "Bearer <token>": a token with two dots is tried as a JWT (then, if that fails, as an API key, which may
  // contain dots), anything else as an API key.
  [[nodiscard]] AuthResult authenticate(std::string_view authorization) const;
  // SIGHUP: re-reads the key file and the JWKS. What fails to load keeps its old contents (and is logged);
  // returns true when everything reloaded.
  bool reload();

 private:
  [[nodiscard]] ApiKeys load_keys() const;
  [[nodiscard]] std::shared_ptr<const ApiKeys> keys() const;

  AuthOptions options_;
  bool enabled_ = false;
  mutable std::mutex mutex_;
  std::shared_ptr<const ApiKeys> keys_ = std::make_shared<const ApiKeys>();
  std::unique_ptr<JwtVerifier> jwt_;
};

}  // namespace ds::server
