#include "server/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <boost/asio/ssl/context.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "util/check.h"

namespace ds::server {
namespace {

namespace ssl = boost::asio::ssl;

// ALPN: this server speaks HTTP/1.1 only; a client offering only h2 gets no ALPN answer (and falls back).
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  static const unsigned char kHttp11[] = "\x08http/1.1";
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kHttp11, sizeof(kHttp11) - 1, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

void require_readable(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  DS_REQUIRE(in.good(), UserError, "{} {}: cannot read it ({})", flag, path, std::strerror(errno));
}

}  // namespace

std::shared_ptr<ssl::context> make_tls_context(const TlsConfig& config) {
  // Whatever happens, no OpenSSL error is left queued on this thread.
  struct ClearErrors {
    ~ClearErrors() { ERR_clear_error(); }
  } clear_errors;
  DS_REQUIRE(!config.certfile.empty() && !config.keyfile.empty(), UserError,
             "TLS needs both --ssl-certfile and --ssl-keyfile");
  DS_REQUIRE(config.min_version == 12 || config.min_version == 13, UserError,
             "--ssl-min-version must be 1.2 or 1.3");
  require_readable(config.certfile, "--ssl-certfile");
  require_readable(config.keyfile, "--ssl-keyfile");
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, config.min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_options(native,
                      SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // TLS 1.2 only (1.3 has its own, all AEAD): forward secrecy and AEAD.
  SSL_CTX_set_cipher_list(native, "ECDHE+AESGCM:ECDHE+CHACHA20");
  SSL_CTX_set_alpn_select_cb(native, &select_alpn, nullptr);
  // An encrypted key is refused instead of asking for a pass phrase on the terminal.
  ctx->set_password_callback([](std::size_t, ssl::context::password_purpose) { return std::string(); });

  boost::system::error_code ec;
  ctx->use_certificate_chain_file(config.certfile, ec);
  DS_REQUIRE(!ec, UserError, "--ssl-certfile {}: not a usable PEM certificate ({})", config.certfile,
             ec.message());
  ctx->use_private_key_file(config.keyfile, ssl::context::pem, ec);
  const auto reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
  if (ec && (reason == X509_R_KEY_VALUES_MISMATCH || reason == X509_R_KEY_TYPE_MISMATCH)) {
    throw UserError(fmt::format("--ssl-keyfile {} does not match the certificate in --ssl-certfile {}",
                                config.keyfile, config.certfile));
  }
  DS_REQUIRE(!ec, UserError, "--ssl-keyfile {}: not a usable PEM private key (unencrypted) ({})",
             config.keyfile, ec.message());
  if (SSL_CTX_check_private_key(native) != 1) {
    throw UserError(fmt::format("--ssl-keyfile {} does not match the certificate in --ssl-certfile {}",
                                config.keyfile, config.certfile));
  }
  return ctx;
}

}  // namespace ds::server
