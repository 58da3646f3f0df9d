#include "cli/generate.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <memory>

#include "cli/load_model.h"
#include "engine/engine.h"
#include "engine/memory_plan.h"
#include "engine/request_params.h"
#include "model/deepseek.h"
#include "tokenizer/prompt.h"
#include "util/check.h"

namespace ds::cli {
namespace {

std::vector<int32_t> parse_prompt_ids(const std::string& text) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    DS_REQUIRE(used > 0 && used == item.size() && v >= 0 && v <= INT32_MAX, InvalidArgument,
               "--prompt-ids: '{}' is not a token id (expected comma-separated non-negative integers, e.g. 1,2,3)",
               item);
    ids.push_back(static_cast<int32_t>(v));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return ids;
}

EngineConfig engine_config(const GenerateOptions& o, ModelRunner& model, int64_t min_tokens_needed) {
  EngineConfig c;
  c.block_size = o.block_size;
  c.scheduler.max_num_seqs = o.max_num_seqs;
  c.scheduler.max_num_batched_tokens = o.max_num_batched_tokens;
  c.cuda_graphs = o.device == "cuda" && !o.enforce_eager;
  const int64_t needed_blocks = (min_tokens_needed + o.block_size - 1) / o.block_size;
  if (o.kv_cache_gib == 0 && model.backend().device_memory()) {
    KvCachePlanInput in{o.gpu_memory_utilization, o.block_size, o.max_num_batched_tokens, o.max_num_seqs,
                        model.config().max_position_embeddings, needed_blocks};
    if (c.cuda_graphs) in.decode_graph_max_batch = decode_graph_sizes(o.max_num_seqs).back();
    const KvCachePlan plan = plan_kv_cache(model, in);
    std::fprintf(stderr, "deepserve: %s\n", plan.summary.c_str());
    c.num_gpu_blocks = plan.num_blocks;
    return c;
  }
  const double gib = o.kv_cache_gib > 0 ? o.kv_cache_gib : 1.0;
  const int64_t budget_blocks = static_cast<int64_t>(gib * (1LL << 30)) / model.kv_block_bytes(o.block_size);
  DS_REQUIRE(budget_blocks >= needed_blocks, InvalidArgument,
             "--kv-cache-gib {} holds {} blocks of {} tokens; the longest request needs {} (raise --kv-cache-gib)",
             gib, budget_blocks, o.block_size, needed_blocks);
  c.num_gpu_blocks = budget_blocks;
  return c;
}

// The decode-graph capture's line, or why --enforce-eager did nothing.
void report_graphs(const GenerateOptions& o, const Engine& engine) {
  if (engine.config().cuda_graphs) std::fprintf(stderr, "deepserve: %s\n", engine.decode_graphs().line().c_str());
  if (o.enforce_eager && o.device != "cuda")
    std::fprintf(stderr, "deepserve: --enforce-eager has no effect on --device %s (graphs are CUDA only)\n",
                 o.device.c_str());
}

int run_single(const GenerateOptions& o, ModelRunner& model, const PromptEncoder* encoder) {
  EngineRequest request;
  if (!o.prompt_ids.empty()) {
    request.prompt_ids = parse_prompt_ids(o.prompt_ids);
  } else if (!o.chat_file.empty()) {
    ChatTemplateInputs inputs = PromptEncoder::read_chat_file(o.chat_file);
    inputs.add_generation_prompt = true;
    request.prompt_ids = encoder->encode_chat(inputs);
  } else {
    request.prompt_ids = encoder->encode_text(o.prompt);
  }
  request.params.temperature = o.temperature;
  request.params.top_p = o.top_p;
  request.params.top_k = o.top_k;
  if (o.seed_given) request.params.seed = o.seed;
  request.params.max_tokens = o.max_tokens;
  request.params.ignore_eos = o.ignore_eos;
  Engine engine(model, engine_config(o, model, static_cast<int64_t>(request.prompt_ids.size()) + o.max_tokens),
                encoder != nullptr ? &encoder->tokenizer() : nullptr);
  report_graphs(o, engine);
  const std::vector<int32_t> prompt_ids = request.prompt_ids;
  std::string text;
  auto stream = engine.submit(std::move(request));
  std::vector<int32_t> tokens;
  FinishReason finish = FinishReason::kNone;
  RequestDelta delta;
  while (!stream->finished()) {
    (void)engine.step();
    while (stream->try_next(delta)) {
      for (int32_t t : delta.token_ids) {
        tokens.push_back(t);
        // Without a tokenizer the stream is the token ids themselves.
        if (!o.json && encoder == nullptr) {
          std::printf("%d ", t);
          std::fflush(stdout);
        }
      }
      text += delta.text;
      if (!o.json && encoder != nullptr) {
        std::fwrite(delta.text.data(), 1, delta.text.size(), stdout);
        std::fflush(stdout);
      }
      if (delta.finish_reason != FinishReason::kNone) finish = delta.finish_reason;
    }
  }
  if (o.json) {
    const nlohmann::json out = {
        {"prompt_ids", prompt_ids}, {"token_ids", tokens}, {"text", text}, {"finish_reason", to_string(finish)}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("\n");
  }
  return 0;
}

// One input line of --batch: its result is printed in input order at the end.
struct BatchLine {
  nlohmann::json id;
  std::vector<int32_t> prompt_ids;
  std::shared_ptr<RequestStream> stream;
  std::map<int32_t, std::vector<int32_t>> tokens;
  std::map<int32_t, std::string> text;
  std::map<int32_t, std::string> finish;
  std::string error;
};

int run_batch(const GenerateOptions& o, ModelRunner& model, const PromptEncoder* encoder) {
  std::ifstream in(o.batch_file);
  DS_REQUIRE(in.good(), InvalidArgument, "--batch: cannot open {}", o.batch_file);
  std::vector<BatchLine> lines;
  std::string text;
  int64_t longest = 1;
  std::vector<std::pair<size_t, EngineRequest>> requests;
  for (size_t line_no = 1; std::getline(in, text); ++line_no) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    BatchLine line;
    line.id = static_cast<int64_t>(lines.size());
    try {
      const auto body = nlohmann::json::parse(text);
      if (body.is_object() && body.contains("id")) line.id = body["id"];
      std::vector<std::string> unknown;
      EngineRequest r;
      r.params = parse_sampling_params(body, &unknown);
      for (const auto& key : unknown)
        std::fprintf(stderr, "warning: %s line %zu: unknown field '%s' ignored\n", o.batch_file.c_str(), line_no,
                     key.c_str());
      if (body.contains("messages")) {
        if (encoder == nullptr) throw InvalidArgument("messages", "'messages' needs the model's tokenizer and chat template");
        if (!body["messages"].is_array()) throw InvalidArgument("messages", "'messages' must be a list");
        ChatTemplateInputs inputs;
        inputs.messages = nlohmann::ordered_json::parse(body["messages"].dump());
        inputs.add_generation_prompt = true;
        r.prompt_ids = encoder->encode_chat(inputs);
      } else if (!body.contains("prompt")) {
        throw InvalidArgument("prompt", "each line needs 'prompt' (text or token ids) or 'messages'");
      } else if (body["prompt"].is_string()) {
        if (encoder == nullptr) throw InvalidArgument("prompt", "a text 'prompt' needs the model's tokenizer; give token ids");
        r.prompt_ids = encoder->encode_text(body["prompt"].get<std::string>());
      } else {
        r.prompt_ids = parse_token_ids(body["prompt"], "prompt");
      }
      line.prompt_ids = r.prompt_ids;
      longest = std::max<int64_t>(longest, static_cast<int64_t>(r.prompt_ids.size()) + r.params.max_tokens);
      requests.emplace_back(lines.size(), std::move(r));
    } catch (const nlohmann::json::exception& e) {
      line.error = fmt::format("line {}: not valid JSON: {}", line_no, e.what());
    } catch (const UserError& e) {
      line.error = fmt::format("line {}: {}", line_no, e.what());
    }
    lines.push_back(std::move(line));
  }
  Engine engine(model, engine_config(o, model, longest), encoder != nullptr ? &encoder->tokenizer() : nullptr);
  report_graphs(o, engine);
  for (auto& [index, request] : requests) {
    try {
      lines[index].stream = engine.submit(std::move(request));
    } catch (const UserError& e) {
      lines[index].error = e.what();
    }
  }
  RequestDelta delta;
  while (engine.has_work()) {
    (void)engine.step();
    for (auto& line : lines) {
      if (!line.stream) continue;
      while (line.stream->try_next(delta)) {
        auto& t = line.tokens[delta.index];
        t.insert(t.end(), delta.token_ids.begin(), delta.token_ids.end());
        line.text[delta.index] += delta.text;
        if (delta.finish_reason != FinishReason::kNone) line.finish[delta.index] = to_string(delta.finish_reason);
      }
    }
  }
  for (const auto& line : lines) {
    nlohmann::json out = {{"id", line.id}};
    if (!line.error.empty()) {
      out["error"] = line.error;
    } else {
      auto sample = [&](int32_t i) {
        return nlohmann::json{{"token_ids", line.tokens.count(i) ? line.tokens.at(i) : std::vector<int32_t>{}},
                              {"text", line.text.count(i) ? line.text.at(i) : ""},
                              {"finish_reason", line.finish.count(i) ? line.finish.at(i) : "abort"}};
      };
      out["prompt_ids"] = line.prompt_ids;
      if (line.finish.size() <= 1) {
        out.update(sample(0));
      } else {
        out["outputs"] = nlohmann::json::array();
        for (const auto& [i, reason] : line.finish) out["outputs"].push_back(sample(i));
      }
    }
    std::printf("%s\n", out.dump().c_str());
  }
  return 0;
}

}  // namespace

CLI::App* add_generate_command(CLI::App& app, GenerateOptions& o) {
  CLI::App* cmd = app.add_subcommand("generate", "Generate continuations and print them to stdout");
  cmd->add_option("--model", o.model_dir, "Checkpoint directory (HuggingFace layout)")->required();
  auto* prompt = cmd->add_option("--prompt", o.prompt, "Prompt text (needs the model's tokenizer)");
  auto* ids = cmd->add_option("--prompt-ids", o.prompt_ids, "Prompt as token ids, e.g. 1,2,3");
  auto* chat = cmd->add_option("--chat", o.chat_file, "Conversation file (JSON list of messages), chat-templated");
  auto* batch = cmd->add_option("--batch", o.batch_file, "JSON-lines file, one OpenAI-style request body per line");
  prompt->excludes(ids)->excludes(batch)->excludes(chat);
  ids->excludes(batch)->excludes(chat);
  chat->excludes(batch);
  cmd->add_option("--max-tokens", o.max_tokens, "Tokens to generate")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--temperature", o.temperature, "0 = greedy")->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-p", o.top_p, "Nucleus sampling mass in (0, 1]");
  cmd->add_option("--top-k", o.top_k, "Sample among the k most likely tokens (-1: all)");
  auto* seed = cmd->add_option("--seed", o.seed, "Random seed for sampling");
  seed->each([&o](const std::string&) { o.seed_given = true; });
  cmd->add_option("--device", o.device, "cpu")->check(CLI::IsMember({"cpu", "cuda"}));
  add_parallel_flags(*cmd, o.parallel);
  cmd->add_option("--dtype", o.dtype,
                  "Activation dtype: auto (bfloat16 on cuda, float32 on cpu), bfloat16 (cuda) or float32 (cpu)")
      ->check(CLI::IsMember({"auto", "bfloat16", "float32", "float", "float16", "half"}));
  cmd->add_option("--threads", o.threads, "CPU threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--ignore-eos", o.ignore_eos, "Keep generating past the end-of-sequence token");
  cmd->add_flag("--json", o.json, "Print {prompt_ids, token_ids, text, finish_reason} as JSON at the end");
  cmd->add_flag("--enforce-eager", o.enforce_eager,
               "No CUDA graphs: launch every op of every step from the host (decode steps are otherwise "
               "replayed from graphs captured at start-up)");
  cmd->add_option("--max-num-seqs", o.max_num_seqs, "Sequences per step")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--max-num-batched-tokens", o.max_num_batched_tokens, "Tokens per step")
      ->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--block-size", o.block_size, "Tokens per KV block")->check(CLI::Range(1, 1024));
  cmd->add_option("--kv-cache-gib", o.kv_cache_gib,
                  "Memory for the KV cache, GiB (default: 1 on the CPU; on a GPU, from --gpu-memory-utilization)")
      ->check(CLI::Range(0.001, 4096.0));
  cmd->add_option("--gpu-memory-utilization", o.gpu_memory_utilization,
                  "Share of the GPU's memory for weights, activations and the KV cache (the KV cache gets the rest)")
      ->check(CLI::Range(0.01, 1.0));
  return cmd;
}

int run_generate(const GenerateOptions& o) {
  DS_REQUIRE(!o.prompt.empty() || !o.prompt_ids.empty() || !o.batch_file.empty() || !o.chat_file.empty(),
             InvalidArgument, "give --prompt TEXT, --prompt-ids 1,2,3, --chat FILE.json or --batch FILE.jsonl");
  // Flag values are checked before the (possibly long) load.
  SamplingParams flags;
  flags.temperature = o.temperature;
  flags.top_p = o.top_p;
  flags.top_k = o.top_k;
  flags.max_tokens = o.max_tokens;
  flags.validate();
  if (!o.prompt_ids.empty()) (void)parse_prompt_ids(o.prompt_ids);

  LoadedModel loaded = load_runner(o.model_dir, o.device, o.dtype, o.threads, o.parallel, /*progress=*/true);
  ModelRunner* model = loaded.runner;
  // The model directory's tokenizer, when it has one: text prompts, chat files and text output.
  std::optional<PromptEncoder> encoder;
  if (std::filesystem::exists(std::filesystem::path(o.model_dir) / "tokenizer.json")) {
    encoder = PromptEncoder::from_model_dir(o.model_dir);
  } else {
    DS_REQUIRE(o.prompt.empty() && o.chat_file.empty(), InvalidArgument,
               "{} has no tokenizer.json: --prompt and --chat need the model's tokenizer; use --prompt-ids",
               o.model_dir);
  }
  const PromptEncoder* enc = encoder ? &*encoder : nullptr;
  return o.batch_file.empty() ? run_single(o, *model, enc) : run_batch(o, *model, enc);
}

}  // namespace ds::cli
