#include "cli/serve.h"

#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "cli/config_flags.h"
#include "cli/load_model.h"
#include "engine/engine.h"
#include "engine/memory_plan.h"
#include "model/deepseek.h"
#include "server/api_server.h"
#include "server/chat_renderer.h"
#include "server/tls.h"
#include "tokenizer/prompt.h"
#include "util/check.h"

namespace ds::cli {
namespace {

namespace fs = std::filesystem;

// With no --model: the tiny chat fixture when this source tree has it, else the tiny V2 checkpoint, so that
// `deepserve serve` works on any machine straight after a build.
std::string embedded_model_dir() {
  const fs::path fixtures = fs::path(DS_SOURCE_DIR) / "tests" / "fixtures";
  for (const char* name : {"deepseek_v3_tiny_chat", "deepseek_v2_tiny_bf16"})
    if (fs::exists(fixtures / name / "config.json")) return (fixtures / name).string();
  throw InvalidArgument(fmt::format(
      "no --model given and no embedded fixture model under {}; pass --model DIR", fixtures.string()));
}

EngineConfig engine_config(const ServeOptions& o, ModelRunner& model) {
  EngineConfig c;
  c.block_size = o.block_size;
  c.scheduler.max_num_seqs = o.max_num_seqs;
  c.scheduler.max_num_batched_tokens = o.max_num_batched_tokens;
  c.enable_prefix_caching = o.enable_prefix_caching;
  c.max_model_len = o.max_model_len;
  c.max_queue_len = o.max_queue_len;
  c.cuda_graphs = o.device == "cuda" && !o.enforce_eager;
  // Fault injection for the test of the engine-failure path (an operator's environment, never a request).
  if (const char* step = std::getenv("DEEPSERVE_TEST_FAIL_AT_STEP")) {
    c.fail_at_step = std::atoll(step);
    spdlog::warn("DEEPSERVE_TEST_FAIL_AT_STEP={}: the engine will fail on purpose at step {}", step,
                 c.fail_at_step);
  }
  const int64_t block_bytes = model.kv_block_bytes(o.block_size);
  c.num_cpu_blocks = static_cast<int64_t>(o.swap_space_gib * (1LL << 30)) / block_bytes;
  const int64_t max_model_len =
      o.max_model_len > 0 ? o.max_model_len : model.config().max_position_embeddings;
  const int64_t needed = (max_model_len + o.block_size - 1) / o.block_size;
  if (o.num_gpu_blocks_override > 0) {
    c.num_gpu_blocks = o.num_gpu_blocks_override;
  } else if (o.kv_cache_gib > 0 || !model.backend().device_memory()) {
    c.num_gpu_blocks =
        static_cast<int64_t>((o.kv_cache_gib > 0 ? o.kv_cache_gib : 1.0) * (1LL << 30)) / block_bytes;
  } else {
    KvCachePlanInput in{o.gpu_memory_utilization, o.block_size,  o.max_num_batched_tokens,
                        o.max_num_seqs,           max_model_len, needed};
    if (c.cuda_graphs) in.decode_graph_max_batch = decode_graph_sizes(o.max_num_seqs).back();
    const KvCachePlan plan = plan_kv_cache(model, in);
    std::fprintf(stderr, "deepserve: %s\n", plan.summary.c_str());
    c.num_gpu_blocks = plan.num_blocks;
  }
  DS_REQUIRE(c.num_gpu_blocks >= needed, InvalidArgument,
             "the KV cache holds {} blocks of {} tokens, fewer than one request of --max-model-len {} needs "
             "({}); raise "
             "--kv-cache-gib or lower --max-model-len",
             c.num_gpu_blocks, o.block_size, max_model_len, needed);
  return c;
}

std::string curl_example(const std::string& base, const std::string& model, bool has_tokenizer, bool has_key,
                         bool tls) {
  const std::string auth = has_key ? " -H \"Authorization: Bearer $KEY\"" : "";
  const std::string prompt = has_tokenizer ? "\"The capital of France is\"" : "[1, 2, 3, 4]";
  return fmt::format(
      "curl {}{}/v1/completions -H 'Content-Type: application/json'{} "
      "-d '{{\"model\": \"{}\", \"prompt\": {}, \"max_tokens\": 8, \"temperature\": 0}}'",
      tls ? "-k " : "", base, auth, model, prompt);
}

}  // namespace

CLI::App* add_serve_command(CLI::App& app, ServeOptions& o) {
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API");
  cmd->add_option("--model", o.model_dir, "Checkpoint directory (default: the embedded tiny fixture model)");
  cmd->add_option("--tokenizer", o.tokenizer_dir,
                  "Directory with tokenizer.json (default: the model directory)");
  cmd->add_option("--served-model-name", o.served_model_names,
                  "Model name(s) the API answers to; the first is the default (repeatable)");
  cmd->add_option("--host", o.host, "Address to listen on (0.0.0.0 for every interface)");
  cmd->add_option("--port", o.port, "Port to listen on (0: any free port)")->check(CLI::Range(0, 65535));
  cmd->add_option("--device", o.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  add_parallel_flags(*cmd, o.parallel);
  cmd->add_option(
         "--dtype", o.dtype,
         "Activation dtype: auto (bfloat16 on cuda, float32 on cpu), bfloat16 (cuda) or float32 (cpu)")
      ->check(CLI::IsMember({"auto", "bfloat16", "float32", "float", "float16", "half"}));
  cmd->add_option("--threads", o.threads, "CPU threads for the CPU backend (0 = all cores)")
      ->check(CLI::Range(0, 1024));
  cmd->add_option("--io-threads", o.io_threads, "HTTP I/O threads")->check(CLI::Range(1, 64));
  cmd->add_option("--max-model-len", o.max_model_len, "Context length (default: max_position_embeddings)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  cmd->add_flag("--enforce-eager", o.enforce_eager,
                "No CUDA graphs: launch every op of every step from the host (decode steps are otherwise "
                "replayed from graphs captured at start-up)");
  cmd->add_option("--max-num-seqs", o.max_num_seqs, "Sequences per engine step")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--max-num-batched-tokens", o.max_num_batched_tokens, "Tokens per engine step")
      ->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--block-size", o.block_size, "Tokens per KV block")->check(CLI::Range(1, 1024));
  cmd->add_option(
         "--kv-cache-gib", o.kv_cache_gib,
         "Memory for the KV cache, GiB (default: 1 on the CPU; on a GPU, from --gpu-memory-utilization)")
      ->check(CLI::Range(0.0001, 4096.0));
  cmd->add_option(
         "--gpu-memory-utilization", o.gpu_memory_utilization,
         "Share of the GPU's memory for weights, activations and the KV cache (the KV cache gets the rest)")
      ->check(CLI::Range(0.01, 1.0));
  cmd->add_option("--num-gpu-blocks-override", o.num_gpu_blocks_override,
                  "KV blocks, instead of --kv-cache-gib")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--swap-space", o.swap_space_gib, "CPU swap space for preempted sequences, GiB")
      ->check(CLI::Range(0.0, 4096.0));
  cmd->add_flag("--enable-prefix-caching,!--no-enable-prefix-caching", o.enable_prefix_caching,
                "Reuse the KV blocks of shared prompt prefixes (default on)");
  cmd->add_option("--max-queue-len", o.max_queue_len, "Samples queued or running before new requests get 503")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  cmd->add_option("--max-n", o.max_n, "Largest n (samples per request)")->check(CLI::Range(1, 1024));
  cmd->add_option("--api-key", o.api_keys,
                  "API key clients must send as 'Authorization: Bearer KEY' (repeatable)");
  cmd->add_option("--api-key-file", o.api_key_file, "File of API keys, one 'KEY' or 'NAME KEY' per line");
  cmd->add_option("--max-request-bytes", o.max_request_bytes, "Largest request body (413 beyond)")
      ->check(CLI::Range(uint64_t{1024}, uint64_t{1} << 34));
  cmd->add_option("--max-connections", o.max_connections, "Open connections before new ones get 503")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--header-timeout", o.header_timeout_s, "Seconds for a request header to arrive")
      ->check(CLI::Range(0.01, 3600.0));
  cmd->add_option("--body-timeout", o.body_timeout_s, "Seconds for a request body to arrive")
      ->check(CLI::Range(0.01, 3600.0));
  cmd->add_option("--keep-alive-timeout", o.keep_alive_timeout_s,
                  "Seconds a keep-alive connection may wait for its next request")
      ->check(CLI::Range(0.01, 3600.0));
  cmd->add_option(
         "--write-timeout", o.write_timeout_s,
         "Seconds a write to a client may stall (it stopped reading) before the connection is closed "
         "and its request aborted")
      ->check(CLI::Range(0.01, 3600.0));
  cmd->add_option("--max-pending-bytes", o.max_pending_bytes,
                  "Bytes of a streamed answer queued for a client that is not reading before its generation "
                  "pauses")
      ->check(CLI::Range(uint64_t{4096}, uint64_t{1} << 30));
  cmd->add_option("--shutdown-timeout", o.shutdown_timeout_s,
                  "Seconds requests in flight get to finish after SIGTERM before they are aborted")
      ->check(CLI::Range(0.0, 86400.0));
  cmd->add_option("--access-log", o.access_log, "JSON-lines access log: a file, '-' for stdout, '' for none");
  cmd->add_option("--reasoning-parser", o.reasoning_parser,
                  "deepseek_r1: the chat answer's thinking (up to </think>) goes to reasoning_content")
      ->check(CLI::IsMember({"deepseek_r1"}));
  cmd->add_flag("--enable-auto-tool-choice", o.enable_auto_tool_choice,
                "Accepted for vLLM compatibility: tool calls are parsed whenever a request has tools");
  cmd->add_option("--tool-call-parser", o.tool_call_parser,
                  "deepseek_v3 (the default and only format): DeepSeek's tool-call markers become tool_calls")
      ->check(CLI::IsMember({"deepseek_v3"}));
  // Auth and transport.
  cmd->add_option(
      "--jwt-jwks-file", o.jwt_jwks_file,
      "JWKS file of the keys that sign accepted JWTs (RS256, ES256, HS256; re-read on SIGHUP or change)");
  cmd->add_option("--jwt-issuer", o.jwt_issuer, "Required JWT 'iss' (default: not checked)");
  cmd->add_option("--jwt-audience", o.jwt_audience, "Required JWT 'aud' (default: not checked)");
  cmd->add_option("--jwt-leeway", o.jwt_leeway_s, "Clock skew allowed for JWT exp/nbf/iat, seconds")
      ->check(CLI::Range(int64_t{0}, int64_t{3600}));
  cmd->add_option("--ssl-certfile", o.ssl_certfile,
                  "PEM certificate chain: serve HTTPS (with --ssl-keyfile)");
  cmd->add_option("--ssl-keyfile", o.ssl_keyfile, "PEM private key of --ssl-certfile (unencrypted)");
  cmd->add_option("--ssl-min-version", o.ssl_min_version, "Oldest TLS version accepted: 1.3 or 1.2")
      ->check(CLI::IsMember({"1.2", "1.3"}));
  cmd->add_option("--max-requests-per-user", o.max_requests_per_user,
                  "Generation requests one user may have in flight; 429 past it (0 = unlimited)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  // Operations.
  cmd->add_option("--config", o.config_file,
                  "YAML or JSON file of flags: keys are the flag names without '--' (max-num-seqs or "
                  "max_num_seqs), values scalars or lists; flags on the command line win");
  cmd->add_flag(
      "--log-requests", o.log_requests,
      "Write each generation request's prompt (at most 4 KiB) and sampling parameters to the access "
      "log (off: only ids, counts, status and latency)");
  cmd->add_flag(
      "--allow-client-chat-template", o.allow_client_chat_template,
      "Render a request's own chat_template and chat_template_kwargs (in the template sandbox, with "
      "its limits); off: they are ignored");
  cmd->final_callback([cmd, &o] {
    if (!o.config_file.empty()) apply_config_file(*cmd, o.config_file);
  });
  return cmd;
}

int run_serve(ServeOptions o) {
  const bool embedded = o.model_dir.empty();
  if (embedded) o.model_dir = embedded_model_dir();
  if (o.served_model_names.empty()) {
    o.served_model_names.push_back(embedded ? fs::path(o.model_dir).filename().string() : o.model_dir);
  }
  // Diagnostics go to stderr, so that stdout carries only the access log.
  spdlog::set_default_logger(spdlog::stderr_color_mt("deepserve"));
  // Auth and TLS are checked before the model loads: a bad file is reported at once.
  server::AuthOptions auth_options;
  auth_options.api_keys = o.api_keys;
  auth_options.api_key_file = o.api_key_file;
  auth_options.jwks_file = o.jwt_jwks_file;
  auth_options.jwt.issuer = o.jwt_issuer;
  auth_options.jwt.audience = o.jwt_audience;
  auth_options.jwt.leeway_s = o.jwt_leeway_s;
  auto auth = std::make_shared<server::Auth>(std::move(auth_options));
  std::optional<server::TlsConfig> tls;
  if (!o.ssl_certfile.empty() || !o.ssl_keyfile.empty()) {
    tls.emplace();
    tls->certfile = o.ssl_certfile;
    tls->keyfile = o.ssl_keyfile;
    tls->min_version = o.ssl_min_version == "1.2" ? 12 : 13;
    (void)server::make_tls_context(*tls);
  }
  std::unique_ptr<server::AccessLog> access_log;
  if (!o.access_log.empty()) access_log = std::make_unique<server::AccessLog>(o.access_log);

  // SIGTERM, SIGINT (and SIGHUP: reload) are taken by sigwait below: block them before any thread starts, so
  // that every thread inherits the mask and none of them is interrupted.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  signal(SIGHUP, SIG_DFL);  // under nohup it is ignored, and an ignored signal never reaches sigwait
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  LoadedModel loaded = load_runner(o.model_dir, o.device, o.dtype, o.threads, o.parallel, /*progress=*/false);
  ModelRunner* model = loaded.runner;
  const fs::path tokenizer_dir = o.tokenizer_dir.empty() ? fs::path(o.model_dir) : fs::path(o.tokenizer_dir);
  // The tokenizer and chat template, when the directory has them: text prompts and chat need them.
  std::optional<PromptEncoder> encoder;
  if (fs::exists(tokenizer_dir / "tokenizer.json")) {
    encoder.emplace(PromptEncoder::from_model_dir(tokenizer_dir));
  } else if (!o.tokenizer_dir.empty()) {
    throw InvalidArgument(fmt::format("--tokenizer: {} has no tokenizer.json", tokenizer_dir.string()));
  }
  const tokenizer::Tokenizer* tokenizer = encoder ? &encoder->tokenizer() : nullptr;
  Engine engine(*model, engine_config(o, *model), tokenizer);
  if (engine.config().cuda_graphs)
    std::fprintf(stderr, "deepserve: %s\n", engine.decode_graphs().line().c_str());
  if (o.enforce_eager && o.device != "cuda")
    std::fprintf(stderr, "deepserve: --enforce-eager has no effect on --device %s (graphs are CUDA only)\n",
                 o.device.c_str());

  server::ApiConfig api;
  api.served_model_names = o.served_model_names;
  api.model_path = o.model_dir;
  api.max_model_len = engine.config().max_model_len;
  api.vocab_size = model->config().vocab_size;
  api.max_n = o.max_n;
  api.reasoning_parser = o.reasoning_parser;
  api.log_requests = o.log_requests;
  api.allow_client_chat_template = o.allow_client_chat_template;
  server::HttpServerConfig http;
  http.host = o.host;
  http.port = static_cast<uint16_t>(o.port);
  http.io_threads = o.io_threads;
  http.max_request_bytes = o.max_request_bytes;
  http.max_connections = o.max_connections;
  http.header_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.header_timeout_s * 1000));
  http.body_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.body_timeout_s * 1000));
  http.keep_alive_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.keep_alive_timeout_s * 1000));
  http.write_timeout = std::chrono::milliseconds(static_cast<int64_t>(o.write_timeout_s * 1000));
  http.max_pending_bytes = o.max_pending_bytes;
  http.tls = tls;
  // GPU utilization and memory in /metrics, when NVML is there (declared first: it outlives the server).
  std::optional<server::GpuMonitor> gpu_monitor;
  if (o.device == "cuda") {
    gpu_monitor.emplace();
    if (!gpu_monitor->available()) spdlog::warn("GPU metrics are off: {}", gpu_monitor->error());
  }
  server::ApiServer server(
      engine, tokenizer, encoder ? server::make_chat_renderer(*encoder) : server::ChatRenderer(), api, http);
  server.set_auth(auth);
  server.set_max_requests_per_user(o.max_requests_per_user);
  server.set_access_log(access_log.get());
  if (gpu_monitor && gpu_monitor->available()) server.set_gpu_monitor(&*gpu_monitor);
  engine.start();
  server.start();

  const std::string base = fmt::format("{}://{}:{}", tls ? "https" : "http",
                                       o.host == "0.0.0.0" ? "127.0.0.1" : o.host, server.port());
  std::fprintf(stderr, "deepserve: serving %s as '%s' on the %s, max_model_len %lld, %s\n",
               o.model_dir.c_str(), o.served_model_names.front().c_str(), o.device == "cuda" ? "GPU" : "CPU",
               static_cast<long long>(api.max_model_len),
               !encoder                       ? "token ids only (no tokenizer.json)"
               : encoder->has_chat_template() ? "with its tokenizer and chat template"
                                              : "with its tokenizer (no chat template)");
  std::fprintf(stderr, "deepserve: listening on %s\n", base.c_str());
  std::fprintf(
      stderr, "try: %s\n",
      curl_example(base, o.served_model_names.front(), tokenizer != nullptr, auth->enabled(), tls.has_value())
          .c_str());
  if (tls) std::fprintf(stderr, "(-k skips certificate verification: for a self-signed certificate only)\n");
  std::fflush(stderr);

  // Until SIGTERM / SIGINT, or until the engine fails: then the requests in flight have been ended with an
  // error, they are answered, and the process exits non-zero so that a supervisor restarts it.
  int signal_number = 0;
  const timespec poll_interval{0, 100'000'000};
  for (;;) {
    signal_number = 0;
    while (signal_number <= 0 && !engine.dead())
      signal_number = sigtimedwait(&signals, nullptr, &poll_interval);
    if (engine.dead()) {
      std::fprintf(stderr, "deepserve: the engine failed (%s); exiting so that a supervisor restarts it\n",
                   engine.failure().c_str());
      std::fflush(stderr);
      (void)server.drain(std::chrono::milliseconds(static_cast<int64_t>(o.shutdown_timeout_s * 1000)));
      server.stop();
      engine.stop();
      return 1;
    }
    if (signal_number != SIGHUP) break;
    std::fprintf(stderr, "deepserve: SIGHUP: reloading keys, JWKS and certificate\n");
    std::fflush(stderr);
    (void)server.reload();
  }
  std::fprintf(stderr, "deepserve: %s: shutting down (in-flight requests get %.1f s)\n",
               signal_number == SIGTERM ? "SIGTERM" : "SIGINT", o.shutdown_timeout_s);
  const size_t aborted =
      server.drain(std::chrono::milliseconds(static_cast<int64_t>(o.shutdown_timeout_s * 1000)));
  server.stop();
  engine.stop();
  std::fprintf(stderr, "deepserve: stopped (%zu request(s) aborted)\n", aborted);
  return 0;
}

}  // namespace ds::cli
