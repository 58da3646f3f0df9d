// Tokenizer throughput on one core: encode of mixed English / Chinese / Japanese / code text, decode, and
// streaming detokenization.
//
//   ./build/bench/bench_tokenizer                      # the fixture tokenizer (tests/fixtures/tokenizer)
//   DS_BENCH_TOKENIZER=/models/DeepSeek-V3 ./build/bench/bench_tokenizer   # a checkpoint dir or
//   tokenizer.json
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"

namespace {

using ds::tokenizer::IncrementalDetokenizer;
using ds::tokenizer::TokenId;
using ds::tokenizer::Tokenizer;

const Tokenizer* load_tokenizer() {
  static std::unique_ptr<Tokenizer> tokenizer = [] {
    std::filesystem::path path = std::filesystem::path(DS_FIXTURES_DIR) / "tokenizer" / "tokenizer.json";
    if (const char* env = std::getenv("DS_BENCH_TOKENIZER")) path = env;
    if (!std::filesystem::exists(path)) return std::unique_ptr<Tokenizer>();
    return std::make_unique<Tokenizer>(std::filesystem::is_directory(path) ? Tokenizer::from_dir(path)
                                                                           : Tokenizer::from_file(path));
  }();
  return tokenizer.get();
}

// About 1 MiB of text in the proportions of a chat workload: prose, Chinese and Japanese, code, numbers.
// Sentences are drawn from word lists so that pieces repeat as in real text, without being one block
// copied over and over.
const std::string& corpus() {
  static const std::string text = [] {
    const std::vector<std::string> english = {
        "the",     "model",       "server",    "request",  "attention", "latent",      "expert",
        "routing", "token",       "batch",     "memory",   "cache",     "kernel",      "throughput",
        "of",      "and",         "to",        "in",       "is",        "that",        "we",
        "with",    "performance", "scheduler", "decode",   "prefill",   "GPU",         "however",
        "because", "between",     "results",   "training", "inference", "compression", "DeepSeek"};
    const std::vector<std::string> chinese = {"我们", "模型", "服务", "请求",   "数据", "计算",
                                              "语言", "推理", "专家", "注意力", "缓存", "中国",
                                              "世界", "学习", "问题", "结果"};
    const std::vector<std::string> japanese = {"これは", "モデル", "です", "サーバー",
                                               "東京",   "データ", "ます", "日本語"};
    const std::vector<std::string> code = {
        "for (int i = 0; i < n; ++i) {\n  sum += a[i] * b[i];\n}\n",
        "def forward(self, x):\n    h = self.attn(self.norm(x))\n    return x + self.mlp(h)\n",
        "if (err != nullptr) {\n    return fmt::format(\"{}: {}\", path, err);\n}\n",
        "{\"model\": \"deepseek-v3\", \"max_tokens\": 512, \"temperature\": 0.6}\n"};
    std::mt19937 rng(42);
    auto pick = [&](const std::vector<std::string>& words) { return words[rng() % words.size()]; };
    std::string out;
    while (out.size() < (1u << 20)) {
      switch (rng() % 8) {
        case 0:
        case 1:
        case 2: {
          const int n = 8 + static_cast<int>(rng() % 20);
          for (int i = 0; i < n; ++i) {
            if (i > 0) out += ' ';
            out += pick(english);
          }
          out += ". ";
          break;
        }
        case 3:
        case 4: {
          const int n = 6 + static_cast<int>(rng() % 16);
          for (int i = 0; i < n; ++i) out += pick(chinese);
          out += "。";
          break;
        }
        case 5:
          for (int i = 0; i < 6; ++i) out += pick(japanese);
          out += "。\n";
          break;
        case 6:
          out += pick(code);
          break;
        default:
          out += std::to_string(rng() % 100000) + ", " + std::to_string(rng()) + ".\n\n";
      }
    }
    return out;
  }();
  return text;
}

void BM_Encode(benchmark::State& state) {
  const Tokenizer* tok = load_tokenizer();
  if (tok == nullptr) {
    state.SkipWithError("no tokenizer: generate the fixtures or set DS_BENCH_TOKENIZER");
    return;
  }
  const std::string& text = corpus();
  size_t tokens = 0;
  for (auto _ : state) {
    const std::vector<TokenId> ids = tok->encode(text, false);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(tokens);
  state.counters["bytes_per_token"] = static_cast<double>(text.size()) / static_cast<double>(tokens);
}
BENCHMARK(BM_Encode)->Unit(benchmark::kMillisecond);

// Short chat-sized prompts, one encode call each (the per-request overhead).
void BM_EncodePrompt(benchmark::State& state) {
  const Tokenizer* tok = load_tokenizer();
  if (tok == nullptr) {
    state.SkipWithError("no tokenizer");
    return;
  }
  const std::string text = corpus().substr(4096, 2000);
  for (auto _ : state) benchmark::DoNotOptimize(tok->encode(text, true));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_EncodePrompt)->Unit(benchmark::kMicrosecond);

void BM_Decode(benchmark::State& state) {
  const Tokenizer* tok = load_tokenizer();
  if (tok == nullptr) {
    state.SkipWithError("no tokenizer");
    return;
  }
  const std::vector<TokenId> ids = tok->encode(corpus(), false);
  for (auto _ : state) benchmark::DoNotOptimize(tok->decode(ids));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ids.size()));
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);

void BM_DetokenizeStream(benchmark::State& state) {
  const Tokenizer* tok = load_tokenizer();
  if (tok == nullptr) {
    state.SkipWithError("no tokenizer");
    return;
  }
  const std::vector<TokenId> ids = tok->encode(corpus().substr(0, 1 << 16), false);
  for (auto _ : state) {
    IncrementalDetokenizer detok(*tok, true);
    for (const TokenId id : ids) benchmark::DoNotOptimize(detok.step(id));
    benchmark::DoNotOptimize(detok.finish());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ids.size()));
}
BENCHMARK(BM_DetokenizeStream)->Unit(benchmark::kMillisecond);

}  // namespace

// DS_BENCH_CORPUS_OUT=FILE writes the corpus so that a peer (tools/bench/hf_tokenizer_speed.py, HF
// `tokenizers`) can be timed on exactly the same text.
int main(int argc, char** argv) {
  if (const char* out = std::getenv("DS_BENCH_CORPUS_OUT")) {
    std::ofstream(out, std::ios::binary) << corpus();
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
