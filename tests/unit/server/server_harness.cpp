#include "server_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <fstream>
#include <mutex>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include "../tokenizer/tiny_tokenizer.h"
#include "engine/offline.h"
#include "model/deepseek.h"
#include "server/chat_renderer.h"

extern char** environ;

namespace ds::server::testing {

Connection::Connection(uint16_t port, std::chrono::milliseconds timeout) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd_ < 0) throw std::runtime_error("socket() failed");
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error("connect() failed");
  }
}

Connection::~Connection() {
  close();
}

void Connection::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool Connection::send(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool Connection::fill() {
  char chunk[16384];
  const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
  if (n <= 0) return false;
  buffer_.append(chunk, static_cast<size_t>(n));
  return true;
}

std::string Connection::read_until(std::string_view marker) {
  while (buffer_.find(marker) == std::string::npos)
    if (!fill()) break;
  return buffer_;
}

std::string Connection::read_until_count(std::string_view marker, int count) {
  auto occurrences = [&] {
    int n = 0;
    for (size_t pos = buffer_.find(marker); pos != std::string::npos; pos = buffer_.find(marker, pos + 1))
      ++n;
    return n;
  };
  while (occurrences() < count)
    if (!fill()) break;
  return buffer_;
}

bool Connection::closed_by_peer(std::chrono::milliseconds within) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 20) > 0) {
      char c;
      const ssize_t n = ::recv(fd_, &c, 1, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return true;
      if (n > 0) buffer_.push_back(c);
    }
  }
  return false;
}

HttpReply Connection::read_reply() {
  HttpReply reply;
  size_t header_end;
  while ((header_end = buffer_.find("\r\n\r\n")) == std::string::npos)
    if (!fill()) return reply;
  const std::string head = buffer_.substr(0, header_end);
  buffer_.erase(0, header_end + 4);
  size_t line_end = head.find("\r\n");
  const std::string status_line = head.substr(0, line_end);
  reply.status = std::stoi(status_line.substr(status_line.find(' ') + 1, 3));
  while (line_end != std::string::npos) {
    const size_t start = line_end + 2;
    line_end = head.find("\r\n", start);
    const std::string line =
        head.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const size_t value = line.find_first_not_of(' ', colon + 1);
    reply.headers[name] = value == std::string::npos ? "" : line.substr(value);
  }
  if (reply.status == 100) return read_reply();  // interim: the real answer follows
  if (reply.header("transfer-encoding") == "chunked") {
    for (;;) {
      size_t eol;
      while ((eol = buffer_.find("\r\n")) == std::string::npos)
        if (!fill()) return reply;
      const size_t size = std::stoul(buffer_.substr(0, eol), nullptr, 16);
      while (buffer_.size() < eol + 2 + size + 2)
        if (!fill()) return reply;
      reply.body += buffer_.substr(eol + 2, size);
      buffer_.erase(0, eol + 2 + size + 2);
      if (size == 0) break;
    }
  } else if (!reply.header("content-length").empty()) {
    const size_t size = std::stoul(reply.header("content-length"));
    while (buffer_.size() < size)
      if (!fill()) break;
    reply.body = buffer_.substr(0, size);
    buffer_.erase(0, std::min(size, buffer_.size()));
  } else {
    while (fill()) {
    }
    reply.body = std::move(buffer_);
    buffer_.clear();
  }
  return reply;
}

std::string request_text(const std::string& method, const std::string& path, const std::string& body,
                         const std::vector<std::string>& extra_headers, bool keep_alive) {
  std::string out = method + " " + path + " HTTP/1.1\r\nHost: localhost\r\n";
  if (!body.empty() || method == "POST") {
    out += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  for (const auto& h : extra_headers) out += h + "\r\n";
  out += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  return out + body;
}

HttpReply http(uint16_t port, const std::string& method, const std::string& path, const std::string& body,
               const std::vector<std::string>& extra_headers) {
  Connection c(port);
  c.send(request_text(method, path, body, extra_headers));
  return c.read_reply();
}

std::vector<nlohmann::json> sse_events(const std::string& body) {
  std::vector<nlohmann::json> events;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    if (end == std::string::npos)
      throw std::runtime_error("SSE event without its blank line: " + body.substr(pos));
    const std::string event = body.substr(pos, end - pos);
    if (event.rfind("data: ", 0) != 0) throw std::runtime_error("SSE event without 'data: ': " + event);
    const std::string data = event.substr(6);
    events.push_back(data == "[DONE]" ? nlohmann::json("[DONE]") : nlohmann::json::parse(data));
    pos = end + 2;
  }
  return events;
}

std::filesystem::path tiny_tokenizer_dir() {
  // Written once per process, removed at exit.
  struct TempDir {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("deepserve_server_test_tok_" + std::to_string(::getpid()));
    TempDir() {
      std::filesystem::create_directories(path);
      std::ofstream(path / "tokenizer.json") << tokenizer::testing::tiny_tokenizer().dump();
    }
    ~TempDir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const TempDir dir;
  return dir.path;
}

std::string render_test_chat(const ChatRenderInput& input) {
  std::string out = "<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>";
  for (const auto& m : input.messages) {
    const std::string content = m["content"].is_string() ? m["content"].get<std::string>() : "";
    if (m["role"] == "user") out += "<\uFF5CUser\uFF5C>";
    out += content;
  }
  if (input.add_generation_prompt) out += "\n";
  return out;
}

HarnessOptions::HarnessOptions() {
  api.served_model_names = {kModelName};
  api.model_path = kModelDir;
  api.max_model_len = 256;
  api.vocab_size = 1024;
  api.max_n = 8;
  http.host = "127.0.0.1";
  http.port = 0;
  engine.block_size = 16;
  engine.num_gpu_blocks = 256;
  engine.max_queue_len = 64;
  engine.max_model_len = 256;
  engine.scheduler.max_num_seqs = 32;
  engine.scheduler.max_num_batched_tokens = 512;
}

ServerHarness::ServerHarness(HarnessOptions o) {
  backend_ = std::make_unique<CpuBackend>(1);
  model_ = DeepseekModel::load(o.model_dir, *backend_);
  ChatRenderer renderer;
  if (o.with_model_tokenizer) {
    encoder_.emplace(PromptEncoder::from_model_dir(o.model_dir));
    renderer = make_chat_renderer(*encoder_);
  } else if (o.with_tokenizer) {
    tokenizer_ = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::from_dir(tiny_tokenizer_dir()));
  }
  if (o.with_chat_template) renderer = &render_test_chat;
  if (o.chat_renderer) renderer = o.chat_renderer;
  engine_ = std::make_unique<Engine>(*model_, o.engine, tokenizer());
  if (o.api.vocab_size == 0) o.api.vocab_size = model_->config().vocab_size;
  if (o.api.max_model_len == 0) o.api.max_model_len = engine_->config().max_model_len;
  if (!o.access_log.empty()) access_log_ = std::make_unique<AccessLog>(o.access_log);
  server_ = std::make_unique<ApiServer>(*engine_, tokenizer(), renderer, o.api, o.http);
  if (o.auth) {
    server_->set_auth(o.auth);
  } else {
    ApiKeys keys;
    for (const auto& k : o.api_keys) keys.add("user-" + k.substr(0, 3), k);
    server_->set_api_keys(std::move(keys));
  }
  server_->set_max_requests_per_user(o.max_requests_per_user);
  server_->set_access_log(access_log_.get());
  if (o.start_engine) engine_->start();
  server_->start();
}

ServerHarness::~ServerHarness() {
  server_->stop();
  engine_->stop();
  server_.reset();
}

bool ServerHarness::wait_engine_idle(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    const EngineStats s = engine_->stats();
    if (s.num_running == 0 && s.num_waiting == 0 && s.num_swapped == 0 && s.kv_cache_usage == 0.0)
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

ServeProcess::ServeProcess(const std::vector<std::string>& args, const std::vector<std::string>& env,
                           std::chrono::milliseconds startup) {
  static std::atomic<int> counter{0};
  const std::string stem = std::filesystem::temp_directory_path().string() + "/deepserve_serve_" +
                           std::to_string(::getpid()) + "_" + std::to_string(counter++);
  stderr_path_ = stem + ".err";
  stdout_path_ = stem + ".out";
  std::vector<std::string> all = {DS_BINARY, "serve", "--port", "0"};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings = env;
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_path_.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, stdout_path_.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, DS_BINARY, &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("posix_spawn of " + std::string(DS_BINARY) + " failed");
  pid_ = pid;
  const auto deadline = std::chrono::steady_clock::now() + startup;
  const std::regex listening("listening on http://127\\.0\\.0\\.1:(\\d+)");
  while (std::chrono::steady_clock::now() < deadline) {
    std::smatch m;
    const std::string text = stderr_text();
    if (std::regex_search(text, m, listening)) {
      port_ = static_cast<uint16_t>(std::stoi(m[1]));
      return;
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("deepserve serve exited before listening: " + text);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error("deepserve serve did not start listening: " + stderr_text());
}

ServeProcess::~ServeProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  std::remove(stderr_path_.c_str());
  std::remove(stdout_path_.c_str());
}

std::string ServeProcess::stderr_text() const {
  return read_file(stderr_path_);
}

std::string ServeProcess::stdout_text() const {
  return read_file(stdout_path_);
}

std::optional<int> ServeProcess::wait_exit(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return std::nullopt;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

namespace {

// Keeps every formatted line; base_sink's mutex serializes sink_it_, text() takes the same lock.
class StringSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::string text() {
    std::lock_guard lock(mutex_);
    return text_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    text_.append(formatted.data(), formatted.size());
  }
  void flush_() override {}

 private:
  std::string text_;
};

}  // namespace

struct CapturedLog::State {
  std::shared_ptr<spdlog::logger> previous;
  std::shared_ptr<StringSink> sink = std::make_shared<StringSink>();
};

CapturedLog::CapturedLog() : state_(std::make_unique<State>()) {
  state_->previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("captured", state_->sink));
}

CapturedLog::~CapturedLog() {
  spdlog::set_default_logger(state_->previous);
}

std::string CapturedLog::text() const {
  return state_->sink->text();
}

std::vector<int32_t> reference_greedy(const std::vector<int32_t>& prompt, int64_t max_tokens) {
  static std::mutex mutex;
  static CpuBackend backend(1);
  static std::unique_ptr<DeepseekModel> model = DeepseekModel::load(kModelDir, backend);
  std::lock_guard lock(mutex);
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  return generate(*model, prompt, p).token_ids;
}

}  // namespace ds::server::testing
