// JWT: the JWKS parser, token verification (every 401 row of RELIABILITY.md "Auth and transport"), Auth's
// API key + JWT dispatch, and through the real server: 401 bodies, the user in the access log, and key
// rotation (reload with a stream running; SIGHUP to a real `deepserve serve`). Keys are generated here.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "server/auth.h"
#include "server/jwt.h"
#include "../run_command.h"
#include "server_harness.h"
#include "test_keys.h"
#include "util/check.h"

extern char** environ;

namespace ds::server {
namespace {

using nlohmann::json;
using testing::claims_for;
using testing::Connection;
using testing::now_s;
using testing::request_text;
using testing::wait_for;
using testing::TestKey;

// Generated once per process (RSA key generation takes a moment).
const TestKey& rsa_a() {
  static const TestKey k = testing::rsa_key("rsa-a");
  return k;
}
const TestKey& rsa_b() {
  static const TestKey k = testing::rsa_key("rsa-b");
  return k;
}
const TestKey& ec_a() {
  static const TestKey k = testing::ec_key("ec-a");
  return k;
}
const TestKey& hmac_a() {
  static const TestKey k = testing::hmac_key("hs-a");
  return k;
}

std::shared_ptr<const JwkSet> all_keys() {
  return JwkSet::parse(testing::jwks({&rsa_a(), &ec_a(), &hmac_a()}).dump());
}

JwtResult check(const JwkSet& keys, const std::string& token, JwtOptions options = {}) {
  return verify_jwt(keys, token, options, now_s());
}

// ---- base64url ----

TEST(Base64UrlTest, RoundTripsAndRefusesWhatIsNotBase64Url) {
  for (const std::string s : {"", "f", "fo", "foo", "foob", "fooba", "foobar", "\xff\xfe\x00\x01"}) {
    EXPECT_EQ(base64url_decode(base64url_encode(s)), s);
  }
  EXPECT_EQ(base64url_encode("\xfb\xff"), "-_8");
  EXPECT_EQ(base64url_decode("Zm9vYg=="), std::nullopt);  // padding
  EXPECT_EQ(base64url_decode("Zm9v+g"), std::nullopt);    // base64, not base64url
  EXPECT_EQ(base64url_decode("Z"), std::nullopt);         // impossible length
  EXPECT_EQ(base64url_decode("Zh"), std::nullopt);        // non-zero leftover bits
}

// ---- JWKS ----

TEST(JwkSetTest, ParsesEveryKeyTypeAndPinsTheAlgorithm) {
  const auto keys = all_keys();
  EXPECT_EQ(keys->size(), 3u);
  EXPECT_EQ(keys->kids(), (std::vector<std::string>{"rsa-a", "ec-a", "hs-a"}));
  // Without "alg" the key type decides: RSA -> RS256, EC -> ES256, oct -> HS256.
  const json no_alg = {{"keys", {rsa_a().jwk(false), ec_a().jwk(false), hmac_a().jwk(false)}}};
  const auto pinned = JwkSet::parse(no_alg.dump());
  EXPECT_EQ(check(*pinned, rsa_a().sign(claims_for("u"))).user, "u");
  EXPECT_EQ(check(*pinned, ec_a().sign(claims_for("u"))).user, "u");
  EXPECT_EQ(check(*pinned, hmac_a().sign(claims_for("u"))).user, "u");
  // A single JWK (not wrapped in a set) is a set of one.
  EXPECT_EQ(JwkSet::parse(ec_a().jwk().dump())->size(), 1u);
}

TEST(JwkSetTest, RefusesBrokenSetsAndSkipsForeignKeys) {
  auto refused = [](const json& doc, const std::string& needle) {
    try {
      (void)JwkSet::parse(doc.dump());
      ADD_FAILURE() << "accepted: " << doc.dump();
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  EXPECT_THROW((void)JwkSet::parse("{not json"), InvalidArgument);
  refused(json::array(), "not a JSON object");
  refused({{"keys", 1}}, "not an array");
  refused({{"keys", json::array()}}, "no usable key");
  json dup = testing::jwks({&rsa_a(), &rsa_a()});
  refused(dup, "two keys have the kid 'rsa-a'");
  json mismatch = rsa_a().jwk();
  mismatch["alg"] = "ES256";
  refused({{"keys", {mismatch}}}, "does not fit");
  json bad_b64 = ec_a().jwk();
  bad_b64["x"] = "not base64url!";
  refused({{"keys", {bad_b64}}}, "\"x\" is not base64url");
  json off_curve = ec_a().jwk();
  off_curve["y"] = off_curve["x"];
  refused({{"keys", {off_curve}}}, "not a valid P-256 public key");
  json other_curve = ec_a().jwk();
  other_curve["crv"] = "P-384";
  refused({{"keys", {other_curve}}}, "P-256 only");
  json short_secret = hmac_a().jwk();
  short_secret["k"] = testing::b64json("short");
  refused({{"keys", {short_secret}}}, "at least 32");
  const TestKey small = testing::rsa_key("small", 1024);
  refused({{"keys", {small.jwk()}}}, "at least 2048");
  // The messages name the key, never its material.
  try {
    json bad = hmac_a().jwk();
    bad["alg"] = "RS256";
    (void)JwkSet::parse(json{{"keys", {bad}}}.dump());
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()).find(hmac_a().jwk()["k"].get<std::string>()), std::string::npos);
  }

  // An identity provider's set may hold encryption keys and other algorithms: they are skipped.
  json enc = rsa_b().jwk();
  enc["use"] = "enc";
  json rs384 = rsa_b().jwk();
  rs384["kid"] = "rs384";
  rs384["alg"] = "RS384";
  json okp = {{"kty", "OKP"}, {"crv", "Ed25519"}, {"x", "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}};
  const auto keys = JwkSet::parse(json{{"keys", {enc, rs384, okp, ec_a().jwk()}}}.dump());
  EXPECT_EQ(keys->kids(), std::vector<std::string>{"ec-a"});
}

// ---- Tokens: the 401 rows. ----

TEST(JwtTest, ValidTokensOfEveryAlgorithm) {
  const auto keys = all_keys();
  for (const TestKey* k : {&rsa_a(), &ec_a(), &hmac_a()}) {
    const JwtResult r = check(*keys, k->sign(claims_for("alice")));
    EXPECT_EQ(r.user, "alice") << k->alg << ": " << r.error;
  }
}

TEST(JwtTest, AlgNoneIsRefused) {
  const auto keys = all_keys();
  for (const char* none : {"none", "None", "NONE"}) {
    const std::string token =
        testing::b64json({{"alg", none}, {"kid", "rsa-a"}}) + "." + testing::b64json(claims_for("eve")) + ".";
    const JwtResult r = check(*keys, token);
    EXPECT_FALSE(r.user);
    EXPECT_EQ(r.error, "alg none is not accepted");
  }
}

TEST(JwtTest, AnAlgorithmOtherThanTheKeysIsRefused) {
  const auto keys = all_keys();
  // The classic confusion: HS256 "signed" with the RSA public key's bytes, naming the RSA key.
  TestKey forged = testing::hmac_key("rsa-a");
  forged.secret = rsa_a().jwk().dump();
  EXPECT_EQ(check(*keys, forged.sign(claims_for("eve"))).error, "alg does not match the key");
  // RS256 naming the EC key, ES256 naming the HMAC key: refused before any signature check.
  EXPECT_EQ(check(*keys, rsa_a().sign(claims_for("eve"), {{"kid", "ec-a"}})).error,
            "alg does not match the key");
  EXPECT_EQ(check(*keys, ec_a().sign(claims_for("eve"), {{"kid", "hs-a"}})).error,
            "alg does not match the key");
  // Algorithms outside the three.
  EXPECT_EQ(check(*keys, rsa_a().sign(claims_for("eve"), {{"alg", "RS512"}})).error, "unsupported alg");
  EXPECT_EQ(check(*keys, rsa_a().sign(claims_for("eve"), {{"alg", "PS256"}})).error, "unsupported alg");
}

TEST(JwtTest, BadSignatureIsRefused) {
  const auto keys = all_keys();
  for (const TestKey* k : {&rsa_a(), &ec_a(), &hmac_a()}) {
    std::string token = k->sign(claims_for("alice"));
    // Another key of the same kind, under the trusted kid.
    TestKey impostor = k->alg == "RS256"   ? testing::rsa_key(k->kid)
                       : k->alg == "ES256" ? testing::ec_key(k->kid)
                                           : testing::hmac_key(k->kid);
    EXPECT_EQ(check(*keys, impostor.sign(claims_for("alice"))).error, "bad signature") << k->alg;
    // One signature bit flipped.
    std::string sig = *base64url_decode(token.substr(token.rfind('.') + 1));
    sig[sig.size() / 2] ^= 0x01;
    const std::string flipped = token.substr(0, token.rfind('.') + 1) + base64url_encode(sig);
    EXPECT_EQ(check(*keys, flipped).error, "bad signature") << k->alg;
    // The claims changed after signing.
    const std::string tampered = token.substr(0, token.find('.') + 1) +
                                 testing::b64json(claims_for("mallory")) + token.substr(token.rfind('.'));
    EXPECT_EQ(check(*keys, tampered).error, "bad signature") << k->alg;
    // No signature at all.
    EXPECT_EQ(check(*keys, token.substr(0, token.rfind('.') + 1)).error, "bad signature") << k->alg;
  }
  // ES256 wants raw r||s (64 bytes): a DER signature is refused.
  const std::string t = ec_a().sign(claims_for("alice"));
  const std::string input = t.substr(0, t.rfind('.'));
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  size_t len = 0;
  ASSERT_EQ(EVP_DigestSignInit_ex(md, nullptr, "SHA256", nullptr, nullptr, ec_a().pkey.get(), nullptr), 1);
  std::string der(128, '\0');
  len = der.size();
  ASSERT_EQ(EVP_DigestSign(md, reinterpret_cast<unsigned char*>(der.data()), &len,
                           reinterpret_cast<const unsigned char*>(input.data()), input.size()),
            1);
  EVP_MD_CTX_free(md);
  der.resize(len);
  EXPECT_EQ(check(*keys, input + "." + base64url_encode(der)).error, "bad signature");
}

TEST(JwtTest, ExpiryAndNotBeforeWithLeeway) {
  const auto keys = all_keys();
  const int64_t now = now_s();
  auto with = [&](json extra) {
    json c = {{"sub", "alice"}, {"exp", now + 3600}};
    c.update(extra);
    return check(*keys, rsa_a().sign(c));
  };
  EXPECT_EQ(with({{"exp", now - 120}}).error, "token expired");
  EXPECT_EQ(with({{"exp", now - 30}}).user, "alice");    // within the 60 s leeway
  EXPECT_EQ(with({{"exp", now - 30.5}}).user, "alice");  // NumericDate may have a fraction
  EXPECT_EQ(with({{"nbf", now + 120}}).error, "token not yet valid (nbf)");
  EXPECT_EQ(with({{"nbf", now + 30}}).user, "alice");
  EXPECT_EQ(with({{"iat", now + 600}}).error, "token issued in the future (iat)");
  EXPECT_EQ(with({{"exp", "tomorrow"}}).error, "malformed token (exp)");
  EXPECT_EQ(check(*keys, rsa_a().sign({{"sub", "alice"}})).error, "token has no exp");
  // No leeway.
  JwtOptions strict;
  strict.leeway_s = 0;
  EXPECT_EQ(verify_jwt(*keys, rsa_a().sign({{"sub", "a"}, {"exp", now - 1}}), strict, now).error,
            "token expired");
}

TEST(JwtTest, IssuerAndAudienceWhenConfigured) {
  const auto keys = all_keys();
  JwtOptions o;
  o.issuer = "https://idp.example";
  o.audience = "deepserve";
  json c = claims_for("alice");
  auto with = [&](json extra) {
    json claims = c;
    claims.update(extra);
    return check(*keys, ec_a().sign(claims), o);
  };
  EXPECT_EQ(with({{"iss", "https://idp.example"}, {"aud", "deepserve"}}).user, "alice");
  EXPECT_EQ(with({{"iss", "https://idp.example"}, {"aud", {"other", "deepserve"}}}).user, "alice");
  EXPECT_EQ(with({{"iss", "https://evil.example"}, {"aud", "deepserve"}}).error, "wrong issuer");
  EXPECT_EQ(with({{"aud", "deepserve"}}).error, "wrong issuer");
  EXPECT_EQ(with({{"iss", "https://idp.example"}, {"aud", "other"}}).error, "wrong audience");
  EXPECT_EQ(with({{"iss", "https://idp.example"}, {"aud", {"a", "b"}}}).error, "wrong audience");
  EXPECT_EQ(with({{"iss", "https://idp.example"}}).error, "wrong audience");
  // Not configured: not checked.
  EXPECT_EQ(check(*keys, ec_a().sign(claims_for("alice"))).user, "alice");
}

TEST(JwtTest, KidSelectsTheKey) {
  const auto keys = all_keys();
  EXPECT_EQ(check(*keys, rsa_b().sign(claims_for("alice"))).error, "unknown kid");
  // Several keys: a token must name one.
  EXPECT_EQ(check(*keys, rsa_a().sign(claims_for("alice"), {{"kid", nullptr}})).error, "token has no kid");
  // A single key: a token without kid uses it; one naming another kid does not.
  const auto one = JwkSet::parse(testing::jwks({&rsa_a()}).dump());
  EXPECT_EQ(check(*one, rsa_a().sign(claims_for("alice"), {{"kid", nullptr}})).user, "alice");
  EXPECT_EQ(check(*one, rsa_a().sign(claims_for("alice"), {{"kid", "rsa-b"}})).error, "unknown kid");
}

TEST(JwtTest, MalformedTokensAreRefusedNotCrashedOn) {
  const auto keys = all_keys();
  const std::string good = hmac_a().sign(claims_for("alice"));
  const std::string header = good.substr(0, good.find('.'));
  for (const std::string& token :
       {std::string(""), std::string("."), std::string(".."), std::string("..."), std::string("a.b.c"),
        good + ".x", "!!!" + good.substr(3), header + ".e30.@@@", testing::b64json("[]") + ".e30.",
        base64url_encode("{\"alg\":") + ".e30.", testing::b64json({{"kid", "hs-a"}}) + ".e30.",
        testing::b64json({{"alg", 256}}) + ".e30.",
        testing::b64json({{"alg", "HS256"}, {"kid", 7}}) + ".e30."}) {
    const JwtResult r = check(*keys, token);
    EXPECT_FALSE(r.user) << token;
    EXPECT_FALSE(r.error.empty()) << token;
  }
  // Signed but not a JSON object inside: refused after the signature.
  TestKey k = hmac_a();
  const std::string input =
      testing::b64json({{"alg", "HS256"}, {"kid", "hs-a"}}) + "." + base64url_encode("[1]");
  EXPECT_EQ(check(*keys, input + "." + base64url_encode(k.signature(input))).error,
            "malformed token (claims)");
  EXPECT_EQ(check(*keys, hmac_a().sign({{"exp", now_s() + 60}})).error, "token has no sub");
  EXPECT_EQ(check(*keys, hmac_a().sign({{"sub", 5}, {"exp", now_s() + 60}})).error, "token has no sub");
  EXPECT_EQ(check(*keys, hmac_a().sign(claims_for("alice"), {{"crit", {"exp"}}})).error,
            "unsupported crit header");
}

// ---- Auth: API keys and JWT together. ----

TEST(AuthTest, BearerTokensGoToJwtOrApiKeys) {
  const auto dir = testing::temp_dir("auth");
  std::ofstream(dir / "jwks.json") << testing::jwks({&rsa_a()}).dump();
  std::ofstream(dir / "keys.txt") << "carol sk-carol\ndave sk.with.dots\n";
  AuthOptions o;
  o.api_keys = {"sk-first"};
  o.api_key_file = dir / "keys.txt";
  o.jwks_file = dir / "jwks.json";
  Auth auth(o);
  EXPECT_TRUE(auth.enabled());
  EXPECT_EQ(auth.authenticate("Bearer " + rsa_a().sign(claims_for("alice"))).user, "alice");
  EXPECT_EQ(auth.authenticate("Bearer sk-first").user, "key-1");
  EXPECT_EQ(auth.authenticate("Bearer sk-carol").user, "carol");
  EXPECT_EQ(auth.authenticate("Bearer sk.with.dots").user, "dave");  // two dots, not a JWT: still a key
  const AuthResult bad = auth.authenticate("Bearer " + rsa_b().sign(claims_for("alice")));
  EXPECT_FALSE(bad.user);
  EXPECT_EQ(bad.error, "invalid token: unknown kid");
  EXPECT_EQ(bad.code, "invalid_token");
  EXPECT_FALSE(auth.authenticate("Bearer sk-nobody").user);
  EXPECT_FALSE(auth.authenticate("").user);
  EXPECT_FALSE(auth.authenticate("Basic c2stZmlyc3Q=").user);

  // A key file that loses every key on reload keeps the old keys (and reload says it failed).
  std::ofstream(dir / "keys.txt", std::ios::trunc) << "# nothing\n";
  EXPECT_FALSE(auth.reload());
  EXPECT_EQ(auth.authenticate("Bearer sk-carol").user, "carol");
  std::ofstream(dir / "keys.txt", std::ios::trunc) << "erin sk-erin\n";
  EXPECT_TRUE(auth.reload());
  EXPECT_EQ(auth.authenticate("Bearer sk-erin").user, "erin");
  EXPECT_FALSE(auth.authenticate("Bearer sk-carol").user);        // revoked
  EXPECT_EQ(auth.authenticate("Bearer sk-first").user, "key-1");  // --api-key stays

  // At start, an empty key file or a broken JWKS is an error naming the file.
  std::ofstream(dir / "empty.txt") << "\n";
  AuthOptions empty;
  empty.api_key_file = dir / "empty.txt";
  EXPECT_THROW(Auth{empty}, InvalidArgument);
  std::ofstream(dir / "broken.json") << "{\"keys\": [{\"kty\": \"RSA\"}]}";
  AuthOptions broken;
  broken.jwks_file = dir / "broken.json";
  try {
    Auth a(broken);
    ADD_FAILURE() << "a broken JWKS was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("broken.json"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(JwtVerifierTest, ReloadsOnChangeAndKeepsTheOldSetWhenTheNewOneIsBroken) {
  const auto dir = testing::temp_dir("jwks");
  const auto path = dir / "jwks.json";
  testing::write_file_atomically(path, testing::jwks({&rsa_a()}).dump());
  JwtVerifier v(path, {});
  const std::string token_a = rsa_a().sign(claims_for("alice"));
  const std::string token_b = rsa_b().sign(claims_for("bob"));
  EXPECT_EQ(v.verify(token_a).user, "alice");
  EXPECT_EQ(v.verify(token_b).error, "unknown kid");
  // A rewrite is picked up on use without a signal (the file is looked at once a second at most).
  testing::write_file_atomically(path, testing::jwks({&rsa_a(), &rsa_b()}).dump());
  EXPECT_TRUE(wait_for([&] { return v.verify(token_b).user == "bob"; }, std::chrono::seconds(5)));
  // A broken file is refused; the set before it stays.
  testing::write_file_atomically(path, "{\"keys\": [");
  EXPECT_FALSE(v.reload());
  EXPECT_EQ(v.verify(token_a).user, "alice");
  EXPECT_EQ(v.verify(token_b).user, "bob");
  std::filesystem::remove(path);
  EXPECT_FALSE(v.reload());
  EXPECT_EQ(v.verify(token_b).user, "bob");
  std::filesystem::remove_all(dir);
}

// ---- Through the server. ----

json long_request(bool stream, int max_tokens = 200) {
  return {{"prompt", {1, 2, 3, 4}},
          {"max_tokens", max_tokens},
          {"temperature", 0},
          {"ignore_eos", true},
          {"stream", stream}};
}

std::string bearer(const std::string& token) {
  return "Authorization: Bearer " + token;
}

class JwtServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("jwt_server");
    jwks_ = dir_ / "jwks.json";
    testing::write_file_atomically(jwks_, testing::jwks({&rsa_a(), &ec_a(), &hmac_a()}).dump());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::shared_ptr<Auth> auth(std::vector<std::string> api_keys = {}) {
    AuthOptions o;
    o.jwks_file = jwks_;
    o.jwt.issuer = "https://idp.example";
    o.jwt.audience = "deepserve";
    o.api_keys = std::move(api_keys);
    return std::make_shared<Auth>(o);
  }
  static json claims(const std::string& user) {
    json c = claims_for(user);
    c["iss"] = "https://idp.example";
    c["aud"] = json::array({"deepserve"});
    return c;
  }

  std::filesystem::path dir_;
  std::filesystem::path jwks_;
};

TEST_F(JwtServerTest, EveryRefusedTokenIs401WithAShortReason) {
  testing::HarnessOptions o;
  o.auth = auth();
  o.access_log = (dir_ / "access.jsonl").string();
  const int64_t now = now_s();
  json expired = claims("alice"), early = claims("alice"), wrong_iss = claims("alice"),
       wrong_aud = claims("alice");
  expired["exp"] = now - 3600;
  early["nbf"] = now + 3600;
  wrong_iss["iss"] = "https://evil.example";
  wrong_aud["aud"] = "someone-else";
  TestKey forged = testing::hmac_key("rsa-a");
  forged.secret = rsa_a().jwk().dump();
  const std::string good = rsa_a().sign(claims("alice"));
  std::string bad_sig = good;
  bad_sig[bad_sig.size() - 5] = bad_sig[bad_sig.size() - 5] == 'A' ? 'B' : 'A';
  const std::vector<std::pair<std::string, std::string>> cases = {
      {testing::b64json({{"alg", "none"}, {"kid", "rsa-a"}}) + "." + testing::b64json(claims("alice")) + ".",
       "alg none is not accepted"},
      {forged.sign(claims("alice")), "alg does not match the key"},
      {bad_sig, "bad signature"},
      {rsa_a().sign(expired), "token expired"},
      {ec_a().sign(early), "token not yet valid (nbf)"},
      {hmac_a().sign(wrong_iss), "wrong issuer"},
      {rsa_a().sign(wrong_aud), "wrong audience"},
      {rsa_b().sign(claims("alice")), "unknown kid"},
      {"not-a-jwt", "malformed token"},
      {"e30.e30.@", "malformed token"},
  };
  {
    testing::ServerHarness h(o);
    for (const auto& [token, reason] : cases) {
      const auto r = testing::http(h.port(), "GET", "/v1/models", "", {bearer(token)});
      EXPECT_EQ(r.status, 401) << reason;
      ASSERT_NO_THROW((void)r.json()) << r.body;
      EXPECT_EQ(r.json()["error"]["type"], "authentication_error") << reason;
      EXPECT_EQ(r.json()["error"]["message"].get<std::string>().rfind("invalid token: " + reason, 0), 0u)
          << r.body;
      EXPECT_EQ(r.header("www-authenticate"), "Bearer");
    }
    const auto missing = testing::http(h.port(), "GET", "/v1/models");
    EXPECT_EQ(missing.status, 401);
    EXPECT_EQ(missing.json()["error"]["type"], "authentication_error");
    // Valid tokens of each algorithm; the user is `sub`.
    for (const TestKey* k : {&rsa_a(), &ec_a(), &hmac_a()}) {
      const auto r = testing::http(h.port(), "GET", "/v1/models", "", {bearer(k->sign(claims("alice")))});
      EXPECT_EQ(r.status, 200) << k->alg << " " << r.body;
    }
    const auto done =
        testing::post_json(h.port(), "/v1/completions", long_request(false, 2),
                           {bearer(ec_a().sign(claims("bob@example.com"))), "X-Request-Id: jwt-1"});
    EXPECT_EQ(done.status, 200);
    for (int i = 0; i < 400 && h.server().num_answering() > 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::ifstream in(o.access_log);
  std::string line;
  bool found = false;
  while (std::getline(in, line)) {
    const json entry = json::parse(line);
    if (entry["request_id"] != "jwt-1") continue;
    found = true;
    EXPECT_EQ(entry["user"], "bob@example.com");
  }
  EXPECT_TRUE(found);
}

TEST_F(JwtServerTest, OnlyHealthAndVersionAreOpenWhateverTheTrick) {
  testing::HarnessOptions o;
  o.auth = auth({"sk-key"});
  testing::ServerHarness h(o);
  EXPECT_EQ(testing::http(h.port(), "GET", "/health").status, 200);
  EXPECT_EQ(testing::http(h.port(), "GET", "/health?x=1").status, 200);
  EXPECT_EQ(testing::http(h.port(), "GET", "/version").status, 200);
  for (const std::string path :
       {"/v1/models", "//v1/models", "/v1/models?x", "/v1/models/", "/health/../v1/models", "/v1//models",
        "/V1/MODELS", "/%761/models", "/metrics", "/nope", "/health/"}) {
    for (const std::vector<std::string>& headers : {std::vector<std::string>{},
                                                    {"X-Forwarded-For: 127.0.0.1"},
                                                    {"X-Original-URL: /health"},
                                                    {"X-Forwarded-Host: localhost"},
                                                    {"Authorization: Bearer "},
                                                    {"Authorization: Basic c2sta2V5"}}) {
      const auto r = testing::http(h.port(), "GET", path, "", headers);
      EXPECT_EQ(r.status, 401) << path << " " << (headers.empty() ? "" : headers[0]);
    }
  }
  // Another Host header: the same.
  {
    Connection c(h.port());
    c.send("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(c.read_reply().status, 401);
  }
  {
    Connection c(h.port());
    c.send("GET http://localhost/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(c.read_reply().status, 401);  // an absolute-form target is no route: it needs credentials
  }
  EXPECT_EQ(testing::http(h.port(), "POST", "/v1/completions", long_request(false, 1).dump()).status, 401);
  // With credentials: the same paths are what they are.
  EXPECT_EQ(testing::http(h.port(), "GET", "/v1/models?x", "", {"Authorization: Bearer sk-key"}).status, 200);
  EXPECT_EQ(testing::http(h.port(), "GET", "//v1/models", "", {"Authorization: Bearer sk-key"}).status, 404);
  EXPECT_EQ(testing::http(h.port(), "GET", "/v1/models", "", {bearer(rsa_a().sign(claims("a")))}).status,
            200);
}

// Rotation as the deployment guide does it: a stream runs on key A; the JWKS becomes A+B and is reloaded; B's
// tokens work, A's stream finishes untouched; then A is removed and its tokens are refused.
TEST_F(JwtServerTest, KeyRotationDropsNoStream) {
  testing::write_file_atomically(jwks_, testing::jwks({&rsa_a()}).dump());
  testing::HarnessOptions o;
  o.auth = auth();
  o.start_engine = false;  // the test steps the engine: the stream is certainly running during the reload
  testing::ServerHarness h(o);
  const std::string token_a = rsa_a().sign(claims("alice"));
  const std::string token_b = rsa_b().sign(claims("bob"));

  Connection stream(h.port());
  stream.send(request_text("POST", "/v1/completions", long_request(true, 40).dump(), {bearer(token_a)}));
  ASSERT_TRUE(wait_for([&] { return h.engine().has_work(); }));
  for (int i = 0; i < 3; ++i) (void)h.engine().step();
  ASSERT_NE(stream.read_until("data: ").find("data: "), std::string::npos);
  EXPECT_EQ(testing::http(h.port(), "GET", "/v1/models", "", {bearer(token_b)}).status, 401);

  testing::write_file_atomically(jwks_, testing::jwks({&rsa_a(), &rsa_b()}).dump());
  ASSERT_TRUE(h.server().reload());
  EXPECT_EQ(testing::http(h.port(), "GET", "/v1/models", "", {bearer(token_b)}).status, 200);
  EXPECT_EQ(testing::http(h.port(), "GET", "/v1/models", "", {bearer(token_a)}).status, 200);

  // The grace period ends: A is gone. Its stream is not cut.
  testing::write_file_atomically(jwks_, testing::jwks({&rsa_b()}).dump());
  ASSERT_TRUE(h.server().reload());
  const auto refused = testing::http(h.port(), "GET", "/v1/models", "", {bearer(token_a)});
  EXPECT_EQ(refused.status, 401);
  EXPECT_EQ(refused.json()["error"]["message"], "invalid token: unknown kid");
  EXPECT_EQ(testing::http(h.port(), "GET", "/v1/models", "", {bearer(token_b)}).status, 200);

  std::atomic<bool> stop{false};
  std::thread stepper([&] {
    while (!stop) {
      if (h.engine().has_work()) {
        (void)h.engine().step();
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  });
  const std::string all = stream.read_until("data: [DONE]");
  stop = true;
  stepper.join();
  EXPECT_NE(all.find("\"finish_reason\":\"length\""), std::string::npos) << all;
  EXPECT_EQ(all.find("\"finish_reason\":\"abort\""), std::string::npos);
  EXPECT_NE(all.find("data: [DONE]"), std::string::npos);
  // A broken JWKS on reload keeps B.
  testing::write_file_atomically(jwks_, "garbage");
  EXPECT_FALSE(h.server().reload());
  EXPECT_EQ(testing::http(h.port(), "GET", "/v1/models", "", {bearer(token_b)}).status, 200);
}

// SIGHUP to the real binary: the same rotation, with the engine running on its own.
TEST_F(JwtServerTest, SighupReloadsTheJwksOfARunningServer) {
  testing::write_file_atomically(jwks_, testing::jwks({&rsa_a()}).dump());
  const std::string log = (dir_ / "serve.log").string();
  const std::string model = std::string(DS_FIXTURES_DIR) + "/deepseek_v2_tiny_bf16";
  std::vector<std::string> args = {DS_BINARY,
                                   "serve",
                                   "--model",
                                   model,
                                   "--port",
                                   "0",
                                   "--threads",
                                   "1",
                                   "--max-num-seqs",
                                   "1",
                                   "--access-log",
                                   "",
                                   "--kv-cache-gib",
                                   "0.01",
                                   "--jwt-jwks-file",
                                   jwks_.string(),
                                   "--shutdown-timeout",
                                   "0"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, DS_BINARY, &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  auto read_log = [&] {
    std::ifstream in(log);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  uint16_t port = 0;
  const bool listening = wait_for(
      [&] {
        std::smatch m;
        const std::string s = read_log();
        if (!std::regex_search(s, m, std::regex("listening on http://127\\.0\\.0\\.1:(\\d+)"))) return false;
        port = static_cast<uint16_t>(std::stoi(m[1]));
        return true;
      },
      std::chrono::seconds(30));
  if (!listening) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    FAIL() << read_log();
  }
  const std::string token_a = rsa_a().sign(claims_for("alice"));
  const std::string token_b = rsa_b().sign(claims_for("bob"));
  // 16 samples of 240 tokens, one sequence per step: long enough to outlive both reloads (checked below).
  json req = long_request(true, 240);
  req["n"] = 16;
  Connection stream(port);
  stream.send(request_text("POST", "/v1/completions", req.dump(), {bearer(token_a)}));
  EXPECT_NE(stream.read_until("data: ").find("data: "), std::string::npos);
  EXPECT_EQ(testing::http(port, "GET", "/v1/models", "", {bearer(token_b)}).status, 401);

  testing::write_file_atomically(jwks_, testing::jwks({&rsa_a(), &rsa_b()}).dump());
  ASSERT_EQ(::kill(pid, SIGHUP), 0);
  EXPECT_TRUE(wait_for(
      [&] { return testing::http(port, "GET", "/v1/models", "", {bearer(token_b)}).status == 200; }));
  testing::write_file_atomically(jwks_, testing::jwks({&rsa_b()}).dump());
  ASSERT_EQ(::kill(pid, SIGHUP), 0);
  EXPECT_TRUE(wait_for(
      [&] { return testing::http(port, "GET", "/v1/models", "", {bearer(token_a)}).status == 401; }));
  // The stream of A was still running through both reloads.
  const std::string metrics = testing::http(port, "GET", "/metrics", "", {bearer(token_b)}).body;
  std::smatch running, waiting;
  ASSERT_TRUE(
      std::regex_search(metrics, running, std::regex("deepserve:num_requests_running\\{[^}]*\\} (\\d+)")));
  ASSERT_TRUE(
      std::regex_search(metrics, waiting, std::regex("deepserve:num_requests_waiting\\{[^}]*\\} (\\d+)")));
  EXPECT_GT(std::stoi(running[1]) + std::stoi(waiting[1]), 0) << metrics;

  const std::string rest = stream.read_until("data: [DONE]");
  int lengths = 0;
  for (size_t pos = 0; (pos = rest.find("\"finish_reason\":\"length\"", pos)) != std::string::npos; ++pos)
    ++lengths;
  EXPECT_EQ(lengths, 16) << rest.substr(0, 2000);
  EXPECT_EQ(rest.find("\"finish_reason\":\"abort\""), std::string::npos);
  EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), 0) << "SIGHUP must not stop the server";

  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const std::string text = read_log();
  EXPECT_NE(text.find("SIGHUP"), std::string::npos) << text;
  EXPECT_NE(text.find("reloaded"), std::string::npos) << text;
}

TEST(ServeCliTest, ABrokenJwksOrKeyFileStopsTheStartWithTheFileNamed) {
  const auto dir = testing::temp_dir("serve_cli");
  std::ofstream(dir / "bad.json") << "{\"keys\": 3}";
  std::ofstream(dir / "empty.txt") << "# none\n";
  for (const std::string& flags : {"--jwt-jwks-file " + (dir / "bad.json").string(),
                                   "--jwt-jwks-file " + (dir / "missing.json").string(),
                                   "--api-key-file " + (dir / "empty.txt").string()}) {
    const test_util::CommandRun r = test_util::run_deepserve("serve --port 0 " + flags);
    const std::string& out = r.output;
    EXPECT_GT(r.exit_code, 0) << flags << ": " << out;
    EXPECT_NE(out.find(flags.substr(flags.find(' ') + 1)), std::string::npos) << out;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ds::server
