// Arbitrary bytes as a stream of HTTP/1.1 requests on one connection, parsed the way HttpSession does it: a
// header parser (16 KiB header limit, no body limit), then framing_error() on the header (RFC 9112), then the
// body parser (1 MiB limit), then request_from_header(), request after request until the bytes run out or a
// request is refused. Beside sanitizer reports, a finding is a disagreement about where a request ends, the
// root of request smuggling:
//   - a header framing_error() accepts that has a Transfer-Encoding field must be one Beast parses as chunked
//     (else Beast would read no body and take the body's bytes as the next request);
//   - an accepted request with a body must have exactly one of Content-Length and chunked framing;
//   - a request's body is never longer than its Content-Length says.
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "fuzz_check.h"
#include "server/http_protocol.h"

namespace http = boost::beast::http;

namespace {

constexpr size_t kHeaderLimit = 16 * 1024;
constexpr uint64_t kBodyLimit = 1 << 20;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t at = 0;
  for (int requests = 0; requests < 16 && at < size; ++requests) {
    http::request_parser<http::empty_body> header;
    header.header_limit(kHeaderLimit);
    header.body_limit(boost::none);
    header.eager(false);  // stop after the header, as HttpSession's async_read_header does
    boost::beast::error_code ec;
    size_t used = 0;
    while (!header.is_header_done()) {
      const size_t n = header.put(boost::asio::buffer(data + at + used, size - at - used), ec);
      used += n;
      if (ec || (n == 0 && at + used >= size))
        return 0;  // incomplete or refused header: the session answers or closes
    }
    const auto& req = header.get();
    const unsigned version = req.version();
    if (ds::server::detail::framing_error(req, version).has_value()) return 0;  // 400 and close
    const bool has_te = req.find(http::field::transfer_encoding) != req.end();
    FUZZ_CHECK(
        !has_te || header.chunked(),
        "framing_error accepted a Transfer-Encoding that Beast does not parse as chunked: the body would be "
        "read as the next request");
    FUZZ_CHECK(!(header.chunked() && header.content_length().has_value()),
               "an accepted request framed by both chunked and Content-Length");
    const boost::optional<uint64_t> content_length = header.content_length();
    const bool body_pending = header.chunked() || content_length.value_or(0) > 0;
    (void)ds::server::detail::request_from_header(req, "fuzz");
    at += used;
    if (!body_pending) continue;
    if (content_length && *content_length > kBodyLimit) return 0;  // 413 before the body is read
    http::request_parser<http::string_body> body(std::move(header));
    body.body_limit(kBodyLimit);
    size_t body_used = 0;
    while (!body.is_done()) {
      const size_t n = body.put(boost::asio::buffer(data + at + body_used, size - at - body_used), ec);
      body_used += n;
      if (ec || (n == 0 && at + body_used >= size)) return 0;
    }
    if (content_length)
      FUZZ_CHECK(body.get().body().size() == *content_length, "body longer than its Content-Length");
    at += body_used;
  }
  return 0;
}
