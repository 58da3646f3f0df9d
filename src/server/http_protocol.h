// Internal to the HTTP server: what HTTP/1.1 itself asks of a request (framing, RFC 9112) and the small
// helpers a session needs to answer one (request ids, reason phrases).
#pragma once

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>

#include <optional>
#include <string>
#include <string_view>

#include "server/http_server.h"

namespace ds::server::detail {

[[nodiscard]] bool iequals(std::string_view a, std::string_view b);

// Why the request's framing cannot be trusted, or nullopt. RFC 9112 section 6: a Transfer-Encoding whose
// final coding is not chunked, chunked applied more than once, or a coding this server does not implement
// (gzip, deflate, compress, identity: it decodes none of them), in any of the request's Transfer-Encoding
// fields, as well as Transfer-Encoding together with Content-Length or in an HTTP/1.0 request. Beast
// alone would take "chunked, identity" as a request without a body and parse the body as the next request;
// the caller answers 400 and closes instead.
[[nodiscard]] std::optional<std::string> framing_error(const boost::beast::http::fields& fields,
                                                       unsigned version);

// The request as a handler sees it (the body aside): method, target split into path and query, the fields.
[[nodiscard]] HttpRequest request_from_header(const boost::beast::http::request_header<>& header,
                                              std::string remote);

// A client's X-Request-Id when it is short and plain, else a fresh random one.
[[nodiscard]] std::string make_request_id(std::string_view given);

[[nodiscard]] const char* reason_phrase(int status);

}  // namespace ds::server::detail
