// The engine on the CUDA backend samples on the device (Backend::sample) and gives every request the tokens
// and logprobs it gets when the same logits are copied to the host and sampled there: seeded sampling with
// n > 1, top-k, top-p, min-p, penalties, min_tokens, logprobs, greedy, and a request with prompt logprobs
// (whose first step samples on the host) batched with the rest.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "engine/engine.h"
#include "model/deepseek.h"

namespace ds {
namespace {

const std::string kModel = std::string(DS_FIXTURES_DIR) + "/deepseek_v3_tiny_bf16";

struct Sample {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;   // of each token
  std::vector<int32_t> top_ids;  // every token's top logprobs, flattened
  std::vector<float> top_logprobs;
};
using Outputs = std::vector<std::map<int32_t, Sample>>;  // [request][sample index]

std::vector<EngineRequest> requests() {
  std::vector<EngineRequest> r;
  auto add = [&](std::vector<int32_t> prompt, auto set) {
    EngineRequest e;
    e.prompt_ids = std::move(prompt);
    e.params.max_tokens = 24;
    e.params.ignore_eos = true;
    set(e.params);
    r.push_back(std::move(e));
  };
  add({100, 200, 300}, [](SamplingParams& p) {
    p.n = 3;
    p.seed = 11;
    p.temperature = 0.8;
    p.top_p = 0.9;
    p.top_k = 20;
    p.logprobs = 5;
  });
  add({5, 6, 7, 8, 9}, [](SamplingParams& p) {
    p.seed = 12;
    p.min_p = 0.1;
    p.repetition_penalty = 1.2;
    p.frequency_penalty = 0.5;
    p.presence_penalty = 0.3;
    p.ignore_eos = false;
    p.min_tokens = 5;
  });
  add({42, 43}, [](SamplingParams& p) {
    p.temperature = 0.0;
    p.logprobs = 3;
  });
  add({7, 7, 7, 7}, [](SamplingParams& p) {
    p.seed = 13;
    p.temperature = 1.3;
  });
  add({300, 301, 302, 303, 304, 305}, [](SamplingParams& p) {
    p.seed = 14;
    p.temperature = 0.7;
    p.prompt_logprobs = 2;
    p.logprobs = 1;
  });
  return r;
}

Outputs run(DeepseekModel& model, bool on_device) {
  EngineConfig config;
  config.num_gpu_blocks = 64;
  config.sample_on_device = on_device;
  Engine engine(model, config);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (EngineRequest& r : requests()) streams.push_back(engine.submit(std::move(r)));
  Outputs out(streams.size());
  for (int guard = 0; engine.has_work(); ++guard) {
    EXPECT_LT(guard, 10000);
    if (guard >= 10000) break;
    (void)engine.step();
    for (size_t i = 0; i < streams.size(); ++i) {
      RequestDelta d;
      while (streams[i]->try_next(d)) {
        Sample& s = out[i][d.index];
        s.tokens.insert(s.tokens.end(), d.token_ids.begin(), d.token_ids.end());
        for (const SampledToken& t : d.logprobs) {
          s.logprobs.push_back(t.logprob);
          for (const TokenLogprob& top : t.top_logprobs) {
            s.top_ids.push_back(top.token);
            s.top_logprobs.push_back(top.logprob);
          }
        }
      }
    }
  }
  return out;
}

TEST(EngineSampling, DeviceSamplingGivesTheHostSamplersTokens) {
  CudaBackend gpu{CudaBackendOptions{.device = 0}};
  const std::unique_ptr<DeepseekModel> model = DeepseekModel::load(kModel, gpu);
  const Outputs device = run(*model, true);
  const Outputs host = run(*model, false);
  ASSERT_EQ(device.size(), host.size());
  for (size_t i = 0; i < device.size(); ++i) {
    ASSERT_EQ(device[i].size(), host[i].size()) << "request " << i;
    for (const auto& [index, want] : host[i]) {
      const Sample& got = device[i].at(index);
      EXPECT_EQ(got.tokens, want.tokens) << "request " << i << " sample " << index;
      EXPECT_EQ(got.top_ids, want.top_ids) << "request " << i << " sample " << index;
      ASSERT_EQ(got.logprobs.size(), want.logprobs.size());
      for (size_t k = 0; k < want.logprobs.size(); ++k)
        EXPECT_NEAR(got.logprobs[k], want.logprobs[k], 2e-5) << "request " << i << " token " << k;
      ASSERT_EQ(got.top_logprobs.size(), want.top_logprobs.size());
      for (size_t k = 0; k < want.top_logprobs.size(); ++k)
        EXPECT_NEAR(got.top_logprobs[k], want.top_logprobs[k], 2e-5) << "request " << i << " top " << k;
    }
    if (i != 1) {
      EXPECT_EQ(device[i].at(0).tokens.size(), 24u) << "request " << i;  // ignore_eos: max_tokens each
    }
  }
  // Three samples of request 0, each its own stream: not all alike.
  EXPECT_EQ(device[0].size(), 3u);
  EXPECT_NE(device[0].at(0).tokens, device[0].at(1).tokens);
}

}  // namespace
}  // namespace ds
