#include "server/http_protocol.h"

#include <fmt/format.h>
#include <boost/beast/http/status.hpp>

#include <algorithm>
#include <cctype>
#include <random>
#include <vector>

namespace ds::server::detail {

namespace http = boost::beast::http;

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::optional<std::string> framing_error(const http::fields& fields, unsigned version) {
  std::vector<std::string_view> codings;
  std::string joined;
  bool present = false;
  for (const auto& field : fields) {
    if (field.name() != http::field::transfer_encoding) continue;
    present = true;
    const std::string_view value(field.value().data(), field.value().size());
    if (!joined.empty()) joined += ", ";
    joined += value;
    // A list element may be empty ("chunked,,"), which RFC 9110 section 5.6.1 says to ignore.
    size_t start = 0;
    while (start <= value.size()) {
      const size_t comma = std::min(value.find(',', start), value.size());
      const std::string_view coding = trim(value.substr(start, comma - start));
      if (!coding.empty()) codings.push_back(coding);
      start = comma + 1;
    }
  }
  if (!present) return std::nullopt;
  if (version < 11) return std::string("Transfer-Encoding is not allowed in an HTTP/1.0 request");
  if (fields.find(http::field::content_length) != fields.end()) {
    return std::string("a request may not have both Transfer-Encoding and Content-Length");
  }
  if (codings.size() == 1 && iequals(codings.front(), "chunked")) return std::nullopt;
  return fmt::format(
      "Transfer-Encoding '{}' is not supported: this server accepts only 'chunked', once and as the only "
      "coding",
      joined);
}

HttpRequest request_from_header(const http::request_header<>& header, std::string remote) {
  HttpRequest request;
  request.method = std::string(header.method_string());
  request.target = std::string(header.target());
  const size_t q = request.target.find('?');
  request.path = request.target.substr(0, q);
  request.query = q == std::string::npos ? "" : request.target.substr(q + 1);
  for (const auto& field : header)
    request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  request.remote = std::move(remote);
  return request;
}

std::string make_request_id(std::string_view given) {
  const bool usable =
      !given.empty() && given.size() <= 128 && std::all_of(given.begin(), given.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
      });
  if (usable) return std::string(given);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}", rng());
}

const char* reason_phrase(int status) {
  const auto reason = http::obsolete_reason(static_cast<http::status>(status));
  return reason.empty() ? "Unknown" : reason.data();
}

}  // namespace ds::server::detail
