// The engine on the real tiny V2 checkpoint (CPU backend): batching, preemption, prefix caching and chunking
// must never change a request's tokens; the block accounting must hold after every step.
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "model/deepseek.h"
#include "engine/offline.h"

namespace ds {
namespace {

const std::string kModel = std::string(DS_FIXTURES_DIR) + "/deepseek_v2_tiny_bf16";

struct Collected {
  std::map<int32_t, std::vector<int32_t>> tokens;  // by sample index
  std::map<int32_t, FinishReason> finish;
};

void drain(RequestStream& stream, Collected& c) {
  RequestDelta d;
  while (stream.try_next(d)) {
    auto& t = c.tokens[d.index];
    t.insert(t.end(), d.token_ids.begin(), d.token_ids.end());
    if (d.finish_reason != FinishReason::kNone) c.finish[d.index] = d.finish_reason;
  }
}

class EngineTest : public ::testing::Test {
 protected:
  std::vector<int32_t> solo_greedy(const std::vector<int32_t>& prompt, int64_t max_tokens) {
    SamplingParams p;
    p.temperature = 0;
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    return generate(*solo_model_, prompt, p).token_ids;
  }
  static std::vector<int32_t> random_prompt(std::mt19937& rng, int len) {
    std::uniform_int_distribution<int32_t> tok(2, 1023);
    std::vector<int32_t> p(static_cast<size_t>(len));
    for (auto& t : p) t = tok(rng);
    return p;
  }
  static EngineRequest greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
    EngineRequest r;
    r.prompt_ids = std::move(prompt);
    r.params.temperature = 0;
    r.params.max_tokens = max_tokens;
    r.params.ignore_eos = true;
    return r;
  }
  // Steps until idle, checking the block invariants after every step.
  static void run_to_completion(Engine& engine) {
    for (int guard = 0; engine.has_work(); ++guard) {
      ASSERT_LT(guard, 100000);
      (void)engine.step();
      engine.check_invariants();
    }
  }

  CpuBackend backend_{2};
  std::unique_ptr<DeepseekModel> solo_model_ = DeepseekModel::load(kModel, backend_);
  std::unique_ptr<DeepseekModel> model_ = DeepseekModel::load(kModel, backend_);
};

TEST_F(EngineTest, SixtyFourMixedRequestsArrivingAtRandomStepsMatchTheirSoloGreedyTokens) {
  std::mt19937 rng(7);
  struct Case {
    std::vector<int32_t> prompt;
    int64_t max_tokens;
    std::shared_ptr<RequestStream> stream;
    Collected got;
  };
  std::vector<Case> cases(64);
  for (auto& c : cases) {
    c.prompt = random_prompt(rng, std::uniform_int_distribution<int>(1, 70)(rng));
    c.max_tokens = std::uniform_int_distribution<int>(1, 12)(rng);
  }
  EngineConfig config;
  config.num_gpu_blocks = 256;
  config.scheduler.max_num_batched_tokens = 96;  // long prompts span steps
  config.scheduler.max_num_seqs = 24;
  Engine engine(*model_, config);
  size_t next = 0;
  for (int step = 0; next < cases.size() || engine.has_work(); ++step) {
    ASSERT_LT(step, 10000);
    for (int k = std::uniform_int_distribution<int>(0, 3)(rng); k > 0 && next < cases.size(); --k, ++next)
      cases[next].stream = engine.submit(greedy(cases[next].prompt, cases[next].max_tokens));
    (void)engine.step();
    engine.check_invariants();
    for (auto& c : cases)
      if (c.stream) drain(*c.stream, c.got);
  }
  for (auto& c : cases) {
    EXPECT_EQ(c.got.tokens[0], solo_greedy(c.prompt, c.max_tokens)) << "prompt of " << c.prompt.size();
    EXPECT_EQ(c.got.finish[0], FinishReason::kLength);
  }
  EXPECT_DOUBLE_EQ(engine.stats().kv_cache_usage, 0.0);
}

class PreemptionTest : public EngineTest, public ::testing::WithParamInterface<PreemptionMode> {};

TEST_P(PreemptionTest, OutputsStayIdenticalWhenTheCacheRunsOut) {
  std::mt19937 rng(11);
  EngineConfig config;
  config.num_gpu_blocks = 14;  // 224 slots for 8 sequences of ~70 tokens each
  config.num_cpu_blocks = GetParam() == PreemptionMode::kSwap ? 64 : 0;
  config.scheduler.preemption_mode = GetParam();
  config.scheduler.max_num_batched_tokens = 64;
  Engine engine(*model_, config);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::shared_ptr<RequestStream>> streams;
  std::vector<Collected> got(8);
  for (int i = 0; i < 8; ++i) {
    prompts.push_back(random_prompt(rng, 30 + 3 * i));
    streams.push_back(engine.submit(greedy(prompts.back(), 40)));
  }
  for (int guard = 0; engine.has_work(); ++guard) {
    ASSERT_LT(guard, 100000);
    (void)engine.step();
    engine.check_invariants();
    for (int i = 0; i < 8; ++i) drain(*streams[static_cast<size_t>(i)], got[static_cast<size_t>(i)]);
  }
  for (int i = 0; i < 8; ++i) EXPECT_EQ(got[static_cast<size_t>(i)].tokens[0], solo_greedy(prompts[static_cast<size_t>(i)], 40));
  const EngineStats s = engine.stats();
  if (GetParam() == PreemptionMode::kSwap) {
    EXPECT_GT(s.preemptions_swap, 0);
  } else {
    EXPECT_GT(s.preemptions_recompute, 0);
    EXPECT_EQ(s.preemptions_swap, 0);
  }
  EXPECT_EQ(s.num_free_blocks, 14);
  // Every wait to join a batch is observed: each request's first, and one more after each preemption.
  EXPECT_EQ(s.request_queue_time.count(), 8);
  EXPECT_EQ(s.batch_wait_time.count(), 8 + s.preemptions_recompute + s.preemptions_swap);
}

INSTANTIATE_TEST_SUITE_P(Modes, PreemptionTest, ::testing::Values(PreemptionMode::kRecompute, PreemptionMode::kSwap));

// One sequence per step: the third request waits for the two before it, about 2 x 5 steps of 5 ms or more.
TEST_F(EngineTest, BatchWaitTimeIsTheWaitToJoinTheBatch) {
  EngineConfig config;
  config.scheduler.max_num_seqs = 1;
  Engine engine(*model_, config);
  for (int i = 0; i < 3; ++i) (void)engine.submit(greedy({1, 2, 3, 4}, 5));
  for (int guard = 0; engine.has_work(); ++guard) {
    ASSERT_LT(guard, 100);
    (void)engine.step();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const EngineStats s = engine.stats();
  EXPECT_EQ(s.batch_wait_time.count(), 3);
  EXPECT_EQ(s.request_queue_time.count(), 3);
  // The second waited >= 5 steps, the third >= 10.
  EXPECT_GE(s.batch_wait_time.sum(), 15 * 0.005);
  EXPECT_LT(s.batch_wait_time.sum(), 10.0);
  EXPECT_NEAR(s.batch_wait_time.sum(), s.request_queue_time.sum(), 1e-9);  // no preemption: the same waits
}

// Fragmentation: allocated KV slots not holding a computed token, over allocated slots.
TEST_F(EngineTest, KvFragmentationRatioCountsTheUnusedSlotsOfAllocatedBlocks) {
  EngineConfig config;  // blocks of 16 tokens
  Engine engine(*model_, config);
  (void)engine.submit(greedy(std::vector<int32_t>(20, 5), 4));
  (void)engine.step();  // the prompt: 20 tokens computed in 2 blocks (32 slots)
  EXPECT_DOUBLE_EQ(engine.stats().kv_cache_fragmentation, 12.0 / 32.0);
  (void)engine.step();  // the first generated token computed too
  EXPECT_DOUBLE_EQ(engine.stats().kv_cache_fragmentation, 11.0 / 32.0);
  run_to_completion(engine);
  EXPECT_DOUBLE_EQ(engine.stats().kv_cache_fragmentation, 0.0);
}

TEST_F(EngineTest, SharedPrefixIsComputedOnce) {
  std::mt19937 rng(3);
  const std::vector<int32_t> prefix = random_prompt(rng, 48);  // three full blocks
  EngineConfig config;
  config.num_gpu_blocks = 64;
  Engine engine(*model_, config);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) {
    prompts.push_back(prefix);
    const auto suffix = random_prompt(rng, 5 + i);
    prompts.back().insert(prompts.back().end(), suffix.begin(), suffix.end());
  }
  // The first request warms the cache; the other three then find the 48-token prefix there.
  std::vector<Collected> got(4);
  auto first = engine.submit(greedy(prompts[0], 6));
  run_to_completion(engine);
  drain(*first, got[0]);
  std::vector<std::shared_ptr<RequestStream>> rest;
  for (int i = 1; i < 4; ++i) rest.push_back(engine.submit(greedy(prompts[static_cast<size_t>(i)], 6)));
  run_to_completion(engine);
  for (int i = 1; i < 4; ++i) drain(*rest[static_cast<size_t>(i - 1)], got[static_cast<size_t>(i)]);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(got[static_cast<size_t>(i)].tokens[0], solo_greedy(prompts[static_cast<size_t>(i)], 6));
  const EngineStats s = engine.stats();
  EXPECT_EQ(s.prefix_cache_hits, 3 * 48);
  int64_t total_prompt = 0;
  for (const auto& p : prompts) total_prompt += static_cast<int64_t>(p.size());
  EXPECT_EQ(s.computed_prompt_tokens, total_prompt - 3 * 48);
}

TEST_F(EngineTest, ChunkedPrefillEqualsUnchunked) {
  std::mt19937 rng(5);
  const auto prompt = random_prompt(rng, 100);
  std::vector<int32_t> outputs[2];
  for (int chunked = 0; chunked < 2; ++chunked) {
    EngineConfig config;
    config.num_gpu_blocks = 32;
    config.enable_prefix_caching = false;
    config.scheduler.max_num_batched_tokens = chunked ? 7 : 4096;
    Engine engine(*model_, config);
    Collected got;
    auto stream = engine.submit(greedy(prompt, 8));
    int steps = 0;
    while (engine.has_work()) {
      (void)engine.step();
      ++steps;
    }
    drain(*stream, got);
    outputs[chunked] = got.tokens[0];
    EXPECT_EQ(steps, chunked ? (100 + 6) / 7 + 7 : 8);  // ceil(100 / 7) prefill steps, then 7 decodes
  }
  EXPECT_EQ(outputs[0], outputs[1]);
  EXPECT_EQ(outputs[0], solo_greedy(prompt, 8));
}

TEST_F(EngineTest, SeededSamplingIgnoresWhatItIsBatchedWith) {
  std::mt19937 rng(9);
  const auto prompt = random_prompt(rng, 12);
  EngineRequest seeded;
  seeded.prompt_ids = prompt;
  seeded.params.temperature = 1.0;
  seeded.params.seed = 1234;
  seeded.params.max_tokens = 10;
  seeded.params.ignore_eos = true;
  std::vector<int32_t> runs[2];
  for (int crowded = 0; crowded < 2; ++crowded) {
    EngineConfig config;
    config.num_gpu_blocks = 128;
    Engine engine(*model_, config);
    std::vector<std::shared_ptr<RequestStream>> others;
    if (crowded) {
      for (int i = 0; i < 5; ++i) {
        EngineRequest r = seeded;
        r.prompt_ids = random_prompt(rng, 4 + i);
        r.params.seed.reset();
        others.push_back(engine.submit(r));
      }
    }
    auto stream = engine.submit(seeded);
    run_to_completion(engine);
    Collected got;
    drain(*stream, got);
    runs[crowded] = got.tokens[0];
  }
  EXPECT_EQ(runs[0], runs[1]);
  EXPECT_EQ(runs[0].size(), 10u);
}

TEST_F(EngineTest, ParallelSamplesShareThePromptAndSampleZeroMatchesASingleSeededRun) {
  std::mt19937 rng(13);
  const auto prompt = random_prompt(rng, 37);  // two full blocks and a partial one
  EngineRequest req;
  req.prompt_ids = prompt;
  req.params.temperature = 1.0;
  req.params.seed = 99;
  req.params.max_tokens = 8;
  req.params.ignore_eos = true;
  EngineConfig config;
  config.num_gpu_blocks = 64;
  config.enable_prefix_caching = false;  // sharing must come from the fork, not the cache
  std::vector<int32_t> single;
  {
    Engine engine(*model_, config);
    auto s = engine.submit(req);
    run_to_completion(engine);
    Collected got;
    drain(*s, got);
    single = got.tokens[0];
  }
  Engine engine(*model_, config);
  req.params.n = 3;
  auto stream = engine.submit(req);
  run_to_completion(engine);
  Collected got;
  drain(*stream, got);
  ASSERT_EQ(got.tokens.size(), 3u);
  EXPECT_EQ(got.tokens[0], single);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(got.tokens[i].size(), 8u);
  EXPECT_NE(got.tokens[1], got.tokens[2]);  // different streams of randomness
  EXPECT_EQ(engine.stats().computed_prompt_tokens, 37);  // the prompt went through the model once
}

TEST_F(EngineTest, AbortAtAnyMomentFreesEveryBlock) {
  for (int abort_step = 0; abort_step < 12; ++abort_step) {
    EngineConfig config;
    config.num_gpu_blocks = 32;
    config.scheduler.max_num_batched_tokens = 16;
    Engine engine(*model_, config);
    std::mt19937 rng(static_cast<unsigned>(abort_step));
    int64_t victim = 0;
    EngineRequest doomed_request = greedy(random_prompt(rng, 40), 20);
    doomed_request.params.prompt_logprobs = 1;  // its prompt is scored over several steps
    auto doomed = engine.submit(doomed_request, &victim);
    auto other = engine.submit(greedy(random_prompt(rng, 10), 20));
    for (int s = 0; s < abort_step; ++s) (void)engine.step();
    engine.abort(victim);
    run_to_completion(engine);
    Collected got;
    drain(*doomed, got);
    EXPECT_EQ(got.finish[0], FinishReason::kAbort) << "abort after " << abort_step << " steps";
    drain(*other, got);
    EXPECT_EQ(engine.stats().kv_cache_usage, 0.0);
    EXPECT_EQ(engine.stats().num_free_blocks, 32);
  }
}

TEST_F(EngineTest, AdmissionErrorsNameTheNumbers) {
  EngineConfig config;
  config.num_gpu_blocks = 16;
  config.max_queue_len = 2;
  Engine engine(*model_, config);
  (void)engine.submit(greedy({5, 6}, 4));
  (void)engine.submit(greedy({5, 6}, 4));
  EXPECT_THROW((void)engine.submit(greedy({5, 6}, 4)), OverloadedError);
  try {
    (void)engine.submit(greedy(std::vector<int32_t>(250, 3), 10));
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("maximum context length is 256 tokens; the prompt has 250 and max_tokens "
                                         "asks for 10 more"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW((void)engine.submit(greedy({5, 2000}, 4)), InvalidArgument);
  EXPECT_THROW((void)engine.submit(greedy({}, 4)), InvalidArgument);
}

TEST_F(EngineTest, BackgroundThreadServesConcurrentSubmitters) {
  EngineConfig config;
  config.num_gpu_blocks = 64;
  Engine engine(*model_, config);
  engine.start();
  std::vector<std::thread> clients;
  std::vector<std::vector<int32_t>> results(4);
  for (int i = 0; i < 4; ++i) {
    clients.emplace_back([&, i] {
      auto stream = engine.submit(greedy({10 + i, 20 + i, 30 + i}, 5));
      RequestDelta d;
      while (stream->next(d)) results[static_cast<size_t>(i)].insert(results[static_cast<size_t>(i)].end(), d.token_ids.begin(), d.token_ids.end());
    });
  }
  for (auto& c : clients) c.join();
  engine.stop();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(results[static_cast<size_t>(i)], solo_greedy({10 + i, 20 + i, 30 + i}, 5));
}

}  // namespace
}  // namespace ds

namespace ds {
namespace {

// Prompt log-probs (echo / scoring) through the engine, chunked, against HF's on the V3 fixture; the second
// round finds every prompt's full blocks in the prefix cache, and must score them all the same (a cached
// block has no logits: a request with prompt_logprobs does not read the cache).
TEST(EnginePromptLogprobs, MatchHuggingFaceAcrossChunksAndWithAWarmPrefixCache) {
  const std::string dir = std::string(DS_FIXTURES_DIR) + "/deepseek_v3_tiny_bf16";
  std::ifstream in(dir + "/expected.json");
  const auto expected = nlohmann::json::parse(in);
  CpuBackend backend(2);
  auto model = DeepseekModel::load(dir, backend);
  EngineConfig config;
  config.num_gpu_blocks = 32;
  config.scheduler.max_num_batched_tokens = 24;  // the 80-token prompt spans four steps
  Engine engine(*model, config);
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(round == 0 ? "cold cache" : "warm cache");
    for (const auto& prompt : expected["prompts"]) {
      EngineRequest r;
      r.prompt_ids = prompt["prompt_ids"].get<std::vector<int32_t>>();
      r.params.max_tokens = 1;
      r.params.temperature = 0;
      r.params.prompt_logprobs = 3;
      r.params.logprobs = 2;
      auto stream = engine.submit(r);
      while (engine.has_work()) (void)engine.step();
      RequestDelta d;
      std::vector<std::optional<SampledToken>> got;
      std::vector<SampledToken> sampled;
      while (stream->try_next(d)) {
        if (!d.prompt_logprobs.empty()) got = d.prompt_logprobs;
        sampled.insert(sampled.end(), d.logprobs.begin(), d.logprobs.end());
      }
      ASSERT_EQ(got.size(), r.prompt_ids.size());
      EXPECT_FALSE(got[0].has_value());  // nothing predicts the first token
      for (size_t i = 1; i < got.size(); ++i) {
        ASSERT_TRUE(got[i].has_value());
        EXPECT_EQ(got[i]->token, r.prompt_ids[i]);
        EXPECT_NEAR(got[i]->logprob, prompt["prompt_logprobs"][i].get<double>(), 1e-3) << "position " << i;
        EXPECT_EQ(got[i]->top_logprobs.size(), 3u);
      }
      // The sampled token's logprob and its top-2 against HF's ranking after the prompt.
      ASSERT_EQ(sampled.size(), 1u);
      EXPECT_EQ(sampled[0].token, prompt["last_top_logprobs"][0][0].get<int32_t>());
      EXPECT_NEAR(sampled[0].logprob, prompt["last_top_logprobs"][0][1].get<double>(), 1e-3);
      ASSERT_EQ(sampled[0].top_logprobs.size(), 2u);
      EXPECT_EQ(sampled[0].top_logprobs[1].token, prompt["last_top_logprobs"][1][0].get<int32_t>());
    }
  }
  EXPECT_EQ(engine.stats().request_queue_time.count(), 8);
  // Nothing was read from the cache, although every full block of the first round was registered in it.
  EXPECT_EQ(engine.stats().prefix_cache_hits, 0);
}

}  // namespace
}  // namespace ds
