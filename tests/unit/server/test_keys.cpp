#include "test_keys.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

#include "server/jwt.h"

namespace ds::server::testing {
namespace {

std::shared_ptr<EVP_PKEY> own(EVP_PKEY* p) {
  if (p == nullptr) throw std::runtime_error("key generation failed");
  return std::shared_ptr<EVP_PKEY>(p, EVP_PKEY_free);
}

std::string bn_param(EVP_PKEY* pkey, const char* name, int pad = 0) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, name, &bn) != 1) throw std::runtime_error(std::string("no ") + name);
  std::string out(pad > 0 ? static_cast<size_t>(pad) : static_cast<size_t>(BN_num_bytes(bn)), '\0');
  if (pad > 0) {
    BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), pad);
  } else {
    BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
  }
  BN_free(bn);
  return out;
}

}  // namespace

TestKey rsa_key(std::string kid, int bits) {
  TestKey k;
  k.kid = std::move(kid);
  k.alg = "RS256";
  k.pkey = own(EVP_RSA_gen(static_cast<unsigned>(bits)));
  return k;
}

TestKey ec_key(std::string kid) {
  TestKey k;
  k.kid = std::move(kid);
  k.alg = "ES256";
  k.pkey = own(EVP_EC_gen("P-256"));
  return k;
}

TestKey hmac_key(std::string kid) {
  TestKey k;
  k.kid = std::move(kid);
  k.alg = "HS256";
  k.secret.resize(32);
  RAND_bytes(reinterpret_cast<unsigned char*>(k.secret.data()), 32);
  return k;
}

nlohmann::json TestKey::jwk(bool with_alg) const {
  nlohmann::json j;
  if (alg == "RS256") {
    j = {{"kty", "RSA"},
         {"n", base64url_encode(bn_param(pkey.get(), OSSL_PKEY_PARAM_RSA_N))},
         {"e", base64url_encode(bn_param(pkey.get(), OSSL_PKEY_PARAM_RSA_E))}};
  } else if (alg == "ES256") {
    j = {{"kty", "EC"},
         {"crv", "P-256"},
         {"x", base64url_encode(bn_param(pkey.get(), OSSL_PKEY_PARAM_EC_PUB_X, 32))},
         {"y", base64url_encode(bn_param(pkey.get(), OSSL_PKEY_PARAM_EC_PUB_Y, 32))}};
  } else {
    j = {{"kty", "oct"}, {"k", base64url_encode(secret)}};
  }
  if (!kid.empty()) j["kid"] = kid;
  if (with_alg) j["alg"] = alg;
  j["use"] = "sig";
  return j;
}

std::string TestKey::signature(std::string_view data) const {
  if (alg == "HS256") {
    unsigned char mac[32];
    size_t len = 0;
    EVP_Q_mac(nullptr, "HMAC", nullptr, "SHA256", nullptr, secret.data(), secret.size(),
              reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, sizeof(mac), &len);
    return std::string(reinterpret_cast<char*>(mac), len);
  }
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  size_t len = 0;
  if (EVP_DigestSignInit_ex(md, nullptr, "SHA256", nullptr, nullptr, pkey.get(), nullptr) != 1 ||
      EVP_DigestSign(md, nullptr, &len, reinterpret_cast<const unsigned char*>(data.data()), data.size()) !=
          1)
    throw std::runtime_error("sign failed");
  std::string sig(len, '\0');
  if (EVP_DigestSign(md, reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1)
    throw std::runtime_error("sign failed");
  EVP_MD_CTX_free(md);
  sig.resize(len);
  if (alg != "ES256") return sig;
  // DER ECDSA-Sig-Value -> r || s.
  const unsigned char* p = reinterpret_cast<const unsigned char*>(sig.data());
  ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
  std::string raw(64, '\0');
  BN_bn2binpad(ECDSA_SIG_get0_r(es), reinterpret_cast<unsigned char*>(raw.data()), 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(es), reinterpret_cast<unsigned char*>(raw.data()) + 32, 32);
  ECDSA_SIG_free(es);
  return raw;
}

std::string b64json(const nlohmann::json& j) {
  return base64url_encode(j.dump());
}

std::string TestKey::sign(const nlohmann::json& claims, nlohmann::json header) const {
  if (!header.contains("alg")) header["alg"] = alg;
  if (!header.contains("kid")) header["kid"] = kid;
  if (header["kid"].is_null()) header.erase("kid");
  header["typ"] = "JWT";
  const std::string signing_input = b64json(header) + "." + b64json(claims);
  return signing_input + "." + base64url_encode(signature(signing_input));
}

nlohmann::json jwks(const std::vector<const TestKey*>& keys) {
  nlohmann::json list = nlohmann::json::array();
  for (const TestKey* k : keys) list.push_back(k->jwk());
  return {{"keys", list}};
}

void write_file_atomically(const std::filesystem::path& path, const std::string& text) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  std::ofstream(tmp, std::ios::binary | std::ios::trunc) << text;
  std::filesystem::rename(tmp, path);
}

int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

nlohmann::json claims_for(const std::string& user) {
  return {{"sub", user}, {"exp", now_s() + 3600}, {"iat", now_s()}};
}

bool make_self_signed_cert(const std::filesystem::path& cert, const std::filesystem::path& key,
                           const std::string& common_name) {
  const std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -keyout '" +
      key.string() + "' -out '" + cert.string() + "' -subj '/CN=" + common_name +
      "' -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0 && std::filesystem::exists(cert) && std::filesystem::exists(key);
}

std::filesystem::path temp_dir(const std::string& name) {
  static int counter = 0;
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      ("deepserve_" + name + "_" + std::to_string(::getpid()) + "_" + std::to_string(++counter));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace ds::server::testing
