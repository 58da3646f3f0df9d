// Backend::sample on the CUDA backend against its CPU twin, the engine's Sampler (the CPU backend does not
// sample; the engine samples its rows on the host with Sampler), on random logits for every parameter mix:
// the same token for the same uniform, and the logprobs and top logprobs of the raw row within 2e-5.
//
// The token agrees exactly: both compute the same float weights and add them in the same order. The one
// place where the arithmetic differs is the top-p cut (the device sums the kept mass in another order), which
// can move the cut where top_p * total lands within rounding (~1e-16 relative) of a running sum; on these
// rows that happens nowhere, and the test allows at most one such row per mix.
#include <chrono>
#include <cstdio>
#include <string>

#include "engine/sampler.h"
#include "op_test_util.h"

namespace ds::testing {
namespace {

using SampleTest = OpTest;

constexpr double kLogprobTol = 2e-5;

struct Mix {
  const char* name;
  SamplingParams params;
  bool penalties_context = false;  // give the rows a prompt and an output for the penalties to count
};

std::vector<Mix> mixes() {
  std::vector<Mix> m;
  auto add = [&](const char* name, auto set, bool context = false) {
    SamplingParams p;
    set(p);
    m.push_back({name, p, context});
  };
  add("greedy", [](SamplingParams& p) { p.temperature = 0.0; });
  add("greedy logprobs 20", [](SamplingParams& p) {
    p.temperature = 0.0;
    p.logprobs = 20;
  });
  add(
      "greedy penalties",
      [](SamplingParams& p) {
        p.temperature = 0.0;
        p.repetition_penalty = 1.3;
        p.frequency_penalty = 0.5;
        p.presence_penalty = 0.4;
      },
      true);
  add("temperature 1", [](SamplingParams& p) { p.temperature = 1.0; });
  add("temperature 0.6 logprobs 0", [](SamplingParams& p) {
    p.temperature = 0.6;
    p.logprobs = 0;
  });
  add("temperature 1.7 logprobs 5", [](SamplingParams& p) {
    p.temperature = 1.7;
    p.logprobs = 5;
  });
  add("top-k 1", [](SamplingParams& p) { p.top_k = 1; });
  add("top-k 50", [](SamplingParams& p) {
    p.temperature = 0.8;
    p.top_k = 50;
  });
  add("top-k 3000", [](SamplingParams& p) { p.top_k = 3000; });  // above the host's heap path
  add("top-p 0.9", [](SamplingParams& p) { p.top_p = 0.9; });
  add("top-p 0.3 temperature 0.5", [](SamplingParams& p) {
    p.temperature = 0.5;
    p.top_p = 0.3;
  });
  add("top-k 40 top-p 0.8", [](SamplingParams& p) {
    p.top_k = 40;
    p.top_p = 0.8;
    p.logprobs = 5;
  });
  add("min-p 0.1", [](SamplingParams& p) { p.min_p = 0.1; });
  add("min-p 0.05 top-p 0.95 top-k 200", [](SamplingParams& p) {
    p.temperature = 1.2;
    p.min_p = 0.05;
    p.top_p = 0.95;
    p.top_k = 200;
  });
  add(
      "penalties",
      [](SamplingParams& p) {
        p.temperature = 0.9;
        p.repetition_penalty = 1.15;
        p.frequency_penalty = 0.7;
        p.presence_penalty = -0.3;
        p.logprobs = 3;
      },
      true);
  add(
      "penalties top-p min_tokens",
      [](SamplingParams& p) {
        p.repetition_penalty = 0.8;
        p.frequency_penalty = -1.0;
        p.top_p = 0.7;
        p.min_tokens = 100;  // masks EOS and the stop ids
        p.stop_token_ids = {5, 17};
      },
      true);
  add("logit_bias allowed_token_ids", [](SamplingParams& p) {
    p.temperature = 0.9;
    p.logit_bias = {{2, 5.0f}, {10, -100.0f}, {500, 3.5f}};
    p.allowed_token_ids = {2, 3, 10, 100, 500, 999};
    p.logprobs = 4;
  });
  add(
      "repetition 1e-300 (saturates at FLT_MAX)", [](SamplingParams& p) { p.repetition_penalty = 1e-300; },
      true);
  add(
      "greedy repetition 1e300 logit_bias",
      [](SamplingParams& p) {
        p.temperature = 0.0;
        p.repetition_penalty = 1e300;
        p.logit_bias = {{7, -2.5f}};
      },
      true);
  return m;
}

// logits [rows, vocab]: normal with stddev 3; with `ties`, rounded to halves so that cuts fall inside runs of
// equal logits.
std::vector<float> random_logits(Rng& rng, int64_t rows, int64_t vocab, bool ties) {
  std::vector<float> v = rng.normal(rows * vocab, 3.0f);
  if (ties)
    for (float& x : v) x = std::round(x * 2.0f) / 2.0f;
  return v;
}

void compare(CudaBackend& gpu, int64_t rows, int64_t vocab, bool ties, uint64_t seed) {
  Rng rng(seed);
  const std::vector<float> host = random_logits(rng, rows, vocab, ties);
  Tensor logits = gpu.empty_f32({rows, vocab});
  gpu.copy_from_host(host, logits);
  // Token ids for the penalties: a prompt and an output with repeats, the same for every request.
  std::vector<int32_t> prompt(40), output(25);
  for (auto& id : prompt) id = rng.uniform_int(0, static_cast<int32_t>(vocab - 1));
  for (auto& id : output) id = rng.uniform_int(0, static_cast<int32_t>(vocab - 1));
  for (size_t i = 0; i < 10; ++i) output[i + 10] = output[i];  // repeats: counts of 2
  const std::vector<int32_t> eos = {1, static_cast<int32_t>(vocab - 1)};
  const Sampler sampler;
  for (const Mix& mix : mixes()) {
    // Twice as many requests as rows: each row is sampled by two requests with different uniforms (n > 1).
    std::vector<SampleRequest> requests;
    std::vector<SamplingContext> contexts;
    for (int64_t r = 0; r < 2 * rows; ++r) {
      const SamplingContext context =
          mix.penalties_context ? SamplingContext{prompt, output, eos} : SamplingContext{{}, {}, eos};
      const double u = Sampler::draw_uniform(mix.params, rng.gen());
      contexts.push_back(context);
      requests.push_back(to_sample_request(mix.params, context, static_cast<int32_t>(r % rows), u, vocab));
    }
    std::vector<SampleResult> results(requests.size());
    ASSERT_TRUE(gpu.sample(logits, requests, results));
    int64_t token_mismatches = 0;
    double max_logprob_error = 0.0;
    for (size_t k = 0; k < requests.size(); ++k) {
      const std::span<const float> row(host.data() + static_cast<int64_t>(requests[k].row) * vocab,
                                       static_cast<size_t>(vocab));
      const SampledToken want = sampler.sample(row, mix.params, contexts[k], requests[k].uniform);
      const SampledToken got = to_sampled_token(results[k]);
      if (got.token != want.token) {
        ++token_mismatches;
        std::printf("  %s row %d u %.17g: cpu %d gpu %d\n", mix.name, requests[k].row, requests[k].uniform,
                    want.token, got.token);
        continue;
      }
      max_logprob_error = std::max(max_logprob_error, std::abs(double{got.logprob} - want.logprob));
      ASSERT_EQ(got.top_logprobs.size(), want.top_logprobs.size()) << mix.name;
      for (size_t j = 0; j < want.top_logprobs.size(); ++j) {
        EXPECT_EQ(got.top_logprobs[j].token, want.top_logprobs[j].token) << mix.name << " rank " << j;
        max_logprob_error = std::max(
            max_logprob_error, std::abs(double{got.top_logprobs[j].logprob} - want.top_logprobs[j].logprob));
      }
    }
    const bool top_p = mix.params.top_p < 1.0;
    EXPECT_LE(token_mismatches, top_p ? 1 : 0) << mix.name << " vocab " << vocab << (ties ? " ties" : "");
    EXPECT_LE(max_logprob_error, kLogprobTol) << mix.name << " vocab " << vocab;
    std::printf("SAMPLE %-34s vocab %6ld%s: %ld requests, %ld token mismatches, max logprob error %.2e\n",
                mix.name, static_cast<long>(vocab), ties ? " ties" : "     ",
                static_cast<long>(requests.size()), static_cast<long>(token_mismatches), max_logprob_error);
  }
}

TEST_F(SampleTest, SameTokensAsTheHostSamplerForTheSameUniforms) {
  compare(gpu_, 4, 1000, false, 1);
  compare(gpu_, 3, 4099, true, 2);     // a tail chunk of 3 tokens
  compare(gpu_, 8, 129280, false, 3);  // DeepSeek-V3's vocabulary
  compare(gpu_, 4, 129280, true, 4);
}

TEST_F(SampleTest, ChosenTokensFollowTheParams) {
  // A row a human can check: token 7 leads, 3 is second; with temperature 0 the argmax, with a repetition
  // penalty on 7 (logit 4 / 3 = 1.33 < 3) the runner-up; min_tokens masks EOS 7 instead.
  const int64_t vocab = 10;
  std::vector<float> row(vocab, 0.0f);
  row[7] = 4.0f;
  row[3] = 3.0f;
  Tensor logits = gpu_.empty_f32({1, vocab});
  gpu_.copy_from_host(row, logits);
  SamplingParams greedy;
  greedy.temperature = 0.0;
  greedy.logprobs = 2;
  const std::vector<int32_t> prompt = {7}, eos = {7};
  std::vector<SampleRequest> requests = {to_sample_request(greedy, {}, 0, 0.0, vocab)};
  SamplingParams penalized = greedy;
  penalized.repetition_penalty = 3.0;
  requests.push_back(to_sample_request(penalized, {prompt, {}, {}}, 0, 0.0, vocab));
  SamplingParams early = greedy;
  early.min_tokens = 1;
  requests.push_back(to_sample_request(early, {{}, {}, eos}, 0, 0.0, vocab));
  std::vector<SampleResult> results(requests.size());
  ASSERT_TRUE(gpu_.sample(logits, requests, results));
  // log-softmax of the raw row: 4 - log(e^4 + e^3 + 8) = -0.4209; 3 - ... = -1.4209.
  const double lse = std::log(std::exp(4.0) + std::exp(3.0) + 8.0);
  EXPECT_EQ(results[0].token, 7);
  EXPECT_NEAR(results[0].logprob, 4.0 - lse, 1e-6);
  EXPECT_EQ(results[0].top_ids, (std::vector<int32_t>{7, 3}));
  EXPECT_NEAR(results[0].top_logprobs[1], 3.0 - lse, 1e-6);
  EXPECT_EQ(results[1].token, 3);
  EXPECT_NEAR(results[1].logprob, 3.0 - lse, 1e-6);  // raw, not penalized
  EXPECT_EQ(results[2].token, 3);
}

TEST_F(SampleTest, RejectsBadRequestsBeforeAnyKernel) {
  Tensor logits = gpu_.empty_f32({2, 16});
  gpu_.copy_from_host(std::vector<float>(32, 0.0f), logits);
  std::vector<SampleResult> out(1);
  SampleRequest bad_row;
  bad_row.row = 2;
  EXPECT_THROW((void)gpu_.sample(logits, std::span(&bad_row, 1), out), InternalError);
  SampleRequest bad_top;
  bad_top.num_top_logprobs = 21;
  EXPECT_THROW((void)gpu_.sample(logits, std::span(&bad_top, 1), out), InternalError);
  const std::vector<int32_t> outside = {16};
  SampleRequest bad_id;
  bad_id.repetition_penalty = 1.1;
  bad_id.output_ids = outside;
  EXPECT_THROW((void)gpu_.sample(logits, std::span(&bad_id, 1), out), InternalError);
  SampleRequest bad_uniform;
  bad_uniform.uniform = 1.0;
  EXPECT_THROW((void)gpu_.sample(logits, std::span(&bad_uniform, 1), out), InternalError);
}

TEST_F(SampleTest, ARowWithNaNOrNothingLeftFailsOnlyItsOwnRequest) {
  // Row 0 is NaN, row 1 is fine: the request on row 0 gets kBadLogits, one on row 1 whose every token is
  // masked gets kAllMasked, and the others on row 1 are sampled as usual (before: InternalError, which
  // ended the engine for every request).
  std::vector<float> rows(32, std::nanf(""));
  for (int i = 16; i < 32; ++i) rows[static_cast<size_t>(i)] = static_cast<float>((i - 16) % 5);
  Tensor logits = gpu_.empty_f32({2, 16});
  gpu_.copy_from_host(rows, logits);
  std::vector<SampleRequest> requests(4);
  requests[0].row = 0;
  requests[1].row = 1;
  requests[1].greedy = true;
  const std::vector<int32_t> allowed = {3};
  requests[2].row = 1;
  requests[2].allowed_ids = allowed;
  requests[2].masked_ids = {3};
  requests[3].row = 1;
  requests[3].greedy = true;
  requests[3].allowed_ids = allowed;
  std::vector<SampleResult> out(requests.size());
  ASSERT_TRUE(gpu_.sample(logits, requests, out));
  EXPECT_EQ(out[0].status, SampleStatus::kBadLogits);
  EXPECT_EQ(out[1].status, SampleStatus::kOk);
  EXPECT_EQ(out[1].token, 4);  // logits 0 1 2 3 4 0 ...: the first 4
  EXPECT_EQ(out[2].status, SampleStatus::kAllMasked);
  EXPECT_EQ(out[3].status, SampleStatus::kOk);
  EXPECT_EQ(out[3].token, 3);
}

// One call at DeepSeek-V3's shape, 256 rows x 129280: the time of Backend::sample (upload, kernel, copy back)
// beside copying the logits to the host, which the host sampler needs before it starts.
TEST(SampleTiming, TwoHundredFiftySixRowsOfTheV3Vocabulary) {
  CudaBackend gpu{CudaBackendOptions{.device = 0, .sync_each_op = false}};
  const int64_t rows = 256, vocab = 129280;
  Rng rng(9);
  const std::vector<float> host = random_logits(rng, rows, vocab, false);
  Tensor logits = gpu.empty_f32({rows, vocab});
  gpu.copy_from_host(host, logits);
  std::vector<float> copied(host.size());
  for (const Mix& mix : mixes()) {
    const std::string name = mix.name;
    if (name != "greedy" && name != "temperature 1" && name != "top-k 40 top-p 0.8" &&
        name != "penalties top-p min_tokens")
      continue;
    std::vector<SampleRequest> requests;
    const std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6, 7, 8};
    for (int64_t r = 0; r < rows; ++r)
      requests.push_back(to_sample_request(mix.params, {ids, ids, ids}, static_cast<int32_t>(r),
                                           Sampler::draw_uniform(mix.params, rng.gen()), vocab));
    std::vector<SampleResult> results(requests.size());
    ASSERT_TRUE(gpu.sample(logits, requests, results));  // warm-up
    constexpr int kCalls = 10;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i) ASSERT_TRUE(gpu.sample(logits, requests, results));
    const auto t1 = std::chrono::steady_clock::now();
    for (int i = 0; i < kCalls; ++i) gpu.copy_to_host(logits, copied);
    const auto t2 = std::chrono::steady_clock::now();
    const double sample_ms = std::chrono::duration<double, std::milli>(t1 - t0).count() / kCalls;
    const double copy_ms = std::chrono::duration<double, std::milli>(t2 - t1).count() / kCalls;
    std::printf("SAMPLE_TIMING %-28s 256 x 129280: sample %.3f ms, copy of the logits to the host %.3f ms\n",
                mix.name, sample_ms, copy_ms);
  }
}

}  // namespace
}  // namespace ds::testing
