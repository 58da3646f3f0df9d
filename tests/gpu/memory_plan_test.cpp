// The KV cache sized from --gpu-memory-utilization (engine/memory_plan.h) on a real GPU, with the tiny fixture.
#include <gtest/gtest.h>

#include <cstdio>

#include "backend/cuda/cuda_backend.h"
#include "engine/memory_plan.h"
#include "model/deepseek.h"
#include "unit/model/fixture.h"

namespace ds {
namespace {

TEST(MemoryPlan, KvCacheGetsWhatIsLeftOfTheBudgetAndFitsThere) {
  CudaBackend gpu;
  auto model = DeepseekModel::load(testing::fixture_dir("deepseek_v3_tiny_fp8"), gpu);
  const auto mem = gpu.device_memory();
  ASSERT_TRUE(mem.has_value());
  EXPECT_GT(mem->total_bytes, int64_t{8} << 30);
  EXPECT_GT(mem->weight_bytes, 0);
  const KvCachePlan plan = plan_kv_cache(*model, KvCachePlanInput{0.5, 16, 2048, 64, 256, 16});
  std::printf("SUMMARY memory plan at 0.5: %s\n", plan.summary.c_str());
  // Half the card less what is already used, in blocks of 16 tokens x 3 layers x 160 bf16 values (15 KiB):
  // millions of blocks, and never more than half the card.
  const int64_t block_bytes = model->kv_block_bytes(16);
  EXPECT_EQ(block_bytes, 3 * 16 * 160 * 2);
  EXPECT_GT(plan.num_blocks, 1000);
  EXPECT_LT(plan.num_blocks * block_bytes, mem->total_bytes / 2);
  // What the plan promises can be allocated and used.
  model->allocate_kv_cache(plan.num_blocks, 16);
  const auto after = gpu.device_memory();
  EXPECT_GT(after->free_bytes, 0);
}

TEST(MemoryPlan, TooLittleMemoryNamesTheNumbersAndTheFlags) {
  CudaBackend gpu;
  auto model = DeepseekModel::load(testing::fixture_dir("deepseek_v3_tiny_fp8"), gpu);
  try {
    (void)plan_kv_cache(*model, KvCachePlanInput{0.9, 16, 2048, 64, 256, int64_t{1} << 40});
    FAIL() << "expected an error";
  } catch (const UserError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("not enough GPU memory for the KV cache"), std::string::npos) << m;
    EXPECT_NE(m.find("weights"), std::string::npos) << m;
    EXPECT_NE(m.find("--gpu-memory-utilization"), std::string::npos) << m;
    EXPECT_NE(m.find("--max-model-len"), std::string::npos) << m;
  }
  EXPECT_THROW((void)plan_kv_cache(*model, KvCachePlanInput{1.5, 16, 2048, 64, 256, 16}), InvalidArgument);
}

}  // namespace
}  // namespace ds
