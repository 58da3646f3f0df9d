// JWT bearer tokens (RFC 7519) checked against a JWKS file (RFC 7517): RS256, ES256 and HS256 only, each key
// pinned to one algorithm, so a token cannot pick a weaker one (`alg: none`, HS256 signed with an RSA public
// key, ...). OpenSSL 3 EVP only.
//
// A key's algorithm is its `alg`, or follows from its `kty` when it has none: RSA -> RS256, EC (P-256) ->
// ES256, oct -> HS256. Keys with `use` other than "sig", or of another type or algorithm, are skipped with a
// warning, so a JWKS published by an identity provider can be used as it is.
//
// The token's header names the key by `kid`; with a single key in the set, a token without `kid` uses it.
// Claims: `exp` is required; `nbf` and `iat` are checked when present; `iss` and `aud` (a string or an array)
// when configured; all with `leeway_s` of clock skew. The user is `sub`.
//
// JwtVerifier keeps the key set behind a shared_ptr swapped under a mutex: a reload (SIGHUP, or the file's
// modification time changing, looked at once a second at most) builds a new set and swaps it in, and a
// reload that fails keeps the old set.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ds::server {

enum class JwtAlg { kRS256, kES256, kHS256 };
[[nodiscard]] const char* to_string(JwtAlg alg);

// Base64url without padding (RFC 7515 §2). decode: nullopt on any character outside the alphabet, on
// padding, or on an impossible length.
[[nodiscard]] std::string base64url_encode(std::string_view bytes);
[[nodiscard]] std::optional<std::string> base64url_decode(std::string_view text);

// An immutable set of verification keys.
class JwkSet {
 public:
  struct Key;
  // Parses a JWKS document ({"keys": [...]}) or a single JWK. Throws InvalidArgument naming the key and the
  // problem (never its material) when a supported key is malformed, two keys share a kid, or no usable key
  // is left.
  [[nodiscard]] static std::shared_ptr<const JwkSet> parse(std::string_view json);
  // parse() of a file; errors name the file.
  [[nodiscard]] static std::shared_ptr<const JwkSet> load(const std::filesystem::path& path);

  JwkSet();
  ~JwkSet();
  JwkSet(const JwkSet&) = delete;
  JwkSet& operator=(const JwkSet&) = delete;

  [[nodiscard]] size_t size() const;
  [[nodiscard]] std::vector<std::string> kids() const;
  // The key a token header names (kid may be empty), or nullptr.
  [[nodiscard]] const Key* find(std::string_view kid) const;

 private:
  std::vector<std::unique_ptr<Key>> keys_;
};

struct JwtOptions {
  std::string issuer;    // empty: not checked
  std::string audience;  // empty: not checked
  int64_t leeway_s = 60;
};

struct JwtResult {
  std::optional<std::string> user;  // the `sub` claim when the token is valid
  std::string error;                // else a short reason, safe to send to the client
};

// Checks a compact JWS (header.payload.signature) against `keys` at unix time `now`.
[[nodiscard]] JwtResult verify_jwt(const JwkSet& keys, std::string_view token, const JwtOptions& options,
                                   int64_t now);

class JwtVerifier {
 public:
  // Loads the file (throws InvalidArgument naming it when it cannot be used).
  JwtVerifier(std::filesystem::path jwks_file, JwtOptions options);

  // Re-reads the file now. On failure the old set stays and the error is logged; returns false.
  bool reload();
  // reload() when the file's modification time or size changed, looked at once a second at most.
  void reload_if_changed();

  [[nodiscard]] JwtResult verify(std::string_view token);
  [[nodiscard]] std::shared_ptr<const JwkSet> keys() const;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  struct FileStamp {
    int64_t mtime_ns = 0;
    int64_t size = 0;
    uint64_t inode = 0;
    bool operator==(const FileStamp&) const = default;
  };
  [[nodiscard]] std::optional<FileStamp> stamp() const;

  const std::filesystem::path path_;
  const JwtOptions options_;
  mutable std::mutex mutex_;  // guards keys_ and loaded_
  std::shared_ptr<const JwkSet> keys_;
  std::optional<FileStamp> loaded_;  // the file as last read (successfully or not)
  std::mutex reload_mutex_;          // one reload at a time
  std::atomic<int64_t> last_check_ms_{0};
};

}  // namespace ds::server
