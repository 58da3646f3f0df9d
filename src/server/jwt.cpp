#include "server/jwt.h"

#include <fmt/ranges.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <nlohmann/json.hpp>

#include <array>
#include <fstream>
#include <functional>
#include <sstream>

#include "util/check.h"

namespace ds::server {

const char* to_string(JwtAlg alg) {
  switch (alg) {
    case JwtAlg::kRS256:
      return "RS256";
    case JwtAlg::kES256:
      return "ES256";
    case JwtAlg::kHS256:
      return "HS256";
  }
  return "?";
}

namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int base64url_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

std::optional<JwtAlg> parse_alg(std::string_view name) {
  if (name == "RS256") return JwtAlg::kRS256;
  if (name == "ES256") return JwtAlg::kES256;
  if (name == "HS256") return JwtAlg::kHS256;
  return std::nullopt;
}

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
using BnPtr = std::unique_ptr<BIGNUM, BnFree>;

// A public key from OSSL_PARAMs ("RSA" or "EC"), checked by OpenSSL (on the curve, sane modulus); nullptr if
// OpenSSL refuses it.
PkeyPtr pkey_from_params(const char* type, const std::function<bool(OSSL_PARAM_BLD*)>& push) {
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  OSSL_PARAM* params = nullptr;
  EVP_PKEY_CTX* ctx = nullptr;
  EVP_PKEY* pkey = nullptr;
  bool ok = bld != nullptr && push(bld) && (params = OSSL_PARAM_BLD_to_param(bld)) != nullptr &&
            (ctx = EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr)) != nullptr &&
            EVP_PKEY_fromdata_init(ctx) == 1 &&
            EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) == 1;
  EVP_PKEY_CTX_free(ctx);
  ctx = nullptr;
  if (ok) {
    ctx = EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr);
    ok = ctx != nullptr && EVP_PKEY_public_check(ctx) == 1;
  }
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  if (!ok) {
    EVP_PKEY_free(pkey);
    return nullptr;
  }
  return PkeyPtr(pkey);
}

// An unsigned big-endian integer as DER INTEGER.
void der_integer(std::string& out, std::string_view be) {
  size_t start = 0;
  while (start + 1 < be.size() && be[start] == 0) ++start;
  be.remove_prefix(start);
  const bool pad = (static_cast<unsigned char>(be[0]) & 0x80) != 0;
  out += '\x02';
  out += static_cast<char>(be.size() + (pad ? 1 : 0));
  if (pad) out += '\0';
  out += be;
}

// JWS ES256 signatures are r || s, 32 bytes each (RFC 7518 §3.4); EVP wants DER ECDSA-Sig-Value.
std::string ecdsa_raw_to_der(std::string_view raw) {
  std::string body;
  der_integer(body, raw.substr(0, 32));
  der_integer(body, raw.substr(32, 32));
  std::string der = "\x30";
  der += static_cast<char>(body.size());  // at most 70 bytes: short form
  return der + body;
}

bool verify_digest(EVP_PKEY* pkey, std::string_view data, std::string_view signature) {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  const bool ok =
      md != nullptr && EVP_DigestVerifyInit_ex(md, nullptr, "SHA256", nullptr, nullptr, pkey, nullptr) == 1 &&
      EVP_DigestVerify(md, reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                       reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  EVP_MD_CTX_free(md);
  return ok;
}

bool verify_hmac(std::string_view secret, std::string_view data, std::string_view signature) {
  std::array<unsigned char, 32> mac{};
  size_t mac_len = 0;
  if (EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, secret.data(), secret.size(),
                reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac.data(), mac.size(),
                &mac_len) == nullptr ||
      mac_len != mac.size()) {
    return false;
  }
  return signature.size() == mac.size() && CRYPTO_memcmp(mac.data(), signature.data(), mac.size()) == 0;
}

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string base64url_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(bytes[i]) << 16) | (static_cast<uint8_t>(bytes[i + 1]) << 8) |
                       static_cast<uint8_t>(bytes[i + 2]);
    for (int shift : {18, 12, 6, 0}) out += kAlphabet[(v >> shift) & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint8_t>(bytes[i]) << 16;
    if (rest == 2) v |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    if (rest == 2) out += kAlphabet[(v >> 6) & 63];
  }
  return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = base64url_value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  // Leftover bits must be zero: one encoding per byte string.
  if ((acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

struct JwkSet::Key {
  std::string kid;
  JwtAlg alg = JwtAlg::kRS256;
  PkeyPtr pkey;        // RS256, ES256
  std::string secret;  // HS256

  ~Key() { OPENSSL_cleanse(secret.data(), secret.size()); }
};

JwkSet::JwkSet() = default;
JwkSet::~JwkSet() = default;

size_t JwkSet::size() const {
  return keys_.size();
}

std::vector<std::string> JwkSet::kids() const {
  std::vector<std::string> out;
  for (const auto& k : keys_) out.push_back(k->kid);
  return out;
}

const JwkSet::Key* JwkSet::find(std::string_view kid) const {
  if (kid.empty()) return keys_.size() == 1 ? keys_.front().get() : nullptr;
  for (const auto& k : keys_)
    if (k->kid == kid) return k.get();
  return nullptr;
}

std::shared_ptr<const JwkSet> JwkSet::parse(std::string_view text) {
  const nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
  DS_REQUIRE(!doc.is_discarded() && doc.is_object(), InvalidArgument, "not a JSON object");
  nlohmann::json list;
  if (doc.contains("keys")) {
    list = doc["keys"];
    DS_REQUIRE(list.is_array(), InvalidArgument, "\"keys\" is not an array");
  } else {
    DS_REQUIRE(doc.contains("kty"), InvalidArgument, "neither a JWKS ({{\"keys\": [...]}}) nor a JWK");
    list = nlohmann::json::array({doc});
  }
  auto set = std::make_shared<JwkSet>();
  for (size_t i = 0; i < list.size(); ++i) {
    const nlohmann::json& jwk = list[i];
    DS_REQUIRE(jwk.is_object(), InvalidArgument, "key {} is not a JSON object", i);
    auto str = [&](const char* field) -> std::optional<std::string> {
      if (!jwk.contains(field)) return std::nullopt;
      DS_REQUIRE(jwk[field].is_string(), InvalidArgument, "key {}: \"{}\" is not a string", i, field);
      return jwk[field].get<std::string>();
    };
    auto key = std::make_unique<Key>();
    key->kid = str("kid").value_or("");
    const std::string where =
        key->kid.empty() ? fmt::format("key {}", i) : fmt::format("key {} (kid '{}')", i, key->kid);
    const auto kty = str("kty");
    DS_REQUIRE(kty.has_value(), InvalidArgument, "{}: no \"kty\"", where);
    if (const auto use = str("use"); use && *use != "sig") {
      spdlog::warn("JWKS {}: \"use\" is '{}', not 'sig'; skipped", where, *use);
      continue;
    }
    std::optional<JwtAlg> kty_alg;
    if (*kty == "RSA") kty_alg = JwtAlg::kRS256;
    if (*kty == "EC") kty_alg = JwtAlg::kES256;
    if (*kty == "oct") kty_alg = JwtAlg::kHS256;
    if (!kty_alg) {
      spdlog::warn("JWKS {}: key type '{}' is not supported (RSA, EC P-256, oct); skipped", where, *kty);
      continue;
    }
    key->alg = *kty_alg;
    if (const auto alg = str("alg")) {
      const auto parsed = parse_alg(*alg);
      if (!parsed) {
        spdlog::warn("JWKS {}: algorithm '{}' is not supported (RS256, ES256, HS256); skipped", where, *alg);
        continue;
      }
      DS_REQUIRE(*parsed == *kty_alg, InvalidArgument, "{}: \"alg\" {} does not fit \"kty\" {}", where, *alg,
                 *kty);
    }
    auto b64 = [&](const char* field) {
      const auto value = str(field);
      DS_REQUIRE(value.has_value(), InvalidArgument, "{}: no \"{}\"", where, field);
      auto bytes = base64url_decode(*value);
      DS_REQUIRE(bytes.has_value() && !bytes->empty(), InvalidArgument, "{}: \"{}\" is not base64url", where,
                 field);
      return std::move(*bytes);
    };
    if (key->alg == JwtAlg::kRS256) {
      const std::string n = b64("n"), e = b64("e");
      // The builder refers to the BIGNUMs until OSSL_PARAM_BLD_to_param(): they live through the call.
      const BnPtr bn_n(
          BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), static_cast<int>(n.size()), nullptr));
      const BnPtr bn_e(
          BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), static_cast<int>(e.size()), nullptr));
      DS_REQUIRE(bn_n != nullptr && bn_e != nullptr, InvalidArgument, "{}: not a valid RSA public key",
                 where);
      key->pkey = pkey_from_params("RSA", [&](OSSL_PARAM_BLD* bld) {
        return OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n.get()) == 1 &&
               OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e.get()) == 1;
      });
      DS_REQUIRE(key->pkey != nullptr, InvalidArgument, "{}: not a valid RSA public key", where);
      DS_REQUIRE(EVP_PKEY_get_bits(key->pkey.get()) >= 2048, InvalidArgument,
                 "{}: an RSA key of {} bits; at least 2048 are required", where,
                 EVP_PKEY_get_bits(key->pkey.get()));
    } else if (key->alg == JwtAlg::kES256) {
      const auto crv = str("crv");
      DS_REQUIRE(crv == "P-256", InvalidArgument, "{}: curve '{}' is not supported (P-256 only)", where,
                 crv.value_or(""));
      const std::string x = b64("x"), y = b64("y");
      DS_REQUIRE(x.size() == 32 && y.size() == 32, InvalidArgument,
                 "{}: \"x\" and \"y\" must be 32 bytes each for P-256", where);
      const std::string point = std::string(1, '\x04') + x + y;
      key->pkey = pkey_from_params("EC", [&](OSSL_PARAM_BLD* bld) {
        return OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "P-256", 0) == 1 &&
               OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) ==
                   1;
      });
      DS_REQUIRE(key->pkey != nullptr, InvalidArgument, "{}: not a valid P-256 public key", where);
    } else {
      key->secret = b64("k");
      DS_REQUIRE(key->secret.size() >= 32, InvalidArgument,
                 "{}: an HS256 key of {} bytes; at least 32 are required", where, key->secret.size());
    }
    for (const auto& other : set->keys_) {
      DS_REQUIRE(other->kid != key->kid, InvalidArgument, "{}: two keys have the kid '{}'", where, key->kid);
    }
    set->keys_.push_back(std::move(key));
  }
  DS_REQUIRE(!set->keys_.empty(), InvalidArgument, "no usable key (RS256, ES256 or HS256)");
  if (set->keys_.size() > 1) {
    for (const auto& k : set->keys_) {
      if (k->kid.empty()) spdlog::warn("JWKS: a key without kid among several is used by no token");
    }
  }
  return set;
}

std::shared_ptr<const JwkSet> JwkSet::load(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  DS_REQUIRE(in.good(), InvalidArgument, "--jwt-jwks-file {}: cannot open it", path.string());
  std::stringstream text;
  text << in.rdbuf();
  try {
    return parse(text.str());
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(fmt::format("--jwt-jwks-file {}: {}", path.string(), e.what()));
  }
}

JwtResult verify_jwt(const JwkSet& keys, std::string_view token, const JwtOptions& options, int64_t now) {
  auto fail = [](const char* why) { return JwtResult{std::nullopt, why}; };
  const size_t dot1 = token.find('.');
  const size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos)
    return fail("malformed token");
  const std::string_view signed_part = token.substr(0, dot2);
  const auto header_bytes = base64url_decode(token.substr(0, dot1));
  const auto payload_bytes = base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1));
  const auto signature = base64url_decode(token.substr(dot2 + 1));
  if (!header_bytes || !payload_bytes || !signature) return fail("malformed token (base64url)");
  const nlohmann::json header = nlohmann::json::parse(*header_bytes, nullptr, false);
  if (header.is_discarded() || !header.is_object()) return fail("malformed token (header)");
  if (!header.contains("alg") || !header["alg"].is_string()) return fail("malformed token (no alg)");
  const std::string alg_name = header["alg"].get<std::string>();
  if (alg_name == "none" || alg_name == "None" || alg_name == "NONE") return fail("alg none is not accepted");
  const auto alg = parse_alg(alg_name);
  if (!alg) return fail("unsupported alg");
  if (header.contains("crit")) return fail("unsupported crit header");
  std::string kid;
  if (header.contains("kid")) {
    if (!header["kid"].is_string()) return fail("malformed token (kid)");
    kid = header["kid"].get<std::string>();
  }
  const JwkSet::Key* key = keys.find(kid);
  if (key == nullptr) return fail(kid.empty() ? "token has no kid" : "unknown kid");
  if (key->alg != *alg) return fail("alg does not match the key");

  bool valid = false;
  switch (key->alg) {
    case JwtAlg::kRS256:
      valid = verify_digest(key->pkey.get(), signed_part, *signature);
      break;
    case JwtAlg::kES256:
      valid = signature->size() == 64 &&
              verify_digest(key->pkey.get(), signed_part, ecdsa_raw_to_der(*signature));
      break;
    case JwtAlg::kHS256:
      valid = verify_hmac(key->secret, signed_part, *signature);
      break;
  }
  if (!valid) return fail("bad signature");

  // Only a token signed by a trusted key gets this far.
  const nlohmann::json claims = nlohmann::json::parse(*payload_bytes, nullptr, false);
  if (claims.is_discarded() || !claims.is_object()) return fail("malformed token (claims)");
  const double t = static_cast<double>(now);
  const double leeway = static_cast<double>(options.leeway_s);
  if (!claims.contains("exp")) return fail("token has no exp");
  if (!claims["exp"].is_number()) return fail("malformed token (exp)");
  if (t >= claims["exp"].get<double>() + leeway) return fail("token expired");
  if (claims.contains("nbf")) {
    if (!claims["nbf"].is_number()) return fail("malformed token (nbf)");
    if (t + leeway < claims["nbf"].get<double>()) return fail("token not yet valid (nbf)");
  }
  if (claims.contains("iat")) {
    if (!claims["iat"].is_number()) return fail("malformed token (iat)");
    if (t + leeway < claims["iat"].get<double>()) return fail("token issued in the future (iat)");
  }
  if (!options.issuer.empty()) {
    if (!claims.contains("iss") || !claims["iss"].is_string() || claims["iss"] != options.issuer)
      return fail("wrong issuer");
  }
  if (!options.audience.empty()) {
    bool match = false;
    if (claims.contains("aud")) {
      const auto& aud = claims["aud"];
      if (aud.is_string()) match = aud == options.audience;
      if (aud.is_array()) {
        for (const auto& a : aud) match = match || (a.is_string() && a == options.audience);
      }
    }
    if (!match) return fail("wrong audience");
  }
  if (!claims.contains("sub") || !claims["sub"].is_string() ||
      claims["sub"].get_ref<const std::string&>().empty())
    return fail("token has no sub");
  const std::string& sub = claims["sub"].get_ref<const std::string&>();
  if (sub.size() > 256) return fail("sub is too long");
  return {sub, {}};
}

JwtVerifier::JwtVerifier(std::filesystem::path jwks_file, JwtOptions options)
    : path_(std::move(jwks_file)), options_(std::move(options)) {
  loaded_ = stamp();
  keys_ = JwkSet::load(path_);
  last_check_ms_ = steady_ms();
}

std::optional<JwtVerifier::FileStamp> JwtVerifier::stamp() const {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) return std::nullopt;
  return FileStamp{static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec,
                   static_cast<int64_t>(st.st_size), static_cast<uint64_t>(st.st_ino)};
}

bool JwtVerifier::reload() {
  std::lock_guard reload_lock(reload_mutex_);
  // The stamp is taken before the read: a write racing with the read is seen again by the next check.
  const auto st = stamp();
  try {
    auto keys = JwkSet::load(path_);
    const auto kids = keys->kids();
    {
      std::lock_guard lock(mutex_);
      keys_ = std::move(keys);
      loaded_ = st;
    }
    spdlog::info("JWKS {} reloaded: {} key(s), kid {}", path_.string(), kids.size(), fmt::join(kids, ", "));
    return true;
  } catch (const std::exception& e) {
    std::lock_guard lock(mutex_);
    loaded_ = st;  // not tried again until the file changes once more
    spdlog::error("JWKS reload failed; keeping the {} key(s) loaded before: {}", keys_->size(), e.what());
    return false;
  }
}

void JwtVerifier::reload_if_changed() {
  const int64_t now = steady_ms();
  int64_t last = last_check_ms_.load();
  if (now - last < 1000 || !last_check_ms_.compare_exchange_strong(last, now)) return;
  const auto st = stamp();
  {
    std::lock_guard lock(mutex_);
    if (st == loaded_) return;
  }
  (void)reload();
}

std::shared_ptr<const JwkSet> JwtVerifier::keys() const {
  std::lock_guard lock(mutex_);
  return keys_;
}

JwtResult JwtVerifier::verify(std::string_view token) {
  reload_if_changed();
  const auto keys = this->keys();
  const int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  return verify_jwt(*keys, token, options_, now);
}

}  // namespace ds::server
