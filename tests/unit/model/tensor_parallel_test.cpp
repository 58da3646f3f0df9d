// Tensor parallelism on CPU ranks (threads of one process, HostGroup): every fixture at TP 2 and 4 (where its
// heads divide) reproduces TP 1: prompt log-probs within 1e-4 and the same greedy tokens through the engine.
// Sums of the ranks' partial outputs run in another order than one rank's single dot product, so the logits
// agree to fp32 rounding, not bit for bit.
#include <gtest/gtest.h>

#include <chrono>
#include <numeric>

#include "backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "engine/offline.h"
#include "fixture.h"
#include "model/deepseek.h"
#include "model/tensor_parallel_runner.h"

namespace ds {
namespace {

using testing::fixture_dir;
using testing::load_expected;
using testing::log_softmax;
using testing::make_batch;
using testing::one_pass_logits;
using testing::SeqStep;

struct Ranks {
  std::vector<std::unique_ptr<CpuBackend>> backends;
  std::unique_ptr<TensorParallelRunner> runner;
};

Ranks make_tp(const std::string& fixture, int tp, bool ep = false) {
  Ranks r;
  std::vector<Backend*> ptrs;
  for (int i = 0; i < tp; ++i) {
    r.backends.push_back(std::make_unique<CpuBackend>(1));
    ptrs.push_back(r.backends.back().get());
  }
  r.runner = std::make_unique<TensorParallelRunner>(
      fixture_dir(fixture), ptrs, HostGroup::make(tp, std::chrono::milliseconds(30000)), ep);
  return r;
}

std::vector<int32_t> greedy(ModelRunner& m, const std::vector<int32_t>& ids, int64_t steps) {
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = steps;
  p.ignore_eos = true;
  return generate(m, ids, p).token_ids;
}

class TensorParallelFixture : public ::testing::TestWithParam<std::tuple<std::string, int, bool>> {};

TEST_P(TensorParallelFixture, ReproducesOneRank) {
  const auto& [fixture, tp, ep] = GetParam();
  CpuBackend cpu{1};
  const auto one = DeepseekModel::load(fixture_dir(fixture), cpu);
  one->allocate_kv_cache(64, 16);
  Ranks ranks = make_tp(fixture, tp, ep);
  ranks.runner->allocate_kv_cache(64, 16);
  const nlohmann::json expected = load_expected(fixture);
  const auto& prompts = expected.contains("prompts") ? expected["prompts"] : expected["cases"];
  const int64_t vocab = one->config().vocab_size;
  double worst = 0;
  int compared_tokens = 0;
  for (const auto& prompt : prompts) {
    const auto ids = prompt["prompt_ids"].get<std::vector<int32_t>>();
    const auto a = one_pass_logits(*one, ids), b = one_pass_logits(*ranks.runner, ids);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      const auto la = log_softmax(a.data() + i * vocab, vocab), lb = log_softmax(b.data() + i * vocab, vocab);
      for (int64_t v = 0; v < vocab; ++v) worst = std::max(worst, std::fabs(la[v] - lb[v]));
    }
    const auto ga = greedy(*one, ids, 6), gb = greedy(*ranks.runner, ids, 6);
    EXPECT_EQ(ga, gb) << ids.size() << "-token prompt";
    compared_tokens += static_cast<int>(ga.size());
  }
  EXPECT_LT(worst, 1e-4) << fixture << " TP " << tp << (ep ? " EP" : "");
  std::printf("%s TP %d%s: worst |logprob - TP 1| over the vocabulary %.2e; %d greedy tokens equal\n",
              fixture.c_str(), tp, ep ? " + EP" : "", worst, compared_tokens);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TensorParallelFixture,
                         ::testing::Values(std::tuple{"deepseek_v3_tiny_bf16", 2, false},
                                           std::tuple{"deepseek_v3_tiny_bf16", 4, false},
                                           std::tuple{"deepseek_v3_tiny_fp8", 2, false},
                                           std::tuple{"deepseek_v3_tiny_fp8", 4, false},
                                           std::tuple{"deepseek_v2_tiny_bf16", 2, false},
                                           std::tuple{"deepseek_v2_tiny_bf16", 4, false},
                                           std::tuple{"deepseek_v3_tiny_chat", 2, false},
                                           std::tuple{"deepseek_v3_tiny_bf16", 2, true},
                                           std::tuple{"deepseek_v3_tiny_fp8", 4, true},
                                           std::tuple{"deepseek_v2_tiny_bf16", 2, true},
                                           std::tuple{"deepseek_v3_tiny_chat", 2, true}));

TEST(TensorParallel, ALayoutTheHeadsDoNotDivideIsRefusedWithTheNumbers) {
  try {
    (void)make_tp("deepseek_v3_tiny_chat", 4);
    FAIL() << "TP 4 of 2 heads loaded";
  } catch (const UserError& e) {
    EXPECT_STREQ(e.what(), "--tensor-parallel-size 4: num_attention_heads 2 is not divisible by it");
  }
}

// A rank whose backend faults mid-step (as a device error would) ends the whole group at once: the step
// fails on the caller with that rank's error, instead of the others waiting out --dist-timeout.
class FaultyCpuBackend : public CpuBackend {
 public:
  FaultyCpuBackend() : CpuBackend(1) {}
  void mla_attention(const MlaAttentionParams& p, const ForwardBatch& batch) override {
    if (armed) throw InternalError("injected fault in mla_attention");
    CpuBackend::mla_attention(p, batch);
  }
  bool armed = false;
};

TEST(TensorParallel, AFaultingRankEndsTheGroupAtOnceNamingIt) {
  CpuBackend healthy{1};
  FaultyCpuBackend faulty;
  std::vector<Backend*> ranks = {&healthy, &faulty};
  TensorParallelRunner runner(fixture_dir("deepseek_v3_tiny_bf16"), ranks,
                              HostGroup::make(2, std::chrono::milliseconds(30000)));
  runner.allocate_kv_cache(8, 16);
  (void)one_pass_logits(runner, {5, 6, 7});
  faulty.armed = true;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    (void)one_pass_logits(runner, {5, 6, 7});
    FAIL() << "the step succeeded with a faulting rank";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("injected fault in mla_attention"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  // The group is dead: the next step fails too, naming the rank.
  faulty.armed = false;
  try {
    (void)one_pass_logits(runner, {5});
    FAIL() << "a dead group ran a step";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("rank 1 failed"), std::string::npos) << e.what();
  }
}

TEST(TensorParallel, TheEngineBatchesPreemptsAndCachesPrefixesUnderTp2) {
  // Three requests sharing a prefix, in a cache too small for all of them at once (preemption), with chunked
  // prefill: the tokens equal TP 1's through the same engine configuration.
  auto run = [](ModelRunner& m) {
    EngineConfig config;
    config.num_gpu_blocks = 3;  // the shared prefix block and two more: one request waits or is preempted
    config.scheduler.max_num_batched_tokens = 16;
    Engine engine(m, config);
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < 3; ++i) {
      EngineRequest r;
      r.prompt_ids = {5,  6,  7,  8,  9,  10, 11, 12, 13,
                      14, 15, 16, 17, 18, 19, 20, 21, static_cast<int32_t>(30 + i)};
      r.params.temperature = 0;
      r.params.max_tokens = 12;
      r.params.ignore_eos = true;
      streams.push_back(engine.submit(std::move(r)));
    }
    std::vector<std::vector<int32_t>> out(3);
    for (int guard = 0; engine.has_work() && guard < 10000; ++guard) {
      (void)engine.step();
      for (size_t i = 0; i < 3; ++i) {
        RequestDelta d;
        while (streams[i]->try_next(d)) {
          EXPECT_EQ(d.error, "");
          out[i].insert(out[i].end(), d.token_ids.begin(), d.token_ids.end());
        }
      }
    }
    return out;
  };
  CpuBackend cpu{1};
  const auto one = DeepseekModel::load(fixture_dir("deepseek_v3_tiny_bf16"), cpu);
  Ranks ranks = make_tp("deepseek_v3_tiny_bf16", 2);
  const auto a = run(*one), b = run(*ranks.runner);
  EXPECT_EQ(a, b);
  for (const auto& tokens : a) EXPECT_EQ(tokens.size(), 12u);
}

}  // namespace
}  // namespace ds
