// A request body -> parse_sampling_params -> Engine::submit -> real engine steps on the tiny V3 fixture (CPU
// backend, host sampler). The input is either a JSON body (when it starts with '{') or bytes that pick a
// valid-looking body with extreme values: penalties of 1e-300 and 1e300, integers at and past int64's ends,
// masks covering the vocabulary, logit_bias on ids inside and outside it, huge n, top_k, logprobs.
//
// A refusal (InvalidArgument, OverloadedError) is the expected answer. A finding is anything else: a step
// that throws (the engine would die), a request that ends with finish_reason error (the server's 500), a
// block left allocated once the request is gone, any other exception, or a sanitizer report.
#ifdef DS_FUZZED_DATA_PROVIDER
#include DS_FUZZED_DATA_PROVIDER  // the replay build (tests/CMakeLists.txt): GCC, without libFuzzer
#else
#include <fuzzer/FuzzedDataProvider.h>
#endif

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "model/deepseek.h"
#include "engine/request_params.h"
#include "fuzz_check.h"

namespace {

using nlohmann::json;

constexpr int64_t kBlocks = 64;
constexpr int kMaxSteps = 4;  // then the request is aborted: every path is reached within a few steps

struct World {
  ds::CpuBackend backend{1};
  std::unique_ptr<ds::DeepseekModel> model =
      ds::DeepseekModel::load(std::string(DS_FIXTURES_DIR) + "/deepseek_v3_tiny_bf16", backend);
  std::unique_ptr<ds::Engine> engine;
  World() {
    ds::EngineConfig c;
    c.num_gpu_blocks = kBlocks;
    c.block_size = 16;
    c.max_model_len = 128;
    c.max_queue_len = 32;
    c.sample_on_device = false;
    c.enable_prefix_caching = false;  // every block is free again once the request is gone
    engine = std::make_unique<ds::Engine>(*model, c);
  }
};

World& world() {
  static World w;
  return w;
}

json extreme_number(FuzzedDataProvider& in) {
  static const json kValues[] = {json(0),
                                 json(-0.0),
                                 json(1),
                                 json(-1),
                                 json(2),
                                 json(-2),
                                 json(20),
                                 json(21),
                                 json(511),
                                 json(512),
                                 json(1e-300),
                                 json(-1e-300),
                                 json(1e300),
                                 json(1e-45),
                                 json(1e-5),
                                 json(9.99e-6),
                                 json(3.4e38),
                                 json(1.7976931348623157e308),
                                 json(100),
                                 json(-100),
                                 json(100.5),
                                 json(INT32_MAX),
                                 json(INT64_MAX),
                                 json(INT64_MIN),
                                 json(std::numeric_limits<uint64_t>::max()),
                                 json(uint64_t{1} << 63),
                                 json(1e20),
                                 json(0.5)};
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      return json(in.ConsumeIntegral<int64_t>());
    case 1:
      return json(in.ConsumeFloatingPoint<double>());
    case 2:
      return json(in.ConsumeIntegralInRange<int64_t>(-3, 600));
    default:
      return kValues[in.ConsumeIntegralInRange<size_t>(0, std::size(kValues) - 1)];
  }
}

json token_list(FuzzedDataProvider& in, int64_t vocab) {
  json ids = json::array();
  switch (in.ConsumeIntegralInRange<int>(0, 2)) {
    case 0:  // the whole vocabulary, maybe less one
      for (int64_t id = 0; id < vocab; ++id) ids.push_back(id);
      if (in.ConsumeBool()) ids.erase(ids.begin() + in.ConsumeIntegralInRange<int64_t>(0, vocab - 1));
      break;
    case 1:
      for (int i = in.ConsumeIntegralInRange<int>(0, 8); i > 0; --i) ids.push_back(extreme_number(in));
      break;
    default:
      for (int i = in.ConsumeIntegralInRange<int>(0, 8); i > 0; --i)
        ids.push_back(in.ConsumeIntegralInRange<int64_t>(0, vocab + 2));
  }
  return ids;
}

json make_body(FuzzedDataProvider& in, int64_t vocab) {
  json body = {{"prompt", {5, 6, 7}}, {"max_tokens", in.ConsumeIntegralInRange<int>(1, 6)}};
  static const char* kNumberFields[] = {"temperature",
                                        "top_p",
                                        "top_k",
                                        "min_p",
                                        "repetition_penalty",
                                        "presence_penalty",
                                        "frequency_penalty",
                                        "min_tokens",
                                        "n",
                                        "seed",
                                        "logprobs",
                                        "prompt_logprobs",
                                        "max_tokens",
                                        "truncate_prompt_tokens"};
  for (const char* f : kNumberFields)
    if (in.ConsumeProbability<double>() < 0.3) body[f] = extreme_number(in);
  if (in.ConsumeBool()) body["stop_token_ids"] = token_list(in, vocab);
  if (in.ConsumeProbability<double>() < 0.3) body["allowed_token_ids"] = token_list(in, vocab);
  if (in.ConsumeProbability<double>() < 0.3) {
    json bias = json::object();
    for (int i = in.ConsumeIntegralInRange<int>(0, 4); i > 0; --i)
      bias[std::to_string(in.ConsumeIntegralInRange<int64_t>(-1, vocab + 1))] = extreme_number(in);
    body["logit_bias"] = bias;
  }
  if (in.ConsumeProbability<double>() < 0.1) body["prompt"] = token_list(in, vocab);
  if (in.ConsumeProbability<double>() < 0.1) body["stop"] = {in.ConsumeRandomLengthString(300)};
  if (in.ConsumeProbability<double>() < 0.1) body["ignore_eos"] = in.ConsumeBool();
  if (in.ConsumeProbability<double>() < 0.05) body["use_beam_search"] = in.ConsumeBool();
  if (in.ConsumeProbability<double>() < 0.05) body["bad_words"] = json::array();
  // Through text, as a client sends it: what JSON cannot hold (NaN) becomes null.
  return json::parse(body.dump(-1, ' ', false, json::error_handler_t::replace));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  const int64_t vocab = w.model->config().vocab_size;
  json body;
  if (size > 0 && data[0] == '{') {
    body = json::parse(ds::fuzz::as_text(data, size), nullptr, /*allow_exceptions=*/false);
    if (!body.is_object()) return 0;
  } else {
    FuzzedDataProvider in(data, size);
    body = make_body(in, vocab);
  }
  ds::EngineRequest request;
  try {
    request.params = ds::parse_sampling_params(body);
    const auto prompt = body.find("prompt");
    request.prompt_ids =
        prompt != body.end() && prompt->is_array() && !prompt->empty() && (*prompt)[0].is_number()
            ? ds::parse_token_ids(*prompt, "prompt")
            : std::vector<int32_t>{5, 6, 7};
  } catch (const ds::InvalidArgument&) {
    return 0;
  }
  std::shared_ptr<ds::RequestStream> stream;
  int64_t id = 0;
  try {
    stream = w.engine->submit(std::move(request), &id);
  } catch (const ds::InvalidArgument&) {
    return 0;
  } catch (const ds::OverloadedError&) {
    return 0;
  }
  for (int step = 0; w.engine->has_work(); ++step) {
    if (step == kMaxSteps) w.engine->abort(id);
    FUZZ_CHECK(step < 100, "the request did not end after it was aborted");
    (void)w.engine->step();  // an exception here is the engine dying: uncaught, a finding
    w.engine->check_invariants();
  }
  ds::RequestDelta d;
  while (stream->try_next(d))
    FUZZ_CHECK(d.finish_reason != ds::FinishReason::kError, "the request ended with an error: %s (body %s)",
               d.error.c_str(), body.dump().c_str());
  FUZZ_CHECK(stream->finished(), "a sample of the request never finished");
  FUZZ_CHECK(w.engine->stats().num_free_blocks == kBlocks, "%lld KV blocks still held after the request",
             static_cast<long long>(kBlocks - w.engine->stats().num_free_blocks));
  return 0;
}
