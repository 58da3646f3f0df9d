#include "cli/generate.h"

#include <nlohmann/json.hpp>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "backend/cpu/cpu_backend.h"
#ifdef DEEPSERVE_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "engine/offline.h"
#include "model/deepseek.h"
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

// Reads every page once, showing bytes and GB/s on a terminal; silent otherwise.
void prefetch_with_progress(const Checkpoint& checkpoint) {
  const bool tty = isatty(STDERR_FILENO) != 0;
  const auto t0 = std::chrono::steady_clock::now();
  checkpoint.prefetch([&](uint64_t done, uint64_t total) {
    if (!tty) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "\rloading %s: %.2f / %.2f GB (%.2f GB/s)", checkpoint.dir().filename().c_str(),
                 static_cast<double>(done) / 1e9, static_cast<double>(total) / 1e9,
                 s > 0 ? static_cast<double>(done) / 1e9 / s : 0.0);
    if (done == total) std::fprintf(stderr, "\n");
  });
}

std::unique_ptr<Backend> make_backend(const GenerateOptions& o) {
  if (o.device == "cuda") {
#ifdef DEEPSERVE_HAVE_CUDA
    return std::make_unique<CudaBackend>();
#else
    throw InvalidArgument(
        "--device cuda: this build has no CUDA backend (configure with -DDEEPSERVE_CUDA=ON where nvcc is "
        "installed), use --device cpu");
#endif
  }
  return std::make_unique<CpuBackend>(o.threads);
}

}  // namespace

CLI::App* add_generate_command(CLI::App& app, GenerateOptions& o) {
  CLI::App* cmd = app.add_subcommand("generate", "Generate a continuation of a prompt and stream it to stdout");
  cmd->add_option("--model", o.model_dir, "Checkpoint directory (HuggingFace layout)")->required();
  auto* prompt = cmd->add_option("--prompt", o.prompt, "Prompt text (needs the model's tokenizer)");
  auto* ids = cmd->add_option("--prompt-ids", o.prompt_ids, "Prompt as token ids, e.g. 1,2,3");
  prompt->excludes(ids);
  cmd->add_option("--max-tokens", o.max_tokens, "Tokens to generate")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--temperature", o.temperature, "0 = greedy")->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-p", o.top_p, "Nucleus sampling mass in (0, 1]");
  cmd->add_option("--seed", o.seed, "Random seed for sampling");
  cmd->add_option("--device", o.device, "cpu or cuda (one GPU)")->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--threads", o.threads, "CPU threads (0 = all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--ignore-eos", o.ignore_eos, "Keep generating past the end-of-sequence token");
  cmd->add_flag("--json", o.json, "Print {prompt_ids, token_ids, text} as JSON at the end");
  return cmd;
}

int run_generate(const GenerateOptions& o) {
  DS_REQUIRE(!o.prompt.empty() || !o.prompt_ids.empty(), InvalidArgument, "give --prompt TEXT or --prompt-ids 1,2,3");
  DS_REQUIRE(o.prompt.empty(), InvalidArgument,
             "--prompt needs the tokenizer, which this build does not have yet; pass token ids with --prompt-ids");
  const std::vector<int32_t> prompt_ids = parse_prompt_ids(o.prompt_ids);

  SamplingParams params;
  params.temperature = o.temperature;
  params.top_p = o.top_p;
  params.seed = o.seed;
  params.max_tokens = o.max_tokens;
  params.ignore_eos = o.ignore_eos;
  params.validate();

  const std::unique_ptr<Backend> backend = make_backend(o);
  auto model = DeepseekModel::load(o.model_dir, *backend);
  validate_prompt(model->config(), prompt_ids, params.max_tokens);
  prefetch_with_progress(model->checkpoint());

  // Without a tokenizer the stream is the token ids themselves.
  const GenerateResult result = generate(*model, prompt_ids, params, [&](const SampledToken& t) {
    if (o.json) return;
    std::printf("%d ", t.token);
    std::fflush(stdout);
  });
  if (o.json) {
    const nlohmann::json out = {{"prompt_ids", prompt_ids},
                                {"token_ids", result.token_ids},
                                {"text", ""},
                                {"finish_reason", result.finish_reason}};
    std::printf("%s\n", out.dump().c_str());
  } else {
    std::printf("\n");
  }
  return 0;
}

}  // namespace ds::cli
