// A checkpoint that does not fit its config.json is a CheckpointError/ConfigError naming the tensor and the
// file; the MTP layers of an official V3 checkpoint are skipped whether present or not.
#include <gtest/gtest.h>

#include <fstream>

#include "../io/safetensors_writer.h"
#include "backend/cpu/cpu_backend.h"
#include "fixture.h"
#include "model/deepseek.h"

namespace ds {
namespace {

namespace fs = std::filesystem;
using io_test::TempDir;

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

void write_json(const fs::path& p, const nlohmann::json& j) { std::ofstream(p) << j.dump(2); }

// A copy of a fixture checkpoint that a test may break.
fs::path copy_fixture(const TempDir& tmp, const std::string& name) {
  const fs::path dst = tmp.path() / name;
  fs::copy(testing::fixture_dir(name), dst, fs::copy_options::recursive);
  return dst;
}

// Removes tensors (by predicate) from whichever shard holds them, and from the index.
template <typename Pred>
void drop_tensors(const fs::path& dir, Pred drop) {
  auto index = read_json(dir / "model.safetensors.index.json");
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= uint64_t{bytes[static_cast<size_t>(i)]} << (8 * i);
    auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<int64_t>(n));
    for (auto it = header.begin(); it != header.end();) it = drop(it.key()) ? header.erase(it) : std::next(it);
    io_test::write_safetensors_file(entry.path(), header.dump(),
                                    std::vector<uint8_t>(bytes.begin() + 8 + static_cast<int64_t>(n), bytes.end()));
  }
  auto& map = index["weight_map"];
  for (auto it = map.begin(); it != map.end();) it = drop(it.key()) ? map.erase(it) : std::next(it);
  write_json(dir / "model.safetensors.index.json", index);
}

std::string load_error(const fs::path& dir) {
  CpuBackend backend(1);
  try {
    (void)DeepseekModel::load(dir, backend);
  } catch (const UserError& e) {
    return e.what();
  }
  return "(loaded)";
}

TEST(BadCheckpoint, ShapeThatDisagreesWithConfigNamesTensorAndFile) {
  TempDir tmp;
  const fs::path dir = copy_fixture(tmp, "deepseek_v3_tiny_bf16");
  auto config = read_json(dir / "config.json");
  config["kv_lora_rank"] = 64;
  write_json(dir / "config.json", config);
  const std::string e = load_error(dir);
  EXPECT_NE(e.find("tensor 'model.layers.0.self_attn.kv_a_proj_with_mqa.weight' in "), std::string::npos) << e;
  EXPECT_NE(e.find(".safetensors has shape [160, 256], expected [96, 256] from config.json"), std::string::npos) << e;
}

TEST(BadCheckpoint, MissingExpertTensorIsNamed) {
  TempDir tmp;
  const fs::path dir = copy_fixture(tmp, "deepseek_v3_tiny_bf16");
  drop_tensors(dir, [](const std::string& n) { return n == "model.layers.2.mlp.experts.5.up_proj.weight"; });
  const std::string e = load_error(dir);
  EXPECT_NE(e.find("tensor 'model.layers.2.mlp.experts.5.up_proj.weight' is missing from checkpoint"),
            std::string::npos)
      << e;
}

TEST(BadCheckpoint, Fp8WeightWithoutItsScalesIsNamed) {
  TempDir tmp;
  const fs::path dir = copy_fixture(tmp, "deepseek_v3_tiny_fp8");
  drop_tensors(dir, [](const std::string& n) { return n == "model.layers.1.self_attn.o_proj.weight_scale_inv"; });
  const std::string e = load_error(dir);
  EXPECT_NE(e.find("tensor 'model.layers.1.self_attn.o_proj.weight' in "), std::string::npos) << e;
  EXPECT_NE(e.find("is F8_E4M3 but 'model.layers.1.self_attn.o_proj.weight_scale_inv' (its block scales) is missing"),
            std::string::npos)
      << e;
}

TEST(BadCheckpoint, Fp8WeightsWithoutQuantizationConfigAreRefused) {
  TempDir tmp;
  const fs::path dir = copy_fixture(tmp, "deepseek_v3_tiny_fp8");
  auto config = read_json(dir / "config.json");
  config.erase("quantization_config");
  write_json(dir / "config.json", config);
  const std::string e = load_error(dir);
  EXPECT_NE(e.find("is F8_E4M3 but config.json has no fp8 quantization_config"), std::string::npos) << e;
}

TEST(BadCheckpoint, ShardNamedInTheIndexButAbsent) {
  TempDir tmp;
  const fs::path dir = copy_fixture(tmp, "deepseek_v2_tiny_bf16");
  fs::remove(dir / "model-00002-of-00002.safetensors");
  const std::string e = load_error(dir);
  EXPECT_NE(e.find("model-00002-of-00002.safetensors"), std::string::npos) << e;
}

TEST(BadCheckpoint, MtpLayersAreSkippedWhetherPresentOrNot) {
  // The official V3 checkpoint stores the multi-token-prediction layer as model.layers.<num_hidden_layers>.
  TempDir tmp;
  const fs::path dir = copy_fixture(tmp, "deepseek_v3_tiny_bf16");
  drop_tensors(dir, [](const std::string& n) { return n.rfind("model.layers.3.", 0) == 0; });
  CpuBackend backend(1);
  auto with_mtp = DeepseekModel::load(testing::fixture_dir("deepseek_v3_tiny_bf16"), backend);
  auto without_mtp = DeepseekModel::load(dir, backend);
  with_mtp->allocate_kv_cache(1, 16);
  without_mtp->allocate_kv_cache(1, 16);
  const ForwardBatch batch = testing::make_batch({testing::SeqStep{{7, 8, 9}, 0, {0}}}, 16);
  const Tensor a = with_mtp->forward(batch);
  const Tensor b = without_mtp->forward(batch);
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.f32()[i], b.f32()[i]);
}

}  // namespace
}  // namespace ds
