#include "server/api_server.h"

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <random>
#include <thread>

#include "server/request_fields.h"
#include "util/check.h"

namespace ds::server {

std::string random_id(const char* prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}{:016x}{:08x}", prefix, rng(), static_cast<uint32_t>(rng()));
}

int64_t unix_time() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string ApiContext::resolve_model(const nlohmann::json& body) const {
  const auto model = optional_string(body, "model");
  if (!model) return config.served_model_names.front();
  for (const auto& name : config.served_model_names)
    if (name == *model) return name;
  throw model_not_found(*model);
}

void ApiContext::check_accepting() const {
  if (engine.dead()) {
    throw unavailable("the engine has failed and this server is restarting; retry on another replica",
                      "engine_dead", config.retry_after_s);
  }
  if (draining) {
    throw unavailable("the server is shutting down; retry on another replica", "shutting_down",
                      config.retry_after_s);
  }
}

void ApiContext::check_prompt(const std::vector<int32_t>& ids, int64_t max_tokens, const char* param) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= config.vocab_size) {
      throw bad_request(fmt::format("prompt token {} (at index {}) is outside the vocabulary [0, {})", ids[i],
                                    i, config.vocab_size),
                        param);
    }
  }
  const auto prompt_tokens = static_cast<int64_t>(ids.size());
  // max_tokens may be near int64's maximum: compared by subtraction, and the sum printed without overflow.
  if (max_tokens > config.max_model_len - prompt_tokens) {
    const auto requested = static_cast<uint64_t>(prompt_tokens) + static_cast<uint64_t>(max_tokens);
    throw bad_request(
        fmt::format("This model's maximum context length is {} tokens. However, you requested {} "
                    "tokens ({} in the prompt, {} for the completion). Please reduce the length of "
                    "the prompt or of max_tokens.",
                    config.max_model_len, requested, prompt_tokens, max_tokens),
        param, "context_length_exceeded");
  }
}

void ApiContext::read_client_chat_template(const nlohmann::json& body, ChatRenderInput& render) const {
  if (!config.allow_client_chat_template) return;
  if (const auto tmpl = optional_string(body, "chat_template")) render.chat_template = *tmpl;
  if (const auto it = body.find("chat_template_kwargs"); it != body.end() && !it->is_null()) {
    if (!it->is_object())
      throw bad_request("'chat_template_kwargs' must be an object", "chat_template_kwargs");
    render.chat_template_kwargs = nlohmann::ordered_json::parse(it->dump());
  }
}

const tokenizer::Tokenizer& ApiContext::require_tokenizer(const char* what) const {
  if (tokenizer == nullptr) {
    throw bad_request(fmt::format(
        "{} needs the model's tokenizer, and this model directory has no tokenizer.json; give token ids",
        what));
  }
  return *tokenizer;
}

namespace {

// A generation request's exchange holding its user's slot: given back as soon as the answer is complete
// (before its last bytes are written, so that the client's next request never finds it still taken), when the
// client leaves, or at the latest when the request is gone.
class LimitedExchange final : public Exchange {
 public:
  LimitedExchange(std::shared_ptr<Exchange> inner, std::shared_ptr<UserLimiter::Slot> slot)
      : inner_(std::move(inner)), slot_(std::move(slot)) {
    inner_->on_disconnect([slot = slot_] { slot->release(); });
  }
  ~LimitedExchange() override { slot_->release(); }

  const HttpRequest& request() const override { return inner_->request(); }
  const std::string& request_id() const override { return inner_->request_id(); }
  const std::string& user() const override { return inner_->user(); }
  void reply(int status, std::string body, std::string content_type, const Headers& headers) override {
    if (!inner_->events_started()) slot_->release();
    inner_->reply(status, std::move(body), std::move(content_type), headers);
  }
  void start_events() override { inner_->start_events(); }
  void send_event(std::string_view data) override { inner_->send_event(data); }
  void end_events() override {
    slot_->release();
    inner_->end_events();
  }
  bool events_started() const override { return inner_->events_started(); }
  bool backlogged() const override { return inner_->backlogged(); }
  void on_writable(std::function<void()> callback) override { inner_->on_writable(std::move(callback)); }
  void on_disconnect(std::function<void()> callback) override {
    inner_->on_disconnect([slot = slot_, callback = std::move(callback)] {
      slot->release();
      if (callback) callback();
    });
  }
  bool disconnected() const override { return inner_->disconnected(); }
  void post(std::function<void()> fn) override { inner_->post(std::move(fn)); }
  void set_tokens(int64_t prompt_tokens, int64_t completion_tokens) override {
    inner_->set_tokens(prompt_tokens, completion_tokens);
  }
  void set_request_details(nlohmann::json details) override {
    inner_->set_request_details(std::move(details));
  }

 private:
  std::shared_ptr<Exchange> inner_;
  std::shared_ptr<UserLimiter::Slot> slot_;
};

}  // namespace

GenerationRequest begin_generation(const ApiContext& api, const Exchange& exchange, const char* id_prefix,
                                   bool return_token_ids_default) {
  api.check_accepting();
  GenerationRequest r;
  r.body = parse_body(exchange.request().body);
  JobOptions& o = r.options;
  o.model = api.resolve_model(r.body);
  o.id = random_id(id_prefix);
  o.created = unix_time();
  o.stream = optional_bool(r.body, "stream", false);
  o.include_usage = include_usage(r.body, o.stream);
  o.return_token_ids = optional_bool(r.body, "return_token_ids", return_token_ids_default);
  o.tokens_as_ids = optional_bool(r.body, "return_tokens_as_token_ids", false);
  o.log_requests = api.config.log_requests;
  (void)optional_string(r.body, "user");
  return r;
}

ApiServer::ApiServer(Engine& engine, const tokenizer::Tokenizer* tokenizer, ChatRenderer chat_renderer,
                     ApiConfig api, HttpServerConfig http)
    : api_(engine, tokenizer, std::move(chat_renderer), std::move(api)),
      http_(std::move(http)),
      started_(unix_time()) {
  DS_REQUIRE(!api_.config.served_model_names.empty(), InvalidArgument, "the server needs a model name");
  add_routes();
  http_.set_completion_hook([this](const ExchangeSummary& summary) {
    counters_.record(summary);
    users_.record(summary.user);
    if (access_log_ != nullptr) access_log_->write(summary);
  });
}

ApiServer::~ApiServer() {
  stop();
}

void ApiServer::set_api_keys(ApiKeys keys) {
  set_auth(std::make_shared<Auth>(std::move(keys)));
}

void ApiServer::set_auth(std::shared_ptr<Auth> auth) {
  auth_ = std::move(auth);
  if (!auth_ || !auth_->enabled()) {
    http_.set_authenticator(nullptr);
  } else {
    http_.set_authenticator(
        [auth = auth_](std::string_view authorization) { return auth->authenticate(authorization); });
  }
}

void ApiServer::set_max_requests_per_user(int64_t max) {
  DS_REQUIRE(max >= 0, InvalidArgument, "--max-requests-per-user must be 0 (unlimited) or more");
  limiter_ = std::make_shared<UserLimiter>(max);
}

bool ApiServer::reload() {
  bool ok = true;
  if (auth_ && !auth_->reload()) ok = false;
  if (http_.tls()) {
    try {
      http_.reload_tls();
      spdlog::info("TLS certificate and key reloaded; new connections use them");
    } catch (const std::exception& e) {
      ok = false;
      spdlog::error("TLS reload failed; keeping the certificate loaded before: {}", e.what());
    }
  }
  return ok;
}

Handler ApiServer::wrap(void (*handler)(ApiContext&, const std::shared_ptr<Exchange>&), bool generation) {
  return [this, handler, generation](const std::shared_ptr<Exchange>& given) {
    std::shared_ptr<Exchange> exchange = given;
    if (generation && limiter_->max_in_flight() > 0) {
      auto slot = limiter_->try_acquire(given->user());
      if (!slot) {
        ErrorReply e;
        e.status = 429;
        e.type = "rate_limit_error";
        e.code = "rate_limit_exceeded";
        e.message = fmt::format(
            "user '{}' already has {} requests in flight (--max-requests-per-user {}); retry when one ends",
            given->user(), limiter_->max_in_flight(), limiter_->max_in_flight());
        e.retry_after_s = 1;
        given->reply_error(e);
        return;
      }
      exchange = std::make_shared<LimitedExchange>(given, std::move(slot));
    }
    try {
      handler(api_, exchange);
    } catch (...) {
      const ErrorReply error = error_reply(std::current_exception(), exchange->request_id());
      if (exchange->events_started()) {
        exchange->send_event(error.body().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
        exchange->end_events();
      } else {
        exchange->reply_error(error);
      }
    }
  };
}

void ApiServer::add_routes() {
  http_.post("/v1/completions", wrap(&handle_completions, /*generation=*/true));
  http_.post("/v1/chat/completions", wrap(&handle_chat_completions, /*generation=*/true));
  http_.post("/tokenize", wrap(&handle_tokenize));
  http_.post("/detokenize", wrap(&handle_detokenize));
  http_.get("/v1/models", [this](const std::shared_ptr<Exchange>& exchange) {
    nlohmann::json data = nlohmann::json::array();
    for (const auto& name : api_.config.served_model_names) {
      data.push_back({{"id", name},
                      {"object", "model"},
                      {"created", started_},
                      {"owned_by", "deepserve"},
                      {"root", api_.config.model_path},
                      {"parent", nullptr},
                      {"max_model_len", api_.config.max_model_len}});
    }
    exchange->reply_json(200, {{"object", "list"}, {"data", std::move(data)}});
  });
  http_.get("/metrics", [this](const std::shared_ptr<Exchange>& exchange) {
    const EngineStats stats = api_.engine.stats();
    MetricsInput in;
    in.engine = &stats;
    in.http = &counters_;
    in.model_name = api_.config.served_model_names.front();
    in.num_connections = http_.num_connections();
    in.draining = api_.draining;
    const std::vector<GpuSample> gpus =
        gpu_monitor_ != nullptr ? gpu_monitor_->sample() : std::vector<GpuSample>{};
    in.gpus = &gpus;
    exchange->reply(200, render_metrics(in) + users_.render(in.model_name),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  http_.get(
      "/health",
      [this](const std::shared_ptr<Exchange>& exchange) {
        if (api_.engine.dead()) {
          exchange->reply_error(
              unavailable("the engine has failed", "engine_dead", api_.config.retry_after_s).reply());
        } else if (api_.draining) {
          exchange->reply_error(
              unavailable("the server is shutting down", "shutting_down", api_.config.retry_after_s).reply());
        } else {
          exchange->reply(200, "", "text/plain");
        }
      },
      /*authenticated=*/false);
  http_.get(
      "/version",
      [](const std::shared_ptr<Exchange>& exchange) {
        exchange->reply_json(200, {{"version", DEEPSERVE_VERSION}});
      },
      /*authenticated=*/false);
}

void ApiServer::start() {
  http_.start();
}

void ApiServer::begin_drain() {
  api_.draining = true;
}

size_t ApiServer::drain(std::chrono::milliseconds timeout) {
  begin_drain();
  using Clock = std::chrono::steady_clock;
  size_t aborted = 0;
  if (!api_.jobs.wait_empty(Clock::now() + timeout)) {
    aborted = api_.jobs.size();
    spdlog::warn("shutdown: {} request(s) still running after {} ms; aborting them", aborted,
                 timeout.count());
    api_.jobs.abort_all();
    (void)api_.jobs.wait_empty(Clock::now() + std::chrono::seconds(5));
  }
  // The last answers were handed to their connections; let the writes leave (a stuck client has its write
  // timeout, and stop() cuts it anyway).
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  while (http_.num_answering() > 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return aborted;
}

void ApiServer::stop() {
  http_.stop();
}

}  // namespace ds::server
