// `deepserve serve`: load a checkpoint, start the engine and the OpenAI-compatible HTTP server, and shut down
// gracefully on SIGTERM / SIGINT.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "cli/parallel_flags.h"

namespace ds::cli {

struct ServeOptions {
  std::string model_dir;      // empty: the embedded tiny fixture model
  std::string tokenizer_dir;  // empty: the model directory
  std::vector<std::string> served_model_names;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string device = "cpu";
  ParallelOptions parallel;  // --tensor-parallel-size, --dist-timeout
  std::string dtype = "auto";  // --dtype: the activations' dtype (make_backend checks it against the device)
  int threads = 0;
  int io_threads = 2;
  // Engine.
  int64_t max_model_len = 0;
  int64_t max_num_seqs = 256;
  int64_t max_num_batched_tokens = 2048;
  int32_t block_size = 16;
  bool enforce_eager = false;  // --enforce-eager: no CUDA graphs, every op launched from the host
  double kv_cache_gib = 0.0;   // 0: 1 GiB on the CPU; on a GPU, sized from gpu_memory_utilization
  double gpu_memory_utilization = 0.9;
  int64_t num_gpu_blocks_override = 0;
  double swap_space_gib = 0.0;
  bool enable_prefix_caching = true;
  int64_t max_queue_len = 1024;
  int64_t max_n = 16;
  // HTTP.
  std::vector<std::string> api_keys;
  std::string api_key_file;
  uint64_t max_request_bytes = 16ull << 20;
  int64_t max_connections = 1024;
  double header_timeout_s = 10.0;
  double body_timeout_s = 30.0;
  double keep_alive_timeout_s = 5.0;
  double write_timeout_s = 30.0;
  uint64_t max_pending_bytes = 1ull << 20;
  double shutdown_timeout_s = 30.0;
  std::string access_log = "-";
  // Reasoning and tool calls (docs/serve.md). Tool calls are parsed for every request with tools;
  // --enable-auto-tool-choice and --tool-call-parser deepseek_v3 are accepted as vLLM spells them.
  std::string reasoning_parser;  // "deepseek_r1", or empty for none
  bool enable_auto_tool_choice = false;
  std::string tool_call_parser;  // "deepseek_v3", or empty (the same: the only format there is)
  // Auth and transport: JWT, TLS, per-user limits (SIGHUP reloads the key file, the JWKS and the
  // certificate).
  std::string jwt_jwks_file;
  std::string jwt_issuer;
  std::string jwt_audience;
  int64_t jwt_leeway_s = 60;
  std::string ssl_keyfile;
  std::string ssl_certfile;
  std::string ssl_min_version = "1.3";
  int64_t max_requests_per_user = 0;
  // Operations.
  std::string config_file;                  // --config: flags from a YAML or JSON file; the command line wins
  bool log_requests = false;                // --log-requests: prompts and sampling params in the access log
  bool allow_client_chat_template = false;  // --allow-client-chat-template
};

CLI::App* add_serve_command(CLI::App& app, ServeOptions& options);
int run_serve(ServeOptions options);

}  // namespace ds::cli
