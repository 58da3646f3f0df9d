// The TLS server context of --ssl-certfile / --ssl-keyfile / --ssl-min-version (Boost.Asio SSL over
// OpenSSL 3): TLS 1.3 only by default, or 1.2 and 1.3 with ECDHE + AEAD ciphers; no renegotiation, no
// compression; ALPN answers http/1.1.
#pragma once

#include <memory>

#include "server/http_server.h"

namespace boost::asio::ssl {
class context;
}

namespace ds::server {

// Throws UserError naming the file when the certificate or the key cannot be read or parsed, or when they do
// not belong together.
[[nodiscard]] std::shared_ptr<boost::asio::ssl::context> make_tls_context(const TlsConfig& config);

}  // namespace ds::server
