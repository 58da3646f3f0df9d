// TLS with a self-signed certificate made by the openssl CLI at test time: a TLS 1.3 client gets /health and
// completions; a TLS 1.2 client is refused by default and served with --ssl-min-version 1.2; the limits hold
// over TLS; a reload gives new connections the new certificate while open ones keep theirs.
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "server/tls.h"
#include "../run_command.h"
#include "server_harness.h"
#include "test_keys.h"
#include "util/check.h"

namespace ds::server {
namespace {

using nlohmann::json;
using testing::Connection;
using testing::HttpReply;
using testing::request_text;
using testing::wait_for;

// One response from raw bytes (Content-Length or chunked); status 0 when incomplete.
HttpReply parse_reply(const std::string& raw) {
  HttpReply reply;
  const size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos || raw.compare(0, 5, "HTTP/") != 0) return reply;
  reply.status = std::stoi(raw.substr(raw.find(' ') + 1, 3));
  size_t pos = raw.find("\r\n") + 2;
  while (pos < end) {
    const size_t eol = raw.find("\r\n", pos);
    const std::string line = raw.substr(pos, eol - pos);
    const size_t colon = line.find(':');
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    reply.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
    pos = eol + 2;
  }
  std::string rest = raw.substr(end + 4);
  if (reply.header("transfer-encoding") == "chunked") {
    for (size_t p = 0;;) {
      const size_t eol = rest.find("\r\n", p);
      if (eol == std::string::npos) break;
      const size_t size = std::stoul(rest.substr(p, eol - p), nullptr, 16);
      if (size == 0) break;
      reply.body += rest.substr(eol + 2, size);
      p = eol + 2 + size + 2;
    }
  } else {
    reply.body = rest.substr(
        0, std::stoul(reply.header("content-length").empty() ? "0" : reply.header("content-length")));
  }
  return reply;
}

// A blocking TLS client over the harness's Connection (its receive timeout bounds every read).
class TlsClient {
 public:
  explicit TlsClient(uint16_t port, int max_version = TLS1_3_VERSION, int min_version = TLS1_2_VERSION)
      : conn_(port, std::chrono::seconds(10)) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx_, min_version);
    SSL_CTX_set_max_proto_version(ctx_, max_version);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);  // self-signed: the tests look at it themselves
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, conn_.fd());
    SSL_set_tlsext_host_name(ssl_, "localhost");
  }
  ~TlsClient() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
  }

  bool handshake() {
    const bool ok = SSL_connect(ssl_) == 1;
    ERR_clear_error();
    return ok;
  }
  [[nodiscard]] std::string version() const { return SSL_get_version(ssl_); }
  // SHA-256 of the server's certificate.
  [[nodiscard]] std::string peer_fingerprint() const {
    X509* cert = SSL_get1_peer_certificate(ssl_);
    if (cert == nullptr) return "";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    X509_digest(cert, EVP_sha256(), md, &len);
    X509_free(cert);
    return std::string(reinterpret_cast<char*>(md), len);
  }
  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      const int n = SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size()));
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  // Reads until `marker` is in what was read (or the end / timeout).
  std::string read_until(std::string_view marker) {
    while (buffer_.find(marker) == std::string::npos)
      if (!fill()) break;
    return buffer_;
  }
  // One answer on a keep-alive connection.
  HttpReply read_reply() {
    for (;;) {
      HttpReply r = parse_reply(buffer_);
      const bool chunked = r.header("transfer-encoding") == "chunked";
      if (r.status != 0) {
        const size_t head = buffer_.find("\r\n\r\n") + 4;
        const size_t need =
            chunked
                ? buffer_.find("\r\n0\r\n\r\n", head - 2)
                : head + std::stoul(r.header("content-length").empty() ? "0" : r.header("content-length"));
        if (chunked && need != std::string::npos) {
          buffer_.erase(0, need + 7);
          return r;
        }
        if (!chunked && buffer_.size() >= need) {
          buffer_.erase(0, need);
          return r;
        }
      }
      if (!fill()) return parse_reply(buffer_);
    }
  }
  HttpReply request(const std::string& method, const std::string& path, const std::string& body = "",
                    const std::vector<std::string>& headers = {}) {
    send(request_text(method, path, body, headers, /*keep_alive=*/true));
    return read_reply();
  }
  // close_notify, then the TCP end.
  void shutdown_and_close() {
    SSL_shutdown(ssl_);
    conn_.close();
  }
  void close_abruptly() { conn_.close(); }
  bool closed_by_peer(std::chrono::milliseconds within) { return conn_.closed_by_peer(within); }

 private:
  bool fill() {
    char chunk[16384];
    const int n = SSL_read(ssl_, chunk, sizeof(chunk));
    if (n <= 0) {
      ERR_clear_error();
      return false;
    }
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  Connection conn_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string buffer_;
};

std::string run(const std::string& cmd, int* exit_code) {
  test_util::CommandRun r = test_util::run_command(cmd);
  *exit_code = r.exit_code;
  return std::move(r.output);
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::temp_dir("tls");
    cert_ = dir_ / "cert.pem";
    key_ = dir_ / "key.pem";
    if (!testing::make_self_signed_cert(cert_, key_)) GTEST_SKIP() << "the openssl CLI is needed";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  testing::HarnessOptions options(int min_version = 13) {
    testing::HarnessOptions o;
    o.http.tls = TlsConfig{cert_.string(), key_.string(), min_version};
    return o;
  }

  std::filesystem::path dir_, cert_, key_;
};

TEST_F(TlsTest, Tls13ClientGetsHealthAndCompletions) {
  testing::ServerHarness h(options());
  TlsClient c(h.port());
  ASSERT_TRUE(c.handshake());
  EXPECT_EQ(c.version(), "TLSv1.3");
  EXPECT_EQ(c.request("GET", "/health").status, 200);
  // The same connection, kept alive: a completion, then a streamed one.
  const json req = {{"prompt", {1, 2, 3}}, {"max_tokens", 4}, {"temperature", 0}, {"ignore_eos", true}};
  const auto r = c.request("POST", "/v1/completions", req.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json body = json::parse(r.body);
  EXPECT_EQ(body["usage"]["completion_tokens"], 4);
  json streamed = req;
  streamed["stream"] = true;
  const auto s = c.request("POST", "/v1/completions", streamed.dump());
  ASSERT_EQ(s.status, 200);
  const auto events = testing::sse_events(s.body);
  EXPECT_EQ(events.back(), "[DONE]");
  // Plain HTTP on the TLS port gets no answer.
  Connection plain(h.port());
  plain.send(request_text("GET", "/health", ""));
  EXPECT_EQ(plain.read_reply().status, 0);
  EXPECT_EQ(c.request("GET", "/health").status, 200);  // and did no harm
}

TEST_F(TlsTest, Tls12IsRefusedByDefaultAndServedWhenAllowed) {
  {
    testing::ServerHarness h(options());
    TlsClient old(h.port(), TLS1_2_VERSION);
    EXPECT_FALSE(old.handshake());
    TlsClient current(h.port());
    ASSERT_TRUE(current.handshake());
    EXPECT_EQ(current.request("GET", "/health").status, 200);
    // The openssl CLI agrees.
    int code = 0;
    const std::string port = std::to_string(h.port());
    std::string out =
        run("echo | timeout 20 openssl s_client -connect 127.0.0.1:" + port + " -tls1_2", &code);
    EXPECT_NE(code, 0) << out;
    out = run("echo | timeout 20 openssl s_client -connect 127.0.0.1:" + port + " -tls1_3", &code);
    EXPECT_EQ(code, 0) << out;
    EXPECT_NE(out.find("TLSv1.3"), std::string::npos) << out;
  }
  {
    testing::ServerHarness h(options(12));
    TlsClient old(h.port(), TLS1_2_VERSION);
    ASSERT_TRUE(old.handshake());
    EXPECT_EQ(old.version(), "TLSv1.2");
    EXPECT_EQ(old.request("GET", "/health").status, 200);
    TlsClient current(h.port());
    ASSERT_TRUE(current.handshake());
    EXPECT_EQ(current.version(), "TLSv1.3");
    int code = 0;
    const std::string out =
        run("echo | timeout 20 openssl s_client -connect 127.0.0.1:" + std::to_string(h.port()) + " -tls1_2",
            &code);
    EXPECT_EQ(code, 0) << out;
  }
}

TEST_F(TlsTest, LimitsHoldOverTls) {
  testing::HarnessOptions o = options();
  o.http.header_timeout = std::chrono::milliseconds(300);
  o.http.max_request_bytes = 4096;
  o.http.max_connections = 2;
  o.http.extra_connections = 4;
  testing::ServerHarness h(o);
  // A client that never starts the handshake is closed at the header timeout.
  Connection silent(h.port());
  EXPECT_TRUE(silent.closed_by_peer(std::chrono::seconds(3)));
  // One that shakes hands and then sends half a header, too.
  {
    TlsClient slow(h.port());
    ASSERT_TRUE(slow.handshake());
    slow.send("GET /health HTTP/1.1\r\nHost: x\r\n");
    EXPECT_TRUE(slow.closed_by_peer(std::chrono::seconds(3)));
  }
  // 413 from Content-Length, before the body is read.
  {
    TlsClient big(h.port());
    ASSERT_TRUE(big.handshake());
    big.send(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
        "100000\r\n\r\n");
    big.send(std::string(8192, ' '));
    const auto r = big.read_reply();
    EXPECT_EQ(r.status, 413);
  }
  // At --max-connections, idle TLS connections make room as plain ones do (the longest idle is closed), so
  // a new client is answered; only busy connections can fill the cap (http_server_test covers the 503).
  ASSERT_TRUE(wait_for([&] { return h.server().num_connections() == 0; }));
  TlsClient a(h.port()), b(h.port());
  ASSERT_TRUE(a.handshake() && b.handshake());
  EXPECT_EQ(a.request("GET", "/health").status, 200);
  EXPECT_EQ(b.request("GET", "/health").status, 200);
  TlsClient extra(h.port());
  ASSERT_TRUE(extra.handshake());
  EXPECT_EQ(extra.request("GET", "/v1/models").status, 200);
  // a or b, whichever the server saw idle longest (they went idle within a millisecond of each other).
  EXPECT_TRUE(a.closed_by_peer(std::chrono::seconds(1)) || b.closed_by_peer(std::chrono::seconds(2)));
}

TEST_F(TlsTest, AClientThatLeavesAbortsItsRequest) {
  testing::HarnessOptions o = options();
  o.start_engine = false;  // nothing finishes on its own
  testing::ServerHarness h(o);
  const json req = {{"prompt", {1, 2, 3}}, {"max_tokens", 100}, {"ignore_eos", true}, {"stream", true}};
  for (const bool notify : {true, false}) {
    TlsClient c(h.port());
    ASSERT_TRUE(c.handshake());
    c.send(request_text("POST", "/v1/completions", req.dump()));
    ASSERT_NE(c.read_until("\r\n\r\n").find("200 OK"), std::string::npos);
    ASSERT_EQ(h.server().num_requests_in_flight(), 1u);
    if (notify) {
      c.shutdown_and_close();  // close_notify first: bytes the server cannot peek through, then FIN
    } else {
      c.close_abruptly();
    }
    EXPECT_TRUE(wait_for([&] { return h.server().num_requests_in_flight() == 0; }, std::chrono::seconds(5)))
        << (notify ? "after close_notify" : "after a bare close");
  }
}

TEST_F(TlsTest, ReloadGivesNewConnectionsTheNewCertificate) {
  testing::ServerHarness h(options());
  TlsClient before(h.port());
  ASSERT_TRUE(before.handshake());
  const std::string first = before.peer_fingerprint();
  ASSERT_FALSE(first.empty());

  ASSERT_TRUE(testing::make_self_signed_cert(dir_ / "cert2.pem", dir_ / "key2.pem", "second"));
  std::filesystem::copy_file(dir_ / "cert2.pem", cert_, std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(dir_ / "key2.pem", key_, std::filesystem::copy_options::overwrite_existing);
  ASSERT_TRUE(h.server().reload());
  TlsClient after(h.port());
  ASSERT_TRUE(after.handshake());
  const std::string second = after.peer_fingerprint();
  EXPECT_NE(second, first);
  EXPECT_EQ(after.request("GET", "/health").status, 200);
  EXPECT_EQ(before.request("GET", "/health").status, 200);  // the open connection was not touched

  // A certificate that does not match its key: the reload fails, the last good pair stays.
  ASSERT_TRUE(testing::make_self_signed_cert(dir_ / "cert3.pem", dir_ / "key3.pem", "third"));
  std::filesystem::copy_file(dir_ / "cert3.pem", cert_, std::filesystem::copy_options::overwrite_existing);
  EXPECT_FALSE(h.server().reload());
  TlsClient later(h.port());
  ASSERT_TRUE(later.handshake());
  EXPECT_EQ(later.peer_fingerprint(), second);
}

TEST_F(TlsTest, AnUnusableCertificateOrKeyIsAClearErrorAtStart) {
  std::ofstream(dir_ / "garbage.pem")
      << "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
  ASSERT_TRUE(testing::make_self_signed_cert(dir_ / "other.pem", dir_ / "other-key.pem"));
  auto message = [](const TlsConfig& c) -> std::string {
    try {
      (void)make_tls_context(c);
    } catch (const UserError& e) {
      return e.what();
    }
    return "accepted";
  };
  const std::string missing = (dir_ / "missing.pem").string();
  EXPECT_NE(message({missing, key_.string(), 13}).find("--ssl-certfile " + missing), std::string::npos);
  EXPECT_NE(message({cert_.string(), missing, 13}).find("--ssl-keyfile " + missing), std::string::npos);
  const std::string garbage = (dir_ / "garbage.pem").string();
  EXPECT_NE(message({garbage, key_.string(), 13}).find("--ssl-certfile " + garbage), std::string::npos);
  EXPECT_NE(message({cert_.string(), cert_.string(), 13}).find("--ssl-keyfile"), std::string::npos);
  const std::string mismatch = message({cert_.string(), (dir_ / "other-key.pem").string(), 13});
  EXPECT_NE(mismatch.find("does not match"), std::string::npos) << mismatch;

  // The binary: exit non-zero with the file named, before loading the model.
  int code = 0;
  std::string out = run(std::string(DS_BINARY) + " serve --port 0 --ssl-certfile " + cert_.string() +
                            " --ssl-keyfile " + (dir_ / "other-key.pem").string(),
                        &code);
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("other-key.pem does not match the certificate in --ssl-certfile " + cert_.string()),
            std::string::npos)
      << out;
  out = run(std::string(DS_BINARY) + " serve --port 0 --ssl-certfile " + missing + " --ssl-keyfile " +
                key_.string(),
            &code);
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find(missing), std::string::npos) << out;
  out = run(std::string(DS_BINARY) + " serve --port 0 --ssl-certfile " + cert_.string(), &code);
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("--ssl-keyfile"), std::string::npos) << out;
}

}  // namespace
}  // namespace ds::server
