// CUDA graphs of decode steps: a replay gives the same bits as the same step run eagerly.
//
// Why bitwise: a replay runs the very kernels, with the same launch shapes and the same cuBLASLt algorithms,
// that the eager run of the same (padded) batch queues; only the arrays in the step buffers change between
// replays. What differs from an eager run of the unpadded batch is the GEMMs' row count (cuBLASLt may pick
// another kernel for 3 rows than for 4, with another fp32 summation order, and the bf16 roundings after it
// move by an ulp): rows never mix, so those logits agree within bf16 rounding (kUnpaddedTolerance, the
// normalized error of all logits, as tests/gpu/forward_test.cpp states for bf16 against fp32; on the H100 the
// fixtures' logits came out identical, 0.0e+00).
//
// The decode attention plan that graphs need (grid fixed by the batch size, pieces made on the device from
// the positions) is checked against the host-made plan, which tests/gpu/attention_test.cpp checks against
// the CPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "model/deepseek.h"
#include "op_test_util.h"
#include "unit/model/fixture.h"

namespace ds {
namespace {

using testing::fixture_dir;
using testing::make_weight;
using testing::Rng;

constexpr double kUnpaddedTolerance = 1e-2;

std::vector<float> to_host(Backend& b, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  b.copy_to_host(t, v);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

double normalized_error(const std::vector<float>& got, const std::vector<float>& ref) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    err += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    norm += double(ref[i]) * ref[i];
  }
  return std::sqrt(err / norm);
}

// A decode batch: sequence i has context lens[i] (its new token at lens[i] - 1), in blocks tables[i].
ForwardBatch decode_batch(const std::vector<int32_t>& lens, const std::vector<std::vector<int32_t>>& tables,
                          const std::vector<int32_t>& tokens, int32_t block_size) {
  ForwardBatch b;
  size_t width = 0;
  for (const auto& t : tables) width = std::max(width, t.size());
  b.max_blocks_per_seq = static_cast<int32_t>(width);
  b.query_start_loc.push_back(0);
  for (size_t i = 0; i < lens.size(); ++i) {
    const int32_t pos = lens[i] - 1;
    b.token_ids.push_back(tokens[i]);
    b.positions.push_back(pos);
    b.slot_mapping.push_back(int64_t{tables[i].at(static_cast<size_t>(pos / block_size))} * block_size +
                             pos % block_size);
    b.query_start_loc.push_back(static_cast<int32_t>(i + 1));
    b.seq_lens.push_back(lens[i]);
    b.logits_indices.push_back(static_cast<int32_t>(i));
    for (size_t k = 0; k < width; ++k) b.block_table.push_back(k < tables[i].size() ? tables[i][k] : 0);
  }
  return b;
}

// The tensor-core MLA path (V2-Lite's 16 heads and V3's 128, latent 512 + rope 64) captured once for a
// batch size and replayed over batches with other contexts and block tables: the same bits as the eager
// run of each batch, and the host-made plan's result within bf16 rounding of the split. Both attention
// kernels (CudaBackendOptions::mla_decode).
TEST(CudaGraphs, DecodeAttentionReplaysMatchEager) {
  Rng rng(30);
  for (const MlaDecodeKernel kernel : {MlaDecodeKernel::kV1, MlaDecodeKernel::kV2}) {
    const char* kernel_name = kernel == MlaDecodeKernel::kV1 ? "V1" : "V2";
    CudaBackend gpu{CudaBackendOptions{.mla_decode = kernel}};
    ASSERT_TRUE(gpu.supports_graphs());
    for (const int64_t heads : {16, 128}) {
      const int64_t nope = 128, rope = 64, v = 128, lora = 512, qk = nope + rope;
      const int32_t block_size = 16, num_blocks = 512, pitch = 128;  // contexts up to 2,048
      const int64_t slots = int64_t{num_blocks} * block_size;
      auto kv_b =
          make_weight(rng, heads * (nope + v), lora, DType::kBF16, 1.0f / std::sqrt(float(lora)), "kv_b");
      gpu.prepare_weight(kv_b->weight);
      Tensor cache = gpu.empty({slots, lora + rope});
      gpu.copy_from_host(rng.normal(slots * (lora + rope)), cache);
      for (const int64_t batch_size : {1, 4, 32}) {
        Tensor q = gpu.empty({batch_size, heads * qk}), out = gpu.empty({batch_size, heads * v});
        MlaAttentionParams p;
        p.q = &q, p.kv_cache = &cache, p.kv_b_proj = &kv_b->weight, p.out = &out;
        p.num_heads = heads, p.qk_nope_head_dim = nope, p.qk_rope_head_dim = rope, p.v_head_dim = v;
        p.kv_lora_rank = lora, p.block_size = block_size, p.softmax_scale = 1.0f / std::sqrt(float(qk));
        // Random contexts in shuffled blocks, a new draw per step.
        auto draw = [&](int32_t max_len) {
          std::vector<int32_t> lens, tokens(static_cast<size_t>(batch_size), 0);
          std::vector<std::vector<int32_t>> tables;
          std::vector<int32_t> free(num_blocks);
          std::iota(free.begin(), free.end(), 0);
          std::shuffle(free.begin(), free.end(), rng.gen());
          size_t next = 0;
          for (int64_t s = 0; s < batch_size; ++s) {
            const int32_t len = rng.uniform_int(1, max_len);
            lens.push_back(len);
            tables.emplace_back();
            for (int32_t b = 0; b < (len + block_size - 1) / block_size; ++b)
              tables.back().push_back(free.at(next++));
          }
          return decode_batch(lens, tables, tokens, block_size);
        };
        const int32_t max_len =
            static_cast<int32_t>(std::min<int64_t>(2048, num_blocks * block_size / batch_size));
        // Capture (after the warm-up the capture needs), with contexts unlike any replayed below.
        const ForwardBatch first = draw(max_len);
        int64_t graph = 0;
        {
          const StepScope step(gpu, first, pitch);
          gpu.mla_attention(p, first);
          gpu.begin_capture();
          gpu.mla_attention(p, first);
          graph = gpu.end_capture();
        }
        for (int step = 0; step < 4; ++step) {
          const ForwardBatch batch = draw(step == 0 ? 40 : max_len);  // step 0: short contexts, empty pieces
          gpu.copy_from_host(rng.normal(batch_size * heads * qk), q);
          std::vector<float> eager, replayed, host_plan;
          {
            const StepScope s(gpu, batch, pitch);
            gpu.mla_attention(p, batch);
            eager = to_host(gpu, out);
            gpu.copy_from_host(std::vector<float>(static_cast<size_t>(out.numel()), std::nanf("")), out);
            gpu.replay_graph(graph);
            replayed = to_host(gpu, out);
          }
          gpu.mla_attention(p, batch);  // no stage_step: the plan made on the host
          host_plan = to_host(gpu, out);
          EXPECT_TRUE(same_bits(replayed, eager))
              << kernel_name << ", " << heads << " heads, batch " << batch_size << ", step " << step;
          const double err = normalized_error(replayed, host_plan);
          EXPECT_LT(err, 4e-3) << kernel_name << ", " << heads << " heads, batch " << batch_size << ", step "
                               << step;
          std::printf(
              "SUMMARY graphs attention %s %lld heads batch %lld step %d: replay == eager %s, vs host plan "
              "%.1e\n",
              kernel_name, static_cast<long long>(heads), static_cast<long long>(batch_size), step,
              same_bits(replayed, eager) ? "bitwise" : "DIFFERS", err);
        }
        gpu.clear_graphs();
      }
    }
  }
}

// store_kv skips slot -1 (the padding rows of a graph's batch) on both backends and writes the other rows.
TEST(CudaGraphs, StoreKvSkipsPaddingSlots) {
  CpuBackend cpu(1);
  CudaBackend gpu;
  const std::vector<float> latent = {1, 2, 3, 4, 5, 6}, krope = {7, 8, 9, 10};  // [2, 3] and [2, 2]
  for (Backend* b : {static_cast<Backend*>(&cpu), static_cast<Backend*>(&gpu)}) {
    Tensor l = b->empty({2, 3}), k = b->empty({2, 2}), cache = b->empty({4, 5});
    b->copy_from_host(latent, l);
    b->copy_from_host(krope, k);
    b->copy_from_host(std::vector<float>(20, -1.0f), cache);
    const std::vector<int64_t> slots = {-1, 2};
    b->store_kv(l, k, 0, slots, cache);
    const std::vector<float> got = to_host(*b, cache);
    std::vector<float> want(20, -1.0f);
    for (int c = 0; c < 3; ++c) want[2 * 5 + c] = latent[3 + c];
    for (int c = 0; c < 2; ++c) want[2 * 5 + 3 + c] = krope[2 + c];
    EXPECT_EQ(got, want);
  }
}

// A fixture model's decode steps through graphs of sizes 1, 2, 4 and 8: eight sequences with prompts of
// different lengths in shuffled blocks, then decode steps of 1, 3 (padded to 4), 8, 5 (padded to 8), 2 and 4
// of them, rotating which, so that contexts and tables differ between replays. Each step runs eagerly (the
// batch, and the batch padded to the graph's size), then through the graph, which must give the padded
// eager run's bits and the unpadded one's logits within kUnpaddedTolerance.
class DecodeGraphs : public ::testing::TestWithParam<std::string> {};

TEST_P(DecodeGraphs, ReplaysGiveTheEagerLogits) {
  CudaBackend gpu;
  auto model = DeepseekModel::load(fixture_dir(GetParam()), gpu);
  const int32_t bs = 16;
  model->allocate_kv_cache(64, bs);
  const std::vector<int64_t> sizes = {1, 2, 4, 8};
  const DecodeGraphSummary summary = model->capture_decode_graphs(sizes, 16);
  std::printf("SUMMARY graphs %s: %s\n", GetParam().c_str(), summary.line().c_str());
  ASSERT_TRUE(summary.failure.empty()) << summary.failure;
  ASSERT_EQ(summary.sizes, sizes);
  const int64_t vocab = model->config().vocab_size;

  // Eight prompts of 5..40 tokens in blocks 1..63 (block 0 holds the capture's warm-up key), shuffled.
  std::mt19937_64 gen(31);
  std::vector<int32_t> free(63);
  std::iota(free.begin(), free.end(), 1);
  std::shuffle(free.begin(), free.end(), gen);
  std::vector<std::vector<int32_t>> tokens(8), tables(8);
  std::vector<testing::SeqStep> prefill;
  size_t next = 0;
  for (int i = 0; i < 8; ++i) {
    const int32_t len = 5 + 5 * i;
    for (int32_t k = 0; k < len; ++k) tokens[i].push_back(static_cast<int32_t>((7 * k + 13 * i) % vocab));
    for (int b = 0; b < 4; ++b) tables[i].push_back(free.at(next++));  // room for 64 tokens
    prefill.push_back({tokens[i], 0, tables[i]});
  }
  const Tensor prefill_logits = model->forward_eager(testing::make_batch(prefill, bs));
  const std::vector<float> first = to_host(gpu, prefill_logits);
  for (int i = 0; i < 8; ++i) {
    const float* row = first.data() + i * vocab;
    tokens[i].push_back(static_cast<int32_t>(std::max_element(row, row + vocab) - row));
  }

  int rotate = 0;
  for (const int batch_size : {1, 3, 8, 5, 2, 4}) {
    std::vector<int> which;
    for (int k = 0; k < batch_size; ++k) which.push_back((rotate + k) % 8);
    rotate += 3;
    std::vector<int32_t> lens, step_tokens;
    std::vector<std::vector<int32_t>> step_tables;
    for (int i : which) {
      lens.push_back(static_cast<int32_t>(tokens[i].size()));
      step_tokens.push_back(tokens[i].back());
      step_tables.push_back(tables[i]);
    }
    const ForwardBatch batch = decode_batch(lens, step_tables, step_tokens, bs);
    const int64_t padded = padded_decode_size(sizes, batch_size);
    ASSERT_EQ(model->decode_graph_size(batch), padded);
    // Eager unpadded, eager padded, then the graph: the last two write the same KV bits for this token.
    const std::vector<float> eager = to_host(gpu, model->forward_eager(batch));
    std::vector<float> eager_padded = to_host(gpu, model->forward_eager(pad_decode_batch(batch, padded)));
    eager_padded.resize(static_cast<size_t>(batch_size * vocab));
    const std::vector<float> replayed = to_host(gpu, model->forward(batch));
    ASSERT_EQ(replayed.size(), static_cast<size_t>(batch_size * vocab));
    EXPECT_TRUE(same_bits(replayed, eager_padded)) << "batch " << batch_size << " padded to " << padded;
    const double err = normalized_error(replayed, eager);
    EXPECT_LT(err, kUnpaddedTolerance) << "batch " << batch_size;
    std::printf(
        "SUMMARY graphs %s batch %d (graph %lld): replay == eager padded %s, vs eager unpadded %.1e\n",
        GetParam().c_str(), batch_size, static_cast<long long>(padded),
        same_bits(replayed, eager_padded) ? "bitwise" : "DIFFERS", err);
    for (size_t k = 0; k < which.size(); ++k) {
      const float* row = replayed.data() + k * vocab;
      tokens[which[k]].push_back(static_cast<int32_t>(std::max_element(row, row + vocab) - row));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DecodeGraphs,
                         ::testing::Values("deepseek_v2_tiny_bf16", "deepseek_v3_tiny_fp8"));

}  // namespace
}  // namespace ds
