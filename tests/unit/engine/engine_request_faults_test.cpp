// A row the sampler cannot draw from (NaN logits, every token masked) ends its own request with an error;
// the engine and the other requests of the batch carry on, and the failed request's blocks are freed. Both
// sampling paths: the host Sampler (a SamplingError) and a device sampler (SampleResult::status).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "model/deepseek.h"
#include "engine/offline.h"

namespace ds {
namespace {

const std::string kModel = std::string(DS_FIXTURES_DIR) + "/deepseek_v2_tiny_bf16";
constexpr int64_t kVocab = 1024;

// The CPU backend with two faults to order: logits row 0 turned to NaN when copied to the host, and a
// device sampler (as CudaBackend::sample) that reports every token masked for requests carrying a
// logit_bias, and the raw argmax for the others.
class FaultyBackend : public CpuBackend {
 public:
  FaultyBackend() : CpuBackend(2) {}
  bool poison_row0 = false;
  bool device_sampler = false;

  void copy_to_host(const Tensor& t, std::span<float> out) override {
    CpuBackend::copy_to_host(t, out);
    if (poison_row0 && t.shape.size() == 2 && t.cols() == kVocab) out[3] = std::nanf("");
  }
  bool sample(const Tensor& logits, std::span<const SampleRequest> requests,
              std::span<SampleResult> out) override {
    if (!device_sampler) return false;
    std::vector<float> host(static_cast<size_t>(logits.numel()));
    CpuBackend::copy_to_host(logits, host);
    for (size_t i = 0; i < requests.size(); ++i) {
      out[i] = {};
      if (!requests[i].logit_bias.empty()) {
        out[i].status = SampleStatus::kAllMasked;
        continue;
      }
      const float* row = host.data() + int64_t{requests[i].row} * kVocab;
      out[i].token = static_cast<int32_t>(std::max_element(row, row + kVocab) - row);
    }
    return true;
  }
};

struct Outcome {
  std::vector<int32_t> tokens;
  FinishReason finish = FinishReason::kNone;
  std::string error;
};

Outcome collect(RequestStream& stream) {
  Outcome o;
  RequestDelta d;
  while (stream.try_next(d)) {
    o.tokens.insert(o.tokens.end(), d.token_ids.begin(), d.token_ids.end());
    if (d.finish_reason != FinishReason::kNone) {
      o.finish = d.finish_reason;
      o.error = d.error;
    }
  }
  return o;
}

EngineRequest greedy(std::vector<int32_t> prompt, int64_t max_tokens) {
  EngineRequest r;
  r.prompt_ids = std::move(prompt);
  r.params.temperature = 0;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  return r;
}

class EngineRequestFaultsTest : public ::testing::Test {
 protected:
  void run_to_completion(Engine& engine) {
    for (int guard = 0; engine.has_work(); ++guard) {
      ASSERT_LT(guard, 1000);
      ASSERT_NO_THROW((void)engine.step());  // a throwing step is what kills the engine
      engine.check_invariants();
    }
  }
  std::vector<int32_t> solo_greedy(const std::vector<int32_t>& prompt, int64_t max_tokens) {
    SamplingParams p;
    p.temperature = 0;
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    return generate(*solo_model_, prompt, p).token_ids;
  }

  FaultyBackend backend_;
  CpuBackend solo_backend_{2};
  std::unique_ptr<DeepseekModel> solo_model_ = DeepseekModel::load(kModel, solo_backend_);
  std::unique_ptr<DeepseekModel> model_ = DeepseekModel::load(kModel, backend_);
};

TEST_F(EngineRequestFaultsTest, NaNLogitsOnTheHostEndOnlyThatRequest) {
  EngineConfig config;
  config.num_gpu_blocks = 64;
  config.sample_on_device = false;
  Engine engine(*model_, config);
  const std::vector<int32_t> prompt_a = {5, 6, 7}, prompt_b = {9, 10, 11, 12};
  auto a = engine.submit(greedy(prompt_a, 4));
  auto b = engine.submit(greedy(prompt_b, 4));
  backend_.poison_row0 = true;  // the first step's row 0 is request a's
  ASSERT_NO_THROW((void)engine.step());
  backend_.poison_row0 = false;
  run_to_completion(engine);
  const Outcome oa = collect(*a), ob = collect(*b);
  EXPECT_EQ(oa.finish, FinishReason::kError);
  EXPECT_TRUE(oa.tokens.empty());
  EXPECT_EQ(oa.error, "sampling failed: the logits row of 1024 has no finite maximum (nan)");
  EXPECT_EQ(ob.finish, FinishReason::kLength);
  EXPECT_EQ(ob.tokens, solo_greedy(prompt_b, 4));
  EXPECT_FALSE(engine.dead());
  EXPECT_EQ(engine.stats().num_free_blocks, 64);
  EXPECT_EQ(engine.stats().finished.at("error"), 1);
  // And it takes the next request as if nothing had happened.
  auto c = engine.submit(greedy(prompt_a, 3));
  run_to_completion(engine);
  EXPECT_EQ(collect(*c).tokens, solo_greedy(prompt_a, 3));
}

TEST_F(EngineRequestFaultsTest, ADeviceSamplerStatusEndsOnlyThatRequestAndAllItsSamples) {
  backend_.device_sampler = true;
  EngineConfig config;
  config.num_gpu_blocks = 64;
  Engine engine(*model_, config);
  const std::vector<int32_t> prompt_a = {5, 6, 7}, prompt_b = {9, 10, 11, 12};
  EngineRequest bad = greedy(prompt_a, 4);
  bad.params.n = 3;
  bad.params.logit_bias = {{4, 1.0f}};  // the marker FaultyBackend fails
  auto a = engine.submit(std::move(bad));
  auto b = engine.submit(greedy(prompt_b, 4));
  run_to_completion(engine);
  RequestDelta d;
  int errors = 0;
  while (a->try_next(d)) {
    EXPECT_TRUE(d.token_ids.empty());
    if (d.finish_reason == FinishReason::kError) {
      ++errors;
      EXPECT_EQ(d.error, "sampling failed: every token of the vocabulary is masked");
    }
  }
  EXPECT_EQ(errors, 3);  // every sample of the request
  EXPECT_TRUE(a->finished());
  const Outcome ob = collect(*b);
  EXPECT_EQ(ob.finish, FinishReason::kLength);
  EXPECT_EQ(ob.tokens, solo_greedy(prompt_b, 4));
  EXPECT_FALSE(engine.dead());
  EXPECT_EQ(engine.stats().num_free_blocks, 64);
}

TEST_F(EngineRequestFaultsTest, MasksCoveringTheVocabularyAreRefusedAtSubmit) {
  Engine engine(*model_, EngineConfig{});
  EngineRequest r = greedy({5, 6}, 3);
  r.params.min_tokens = 1;
  for (int32_t id = 0; id < kVocab; ++id) r.params.stop_token_ids.push_back(id);
  try {
    (void)engine.submit(r);
    ADD_FAILURE() << "accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(e.param(), "stop_token_ids");
    EXPECT_STREQ(e.what(),
                 "stop_token_ids (with EOS, covering the whole vocabulary) leaves no token to sample while "
                 "min_tokens (1) masks EOS and stop_token_ids");
  }
  // Every id but one masked leaves that one: accepted, and it is what comes out first.
  r.params.stop_token_ids.erase(r.params.stop_token_ids.begin() + 700);
  auto s = engine.submit(r);
  run_to_completion(engine);
  const Outcome o = collect(*s);
  ASSERT_FALSE(o.tokens.empty());
  EXPECT_EQ(o.tokens[0], 700);
  // Past min_tokens every other token is a stop id: it stops unless greedy keeps drawing 700.
  EXPECT_TRUE(o.finish == FinishReason::kStop || o.tokens == std::vector<int32_t>(3, 700));
}

}  // namespace
}  // namespace ds
