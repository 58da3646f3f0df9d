// Test helpers: the real server in-process on an ephemeral port over the tiny V2 checkpoint (CPU), and a raw
// HTTP/1.1 client on a plain socket, so the tests see exactly the bytes a client would.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "model/deepseek.h"
#include "server/api_server.h"
#include "tokenizer/prompt.h"
#include "tokenizer/tokenizer.h"

namespace ds::server::testing {

// Polls done() every millisecond until it holds (true) or timeout passes (false).
template <class Predicate>
bool wait_for(Predicate done, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

inline const std::string kModelDir = std::string(DS_FIXTURES_DIR) + "/deepseek_v2_tiny_bf16";
inline constexpr const char* kModelName = "tiny";

struct HttpReply {
  int status = 0;                              // 0: no answer (connection closed or timed out first)
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                            // de-chunked
  [[nodiscard]] nlohmann::json json() const { return nlohmann::json::parse(body); }
  [[nodiscard]] std::string header(const std::string& name) const {
    const auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// A connected socket to 127.0.0.1:port with a receive timeout; closes on destruction.
class Connection {
 public:
  explicit Connection(uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds(20));
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // false when the peer has closed (EPIPE / reset).
  bool send(std::string_view bytes);
  // Reads one response (Content-Length, chunked, or until close). status 0 if none arrived.
  HttpReply read_reply();
  // Reads whatever arrives until `marker` appears (or close / timeout); returns everything read so far.
  std::string read_until(std::string_view marker);
  // Reads until `marker` occurs `count` times (or close / timeout).
  std::string read_until_count(std::string_view marker, int count);
  // True when the server closed the connection (a read returns 0 or reset) within the timeout.
  bool closed_by_peer(std::chrono::milliseconds within);
  void close();
  [[nodiscard]] int fd() const { return fd_; }

 private:
  bool fill();  // reads more into buffer_; false at EOF / error / timeout
  int fd_ = -1;
  std::string buffer_;
};

// "POST /path" with a JSON body, Connection: close.
std::string request_text(const std::string& method, const std::string& path, const std::string& body,
                         const std::vector<std::string>& extra_headers = {}, bool keep_alive = false);
HttpReply http(uint16_t port, const std::string& method, const std::string& path,
               const std::string& body = "", const std::vector<std::string>& extra_headers = {});
inline HttpReply post_json(uint16_t port, const std::string& path, const nlohmann::json& body,
                           const std::vector<std::string>& extra_headers = {}) {
  return http(port, "POST", path, body.dump(), extra_headers);
}

// The JSON objects of an SSE body; the final "[DONE]" becomes the string "[DONE]".
std::vector<nlohmann::json> sse_events(const std::string& body);

// The tiny hand-written tokenizer of the tokenizer tests (ids 0..267), in a temporary directory.
std::filesystem::path tiny_tokenizer_dir();

// A chat renderer for tests: BOS, then "<｜User｜>" + content for user turns and plain content for the
// others, then "\n" as the generation prompt.
std::string render_test_chat(const ChatRenderInput& input);

struct HarnessOptions {
  std::string model_dir = kModelDir;
  // The model directory's own tokenizer and chat template (PromptEncoder), as `deepserve serve` uses them.
  bool with_model_tokenizer = false;
  bool with_tokenizer = false;  // the tiny hand-written tokenizer instead
  bool with_chat_template = false;
  ChatRenderer chat_renderer;  // when set: this renderer instead of the ones above
  ApiConfig api;
  HttpServerConfig http;
  EngineConfig engine;
  std::vector<std::string> api_keys;
  std::shared_ptr<Auth> auth;  // instead of api_keys: API keys and/or JWT
  int64_t max_requests_per_user = 0;
  bool start_engine = true;
  std::string access_log;  // a file path, or empty

  HarnessOptions();
};

class ServerHarness {
 public:
  explicit ServerHarness(HarnessOptions options = {});
  ~ServerHarness();

  [[nodiscard]] uint16_t port() const { return server_->port(); }
  [[nodiscard]] Engine& engine() { return *engine_; }
  [[nodiscard]] DeepseekModel& model() { return *model_; }
  [[nodiscard]] ApiServer& server() { return *server_; }
  [[nodiscard]] const tokenizer::Tokenizer* tokenizer() const {
    return encoder_ ? &encoder_->tokenizer() : tokenizer_.get();
  }
  [[nodiscard]] const PromptEncoder& encoder() const { return *encoder_; }
  // Polls the engine's stats until nothing runs, waits or holds KV blocks; false after the timeout.
  bool wait_engine_idle(std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  std::unique_ptr<CpuBackend> backend_;
  std::unique_ptr<DeepseekModel> model_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  std::optional<PromptEncoder> encoder_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<AccessLog> access_log_;
  std::unique_ptr<ApiServer> server_;
};

// `deepserve serve` (DS_BINARY) as a child process on an ephemeral port: stderr goes to a log file, stdout
// (the access log) to another. The constructor waits for "listening on"; the destructor kills it if it still
// runs.
class ServeProcess {
 public:
  // `args` follow "serve --port 0"; `env` adds NAME=VALUE entries to this process's environment.
  explicit ServeProcess(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
                        std::chrono::milliseconds startup = std::chrono::seconds(60));
  ~ServeProcess();
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] int pid() const { return pid_; }
  [[nodiscard]] std::string stderr_text() const;
  [[nodiscard]] std::string stdout_text() const;
  // Waits for the process to exit: its exit code, -1 if it was killed by a signal, nullopt after the timeout.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);

 private:
  int pid_ = -1;
  uint16_t port_ = 0;
  std::string stderr_path_, stdout_path_;
};

// Captures what spdlog's default logger writes while it lives (then restores the previous logger).
class CapturedLog {
 public:
  CapturedLog();
  ~CapturedLog();
  CapturedLog(const CapturedLog&) = delete;
  CapturedLog& operator=(const CapturedLog&) = delete;
  [[nodiscard]] std::string text() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Greedy tokens of the fixture model for a prompt, from the offline generate() on its own model instance.
std::vector<int32_t> reference_greedy(const std::vector<int32_t>& prompt, int64_t max_tokens);

}  // namespace ds::server::testing
