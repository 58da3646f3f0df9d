// Test-time keys and tokens: RSA, P-256 and HMAC keys generated with OpenSSL for each test process, their
// public JWKs, JWTs signed with them, and self-signed TLS certificates made by the openssl CLI.
#pragma once

#include <openssl/evp.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace ds::server::testing {

struct TestKey {
  std::string kid;
  std::string alg;                 // RS256, ES256, HS256
  std::shared_ptr<EVP_PKEY> pkey;  // RS256, ES256
  std::string secret;              // HS256

  // The public JWK (for HS256 the secret, as JWKS carry it), with "alg" unless `with_alg` is false.
  [[nodiscard]] nlohmann::json jwk(bool with_alg = true) const;
  // header.payload.signature, signed with this key; `header` gets alg (this key's, unless given) and kid
  // (unless given; null to leave it out).
  [[nodiscard]] std::string sign(const nlohmann::json& claims,
                                 nlohmann::json header = nlohmann::json::object()) const;
  // The signature of `data` as JWS wants it (ES256: raw r||s).
  [[nodiscard]] std::string signature(std::string_view data) const;
};

TestKey rsa_key(std::string kid, int bits = 2048);
TestKey ec_key(std::string kid);
TestKey hmac_key(std::string kid);

nlohmann::json jwks(const std::vector<const TestKey*>& keys);
// Writes the file whole: a temporary beside it, then rename (as an operator's deploy would).
void write_file_atomically(const std::filesystem::path& path, const std::string& text);

int64_t now_s();
// exp an hour ahead, sub = user.
nlohmann::json claims_for(const std::string& user);
// An unsigned-token helper: base64url of the JSON.
std::string b64json(const nlohmann::json& j);

// A self-signed P-256 certificate for localhost / 127.0.0.1 made by `openssl req`; false when the openssl CLI
// is missing or fails.
bool make_self_signed_cert(const std::filesystem::path& cert, const std::filesystem::path& key,
                           const std::string& common_name = "localhost");
// A fresh directory under the test temp dir, removed by the caller (or left for inspection).
std::filesystem::path temp_dir(const std::string& name);

}  // namespace ds::server::testing
