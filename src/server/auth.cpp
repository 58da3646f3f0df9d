#include "server/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <sstream>

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

namespace {

// A key or a key's name: visible ASCII only (what a client can send after "Bearer " unaltered).
bool printable(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

}  // namespace

void ApiKeys::add(std::string name, std::string_view key) {
  DS_REQUIRE(!key.empty(), InvalidArgument, "an API key must not be empty");
  DS_REQUIRE(printable(key) && printable(name), InvalidArgument,
             "an API key and its name must be printable ASCII without spaces (key '{}')", name);
  keys_.push_back({std::move(name), sha256(key)});
}

void ApiKeys::add_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  DS_REQUIRE(in.good(), InvalidArgument, "--api-key-file: cannot open {}", path.string());
  const std::string content{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  // Text only: one binary byte (a wrong file, a truncated copy) refuses the whole file, so that garbage never
  // replaces the keys in use.
  int line_no = 1;
  for (const char c : content) {
    const auto b = static_cast<unsigned char>(c);
    if (b == '\n') ++line_no;
    DS_REQUIRE(b == '\n' || b == '\r' || b == '\t' || (b >= 0x20 && b < 0x7f), InvalidArgument,
               "--api-key-file {} line {}: byte 0x{:02x} is not printable ASCII; the file must be text, one "
               "'KEY' or 'NAME KEY' a line",
               path.string(), line_no, b);
  }
  std::istringstream lines(content);
  std::string line;
  for (line_no = 1; std::getline(lines, line); ++line_no) {
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

namespace {

// The token of "Bearer <token>" (the scheme in any case), or nullopt.
std::optional<std::string_view> bearer_token(std::string_view authorization) {
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() <= kBearer.size()) return std::nullopt;
  for (size_t i = 0; i < kBearer.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(authorization[i])) !=
        std::tolower(static_cast<unsigned char>(kBearer[i])))
      return std::nullopt;
  return authorization.substr(kBearer.size());
}

}  // namespace

Auth::Auth(ApiKeys keys) : enabled_(!keys.empty()), keys_(std::make_shared<const ApiKeys>(std::move(keys))) {}

Auth::Auth(AuthOptions options) : options_(std::move(options)) {
  enabled_ = !options_.api_keys.empty() || !options_.api_key_file.empty() || !options_.jwks_file.empty();
  keys_ = std::make_shared<const ApiKeys>(load_keys());
  if (!options_.jwks_file.empty()) jwt_ = std::make_unique<JwtVerifier>(options_.jwks_file, options_.jwt);
}

ApiKeys Auth::load_keys() const {
  ApiKeys keys;
  for (size_t i = 0; i < options_.api_keys.size(); ++i)
    keys.add(fmt::format("key-{}", i + 1), options_.api_keys[i]);
  if (!options_.api_key_file.empty()) {
    const size_t before = keys.size();
    keys.add_file(options_.api_key_file);
    DS_REQUIRE(keys.size() > before, InvalidArgument, "--api-key-file {}: no key in it",
               options_.api_key_file.string());
  }
  return keys;
}

std::shared_ptr<const ApiKeys> Auth::keys() const {
  std::lock_guard lock(mutex_);
  return keys_;
}

AuthResult Auth::authenticate(std::string_view authorization) const {
  AuthResult result;
  const auto token = bearer_token(authorization);
  constexpr const char* kKeyHelp =
      "missing or invalid credentials: send the header 'Authorization: Bearer <key>'";
  if (!token) {
    result.error = jwt_ ? "missing credentials: send the header 'Authorization: Bearer <token>'" : kKeyHelp;
    return result;
  }
  const auto keys = this->keys();
  if (jwt_ && std::count(token->begin(), token->end(), '.') == 2) {
    const JwtResult jwt = jwt_->verify(*token);
    if (jwt.user) {
      result.user = jwt.user;
      return result;
    }
    if (!keys->empty()) result.user = keys->authenticate(authorization);
    if (!result.user) {
      result.error = "invalid token: " + jwt.error;
      result.code = "invalid_token";
    }
    return result;
  }
  if (!keys->empty()) result.user = keys->authenticate(authorization);
  if (!result.user) {
    if (keys->empty()) {
      result.error = "invalid token: malformed token";
      result.code = "invalid_token";
    } else {
      result.error = jwt_ ? "invalid API key or token" : kKeyHelp;
    }
  }
  return result;
}

bool Auth::reload() {
  bool ok = true;
  if (!options_.api_key_file.empty()) {
    try {
      auto keys = std::make_shared<const ApiKeys>(load_keys());
      const size_t count = keys->size();
      {
        std::lock_guard lock(mutex_);
        keys_ = std::move(keys);
      }
      spdlog::info("--api-key-file {} reloaded: {} key(s) in all", options_.api_key_file.string(), count);
    } catch (const std::exception& e) {
      ok = false;
      spdlog::error("API key reload failed; keeping the keys loaded before: {}", e.what());
    }
  }
  if (jwt_ && !jwt_->reload()) ok = false;
  return ok;
}

}  // namespace ds::server
