#include <gtest/gtest.h>

#include <filesystem>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "safetensors_writer.h"
#include "util/check.h"

namespace ds {
namespace {

namespace fs = std::filesystem;
using io_test::le_bytes;
using io_test::SafetensorsBuilder;
using io_test::TempDir;
using io_test::write_text;

constexpr const char* kIndex = "model.safetensors.index.json";

void write_index(const TempDir& dir, const nlohmann::json& weight_map) {
  write_text(dir / kIndex,
             nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump());
}

// Two shards as HuggingFace writes them: embed + layer 0 in the first, layer 1 + head in the second.
void write_two_shards(const TempDir& dir) {
  SafetensorsBuilder first;
  first.add("model.embed_tokens.weight", "BF16", {2, 2}, le_bytes<uint16_t>({0x3f80, 0x4000, 0x4040, 0x4080}))
      .add("model.layers.0.weight", "F8_E4M3", {4}, {0x38, 0x40, 0x7e, 0x01});
  first.write(dir / "model-00001-of-00002.safetensors");
  SafetensorsBuilder second;
  second.add("model.layers.1.weight", "F32", {2}, le_bytes<float>({0.5f, -0.5f}))
      .add("lm_head.weight", "BF16", {2}, le_bytes<uint16_t>({0xbf80, 0x0000}));
  second.write(dir / "model-00002-of-00002.safetensors");
}

nlohmann::json two_shard_weight_map() {
  return {{"model.embed_tokens.weight", "model-00001-of-00002.safetensors"},
          {"model.layers.0.weight", "model-00001-of-00002.safetensors"},
          {"model.layers.1.weight", "model-00002-of-00002.safetensors"},
          {"lm_head.weight", "model-00002-of-00002.safetensors"}};
}

std::string open_error(const fs::path& dir) {
  try {
    (void)Checkpoint::open(dir);
  } catch (const CheckpointError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected CheckpointError, got another exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected CheckpointError opening " << dir << ", but it opened";
  return {};
}

void expect_contains(const std::string& message, std::initializer_list<std::string> parts) {
  fprintf(stderr, "MSG: %s\n", message.c_str());
  for (const std::string& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  }
}

float first_value(const TensorView& t) {
  float f;
  convert_to_f32(t.dtype, t.data, &f, 1);
  return f;
}

TEST(Checkpoint, ShardedThroughIndex) {
  TempDir dir;
  write_two_shards(dir);
  write_index(dir, two_shard_weight_map());
  // A stray file that the index does not name is not opened.
  write_text(dir / "stray.safetensors", "not a safetensors file");

  const Checkpoint ckpt = Checkpoint::open(dir.path());
  EXPECT_EQ(ckpt.dir(), dir.path());
  EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"lm_head.weight", "model.embed_tokens.weight",
                                                    "model.layers.0.weight", "model.layers.1.weight"}));
  EXPECT_TRUE(ckpt.contains("model.layers.1.weight"));
  EXPECT_FALSE(ckpt.contains("model.layers.2.weight"));

  const TensorView& embed = ckpt.get("model.embed_tokens.weight");
  EXPECT_EQ(embed.file, dir / "model-00001-of-00002.safetensors");
  EXPECT_EQ(embed.shape, (std::vector<int64_t>{2, 2}));
  std::vector<float> values(4);
  convert_to_f32(embed.dtype, embed.data, values.data(), 4);
  EXPECT_EQ(values, (std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f}));

  const TensorView& layer1 = ckpt.get("model.layers.1.weight");
  EXPECT_EQ(layer1.file, dir / "model-00002-of-00002.safetensors");
  EXPECT_EQ(first_value(layer1), 0.5f);
  EXPECT_EQ(first_value(ckpt.get("lm_head.weight")), -1.0f);
  EXPECT_EQ(first_value(ckpt.get("model.layers.0.weight")), 1.0f);

  EXPECT_EQ(ckpt.total_bytes(), fs::file_size(dir / "model-00001-of-00002.safetensors") +
                                    fs::file_size(dir / "model-00002-of-00002.safetensors"));
}

TEST(Checkpoint, GetMissingTensorNamesTensorAndDirectory) {
  TempDir dir;
  write_two_shards(dir);
  const Checkpoint ckpt = Checkpoint::open(dir.path());
  EXPECT_EQ(ckpt.find("model.norm.weight"), nullptr);
  try {
    (void)ckpt.get("model.norm.weight");
    FAIL() << "get of an absent tensor returned";
  } catch (const CheckpointError& e) {
    EXPECT_EQ(std::string(e.what()),
              "tensor 'model.norm.weight' is missing from checkpoint " + dir.path().string());
  }
}

TEST(Checkpoint, WithoutIndexOpensEverySafetensorsFile) {
  TempDir dir;
  write_two_shards(dir);
  write_text(dir / "config.json", "{}");
  write_text(dir / "README.md", "# model");
  const Checkpoint ckpt = Checkpoint::open(dir.path());
  EXPECT_EQ(ckpt.names().size(), 4u);
  EXPECT_EQ(ckpt.get("lm_head.weight").file, dir / "model-00002-of-00002.safetensors");
}

TEST(Checkpoint, MissingShardNamesShardAndIndex) {
  TempDir dir;
  write_two_shards(dir);
  fs::remove(dir / "model-00002-of-00002.safetensors");
  write_index(dir, two_shard_weight_map());
  expect_contains(open_error(dir.path()), {"model-00002-of-00002.safetensors", kIndex, "does not exist"});
}

TEST(Checkpoint, TensorInIndexAbsentFromShard) {
  TempDir dir;
  write_two_shards(dir);
  nlohmann::json weight_map = two_shard_weight_map();
  weight_map["model.norm.weight"] = "model-00002-of-00002.safetensors";
  write_index(dir, weight_map);
  expect_contains(open_error(dir.path()),
                  {"tensor 'model.norm.weight'", "model-00002-of-00002.safetensors", "missing"});
}

TEST(Checkpoint, TensorInIndexFoundInAnotherShard) {
  TempDir dir;
  write_two_shards(dir);
  nlohmann::json weight_map = two_shard_weight_map();
  weight_map["lm_head.weight"] = "model-00001-of-00002.safetensors";  // it is in the second shard
  write_index(dir, weight_map);
  expect_contains(open_error(dir.path()), {"tensor 'lm_head.weight'", "model-00001-of-00002.safetensors",
                                           "it is in", "model-00002-of-00002.safetensors"});
}

TEST(Checkpoint, TensorInTwoShards) {
  TempDir dir;
  write_two_shards(dir);
  SafetensorsBuilder third;
  third.add("lm_head.weight", "BF16", {2}, le_bytes<uint16_t>({0x3f80, 0x3f80}))
      .add("other", "F32", {1}, le_bytes<float>({1}));
  third.write(dir / "extra.safetensors");
  expect_contains(open_error(dir.path()), {"tensor 'lm_head.weight'", "two shards", "extra.safetensors",
                                           "model-00002-of-00002.safetensors"});

  // The same with an index that names all three shards.
  nlohmann::json weight_map = two_shard_weight_map();
  weight_map["other"] = "extra.safetensors";
  write_index(dir, weight_map);
  expect_contains(open_error(dir.path()), {"tensor 'lm_head.weight'", "two shards", "extra.safetensors"});
}

TEST(Checkpoint, IndexShardNameMustStayInDirectory) {
  for (const char* shard : {"../model.safetensors", "sub/model.safetensors", "/etc/passwd", "..", "."}) {
    TempDir dir;
    write_two_shards(dir);
    nlohmann::json weight_map = two_shard_weight_map();
    weight_map["lm_head.weight"] = shard;
    write_index(dir, weight_map);
    expect_contains(open_error(dir.path()), {kIndex, "tensor 'lm_head.weight'", shard});
  }
}

TEST(Checkpoint, BadIndexFile) {
  TempDir dir;
  write_two_shards(dir);
  write_text(dir / kIndex, "{\"weight_map\": ");
  expect_contains(open_error(dir.path()), {kIndex, "not valid JSON"});
  write_text(dir / kIndex, "{\"metadata\": {}}");
  expect_contains(open_error(dir.path()), {kIndex, "weight_map"});
  write_index(dir, {{"lm_head.weight", 2}});
  expect_contains(open_error(dir.path()), {kIndex, "tensor 'lm_head.weight'", "expected a string"});
}

TEST(Checkpoint, BrokenShardNamesShardFile) {
  TempDir dir;
  write_two_shards(dir);
  fs::resize_file(dir / "model-00002-of-00002.safetensors", 4);
  expect_contains(open_error(dir.path()), {"model-00002-of-00002.safetensors", "4 bytes"});
}

TEST(Checkpoint, EmptyDirectory) {
  TempDir dir;
  write_text(dir / "config.json", "{}");
  expect_contains(open_error(dir.path()), {dir.path().string(), "no", "*.safetensors"});
}

TEST(Checkpoint, DirectoryDoesNotExist) {
  TempDir dir;
  expect_contains(open_error(dir / "no-such-model"), {(dir / "no-such-model").string(), "does not exist"});
  write_text(dir / "file", "x");
  expect_contains(open_error(dir / "file"), {(dir / "file").string(), "not a directory"});
}

TEST(Checkpoint, PrefetchReportsTotalBytes) {
  TempDir dir;
  // A 150 MiB tensor (sparse on disk, so cheap) and a small second shard: progress comes at 64 MiB,
  // 128 MiB and once at the end with (total, total).
  const int64_t big = int64_t{150} << 20;
  SafetensorsBuilder first;
  first.add("big", "F8_E4M3", {big}, {});
  first.header()["big"]["data_offsets"] = {0, big};
  const std::string header = first.header().dump();
  io_test::write_safetensors_file(dir / "a.safetensors", header);
  fs::resize_file(dir / "a.safetensors", 8 + header.size() + static_cast<uint64_t>(big));
  SafetensorsBuilder second;
  second.add("small", "F32", {2}, le_bytes<float>({1, 2}));
  second.write(dir / "b.safetensors");

  const Checkpoint ckpt = Checkpoint::open(dir.path());
  const uint64_t total = fs::file_size(dir / "a.safetensors") + fs::file_size(dir / "b.safetensors");
  ASSERT_EQ(ckpt.total_bytes(), total);

  std::vector<std::pair<uint64_t, uint64_t>> calls;
  ckpt.prefetch([&](uint64_t done, uint64_t all) { calls.emplace_back(done, all); });
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[0], std::make_pair(uint64_t{64} << 20, total));
  EXPECT_EQ(calls[1], std::make_pair(uint64_t{128} << 20, total));
  EXPECT_EQ(calls[2], std::make_pair(total, total));
}

TEST(Checkpoint, PrefetchSmallCheckpointReportsOnceAtTheEnd) {
  TempDir dir;
  write_two_shards(dir);
  const Checkpoint ckpt = Checkpoint::open(dir.path());
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  ckpt.prefetch([&](uint64_t done, uint64_t all) { calls.emplace_back(done, all); });
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0], std::make_pair(ckpt.total_bytes(), ckpt.total_bytes()));
  ckpt.prefetch(nullptr);  // progress is optional
}

}  // namespace
}  // namespace ds
