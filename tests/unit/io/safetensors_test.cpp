#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <initializer_list>
#include <string>

#include "safetensors_writer.h"
#include "util/check.h"

namespace ds {
namespace {

using io_test::le_bytes;
using io_test::SafetensorsBuilder;
using io_test::TempDir;
using io_test::write_bytes;
using io_test::write_safetensors_file;

std::vector<float> to_f32(const TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  convert_to_f32(t.dtype, t.data, out.data(), out.size());
  return out;
}

// The message of the CheckpointError that opening `path` throws; any other outcome fails the test.
std::string open_error(const std::filesystem::path& path) {
  try {
    (void)SafetensorsFile::open(path);
  } catch (const CheckpointError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected CheckpointError, got another exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected CheckpointError opening " << path << ", but it opened";
  return {};
}

void expect_contains(const std::string& message, std::initializer_list<std::string> parts) {
  fprintf(stderr, "MSG: %s\n", message.c_str());
  for (const std::string& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  }
}

// One good F32 tensor "w" of shape [2, 2], the base that the bad-header tests break.
SafetensorsBuilder one_tensor() {
  SafetensorsBuilder b;
  b.add("w", "F32", {2, 2}, le_bytes<float>({1, 2, 3, 4}));
  return b;
}

TEST(SafetensorsFile, ReadsEachDtypeBack) {
  TempDir tmp;
  SafetensorsBuilder b;
  b.add("f32", "F32", {2}, le_bytes<float>({1.0f, -2.5f}))
      .add("f16", "F16", {3}, le_bytes<uint16_t>({0x3c00, 0x7bff, 0x0001}))
      .add("bf16", "BF16", {2, 2}, le_bytes<uint16_t>({0x3f80, 0xc000, 0x3f00, 0x7fc0}))
      .add("fp8", "F8_E4M3", {5}, {0x38, 0x7e, 0x01, 0x7f, 0xff})
      .metadata("format", "pt");
  b.write(tmp / "model.safetensors");

  const auto st = SafetensorsFile::open(tmp / "model.safetensors");
  EXPECT_EQ(st->tensors().size(), 4u);
  EXPECT_EQ(st->metadata().at("format"), "pt");
  EXPECT_EQ(st->path(), tmp / "model.safetensors");
  EXPECT_EQ(st->file_size(), std::filesystem::file_size(tmp / "model.safetensors"));

  const TensorView* f32 = st->find("f32");
  ASSERT_NE(f32, nullptr);
  EXPECT_EQ(f32->name, "f32");
  EXPECT_EQ(f32->dtype, DType::kF32);
  EXPECT_EQ(f32->shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(f32->nbytes, 8u);
  EXPECT_EQ(f32->file, tmp / "model.safetensors");
  EXPECT_EQ(to_f32(*f32), (std::vector<float>{1.0f, -2.5f}));

  const TensorView* f16 = st->find("f16");
  ASSERT_NE(f16, nullptr);
  EXPECT_EQ(f16->dtype, DType::kF16);
  EXPECT_EQ(to_f32(*f16), (std::vector<float>{1.0f, 65504.0f, std::ldexp(1.0f, -24)}));

  const TensorView* bf16 = st->find("bf16");
  ASSERT_NE(bf16, nullptr);
  EXPECT_EQ(bf16->dtype, DType::kBF16);
  EXPECT_EQ(bf16->shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(bf16->numel(), 4);
  EXPECT_EQ(bf16->dim(1), 2);
  const std::vector<float> bf16_values = to_f32(*bf16);
  EXPECT_EQ(bf16_values[0], 1.0f);
  EXPECT_EQ(bf16_values[1], -2.0f);
  EXPECT_EQ(bf16_values[2], 0.5f);
  EXPECT_TRUE(std::isnan(bf16_values[3]));

  const TensorView* fp8 = st->find("fp8");
  ASSERT_NE(fp8, nullptr);
  EXPECT_EQ(fp8->dtype, DType::kF8E4M3);
  EXPECT_EQ(fp8->nbytes, 5u);
  const std::vector<float> fp8_values = to_f32(*fp8);
  EXPECT_EQ(fp8_values[0], 1.0f);
  EXPECT_EQ(fp8_values[1], 448.0f);
  EXPECT_EQ(fp8_values[2], std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(fp8_values[3]));
  EXPECT_TRUE(std::isnan(fp8_values[4]));

  EXPECT_EQ(st->find("absent"), nullptr);
}

TEST(SafetensorsFile, ZeroSizeAndScalarTensors) {
  TempDir tmp;
  SafetensorsBuilder b;
  b.add("empty", "BF16", {0, 4}, {})
      .add("scalar", "F32", {}, le_bytes<float>({7.0f}))
      .add("also_empty", "F32", {3, 0}, {});
  b.write(tmp / "m.safetensors");
  const auto st = SafetensorsFile::open(tmp / "m.safetensors");
  EXPECT_EQ(st->find("empty")->numel(), 0);
  EXPECT_EQ(st->find("empty")->nbytes, 0u);
  EXPECT_EQ(st->find("also_empty")->numel(), 0);
  EXPECT_EQ(st->find("scalar")->numel(), 1);
  EXPECT_TRUE(st->find("scalar")->shape.empty());
  EXPECT_EQ(to_f32(*st->find("scalar")), std::vector<float>{7.0f});
}

TEST(SafetensorsFile, EmptyHeaderAndPaddedHeaderAreFine) {
  TempDir tmp;
  write_safetensors_file(tmp / "empty.safetensors", "{}");
  EXPECT_TRUE(SafetensorsFile::open(tmp / "empty.safetensors")->tensors().empty());
  // Writers pad the header with spaces so the data region starts aligned.
  SafetensorsBuilder b = one_tensor();
  write_safetensors_file(tmp / "padded.safetensors", b.header().dump() + "       ", b.data());
  EXPECT_EQ(to_f32(SafetensorsFile::open(tmp / "padded.safetensors")->tensors().at("w")),
            (std::vector<float>{1, 2, 3, 4}));
}

TEST(SafetensorsFileErrors, MissingFile) {
  TempDir tmp;
  expect_contains(open_error(tmp / "nope.safetensors"), {"nope.safetensors", "cannot open"});
}

TEST(SafetensorsFileErrors, DirectoryInsteadOfFile) {
  TempDir tmp;
  std::filesystem::create_directory(tmp / "dir.safetensors");
  expect_contains(open_error(tmp / "dir.safetensors"), {"dir.safetensors", "not a regular file"});
}

TEST(SafetensorsFileErrors, ShorterThanEightBytes) {
  TempDir tmp;
  write_bytes(tmp / "short.safetensors", {1, 0, 0, 0, 0});
  expect_contains(open_error(tmp / "short.safetensors"), {"short.safetensors", "5 bytes"});
  write_bytes(tmp / "zero.safetensors", {});
  expect_contains(open_error(tmp / "zero.safetensors"), {"zero.safetensors", "0 bytes"});
}

TEST(SafetensorsFileErrors, HeaderLengthPastEndOfFile) {
  TempDir tmp;
  // Header length 1000, then only 4 bytes.
  write_bytes(tmp / "trunc.safetensors", {0xe8, 0x03, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '});
  expect_contains(open_error(tmp / "trunc.safetensors"),
                  {"trunc.safetensors", "header length 1000", "past the end"});
  // 2^64 - 1: 8 + N must not wrap around.
  write_bytes(tmp / "huge.safetensors", {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'});
  expect_contains(open_error(tmp / "huge.safetensors"), {"huge.safetensors", "past the end"});
}

TEST(SafetensorsFileErrors, HeaderLengthAbsurdlyLarge) {
  TempDir tmp;
  // A 200 MiB header length inside a 300 MiB (sparse) file: in bounds, but no real header is that large.
  const uint64_t len = 200ull << 20;
  std::vector<uint8_t> bytes(8);
  for (int i = 0; i < 8; ++i) bytes[static_cast<size_t>(i)] = static_cast<uint8_t>(len >> (8 * i));
  write_bytes(tmp / "absurd.safetensors", bytes);
  std::filesystem::resize_file(tmp / "absurd.safetensors", 300ull << 20);
  expect_contains(open_error(tmp / "absurd.safetensors"), {"absurd.safetensors", "209715200", "limit"});
}

TEST(SafetensorsFileErrors, HeaderNotJson) {
  TempDir tmp;
  write_safetensors_file(tmp / "bad.safetensors", R"({"w": {"dtype": "F32", )");
  expect_contains(open_error(tmp / "bad.safetensors"), {"bad.safetensors", "not valid JSON"});
}

TEST(SafetensorsFileErrors, HeaderNotObject) {
  TempDir tmp;
  write_safetensors_file(tmp / "bad.safetensors", "[1, 2, 3]");
  expect_contains(open_error(tmp / "bad.safetensors"), {"bad.safetensors", "array", "expected an object"});
}

TEST(SafetensorsFileErrors, EntryNotObject) {
  TempDir tmp;
  write_safetensors_file(tmp / "bad.safetensors", R"({"w": 3})");
  expect_contains(open_error(tmp / "bad.safetensors"),
                  {"bad.safetensors", "tensor 'w'", "expected an object"});
}

TEST(SafetensorsFileErrors, MissingDtype) {
  TempDir tmp;
  SafetensorsBuilder b = one_tensor();
  b.header()["w"].erase("dtype");
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"), {"bad.safetensors", "tensor 'w'", "missing 'dtype'"});
}

TEST(SafetensorsFileErrors, DtypeNotString) {
  TempDir tmp;
  SafetensorsBuilder b = one_tensor();
  b.header()["w"]["dtype"] = 7;
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"),
                  {"bad.safetensors", "tensor 'w'", "'dtype'", "number"});
}

TEST(SafetensorsFileErrors, UnknownDtypeListsSupportedOnes) {
  TempDir tmp;
  SafetensorsBuilder b;
  b.add("w", "F8_E5M2", {4}, {1, 2, 3, 4});
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"),
                  {"bad.safetensors", "tensor 'w'", "F8_E5M2", "F32", "F16", "BF16", "F8_E4M3"});
}

TEST(SafetensorsFileErrors, MissingShape) {
  TempDir tmp;
  SafetensorsBuilder b = one_tensor();
  b.header()["w"].erase("shape");
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"), {"bad.safetensors", "tensor 'w'", "missing 'shape'"});
}

TEST(SafetensorsFileErrors, ShapeNotArray) {
  TempDir tmp;
  SafetensorsBuilder b = one_tensor();
  b.header()["w"]["shape"] = "2x2";
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"),
                  {"bad.safetensors", "tensor 'w'", "'shape'", "string"});
}

TEST(SafetensorsFileErrors, ShapeWithNonIntegerDim) {
  TempDir tmp;
  SafetensorsBuilder b = one_tensor();
  b.header()["w"]["shape"] = nlohmann::json::parse("[2, 2.0]");
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"), {"bad.safetensors", "tensor 'w'", "non-integer"});
}

// Found by a deeply nested header run through tests/fuzz/fuzz_safetensors
// (tests/fuzz/regressions/fuzz_safetensors/deep-*): the error message printed the shape or data_offsets
// with json::dump(), which recurses, so a header of 2 MB of '[' overflowed the stack instead of giving a
// CheckpointError. Nested values are elided in messages now.
TEST(SafetensorsFileErrors, DeeplyNestedShapeOrOffsets) {
  TempDir tmp;
  const size_t depth = 1'000'000;
  const std::string nested = std::string(depth, '[') + std::string(depth, ']');
  write_safetensors_file(tmp / "shape.safetensors", R"({"w": {"dtype": "F32", "shape": [2, )" + nested +
                                                        R"(], "data_offsets": [0, 0]}})");
  expect_contains(open_error(tmp / "shape.safetensors"),
                  {"shape.safetensors", "tensor 'w'", "shape [2,[...]] has a non-integer dimension"});
  write_safetensors_file(tmp / "offsets.safetensors",
                         R"({"w": {"dtype": "F32", "shape": [], "data_offsets": )" + nested + "}}");
  expect_contains(open_error(tmp / "offsets.safetensors"),
                  {"offsets.safetensors", "tensor 'w'", "'data_offsets' is [[...]], expected [begin, end]"});
}

TEST(SafetensorsFileErrors, NegativeDim) {
  TempDir tmp;
  SafetensorsBuilder b = one_tensor();
  b.header()["w"]["shape"] = {-2, -2};  // product 4 matches the 16 bytes: only the sign is wrong
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"),
                  {"bad.safetensors", "tensor 'w'", "negative dimension"});
}

TEST(SafetensorsFileErrors, MissingDataOffsets) {
  TempDir tmp;
  SafetensorsBuilder b = one_tensor();
  b.header()["w"].erase("data_offsets");
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"),
                  {"bad.safetensors", "tensor 'w'", "missing 'data_offsets'"});
}

TEST(SafetensorsFileErrors, DataOffsetsIllTyped) {
  TempDir tmp;
  for (const char* offsets :
       {"[0]", "[0, 16, 32]", "[-16, 0]", "[0, \"16\"]", "[0, 16.0]", "{\"begin\": 0}"}) {
    SafetensorsBuilder b = one_tensor();
    b.header()["w"]["data_offsets"] = nlohmann::json::parse(offsets);
    b.write(tmp / "bad.safetensors");
    expect_contains(open_error(tmp / "bad.safetensors"), {"bad.safetensors", "tensor 'w'", "'data_offsets'"});
  }
}

TEST(SafetensorsFileErrors, DataOffsetsBeginAfterEnd) {
  TempDir tmp;
  SafetensorsBuilder b = one_tensor();
  b.header()["w"]["data_offsets"] = {16, 0};
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"), {"bad.safetensors", "tensor 'w'", "begin after end"});
}

TEST(SafetensorsFileErrors, DataOffsetsPastDataRegion) {
  TempDir tmp;
  SafetensorsBuilder b = one_tensor();
  b.header()["w"]["shape"] = {4, 2};
  b.header()["w"]["data_offsets"] = {0, 32};  // the data region holds 16 bytes
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"), {"bad.safetensors", "tensor 'w'", "past the end"});
}

TEST(SafetensorsFileErrors, TruncatedFile) {
  TempDir tmp;
  SafetensorsBuilder b;
  b.add("a", "F32", {2}, le_bytes<float>({1, 2})).add("b", "F32", {2}, le_bytes<float>({3, 4}));
  b.write(tmp / "cut.safetensors");
  std::filesystem::resize_file(tmp / "cut.safetensors",
                               std::filesystem::file_size(tmp / "cut.safetensors") - 1);
  expect_contains(open_error(tmp / "cut.safetensors"), {"cut.safetensors", "tensor 'b'", "truncated"});
}

TEST(SafetensorsFileErrors, OverlappingTensors) {
  TempDir tmp;
  SafetensorsBuilder b;
  b.add("a", "F32", {2}, le_bytes<float>({1, 2})).add("b", "F32", {2}, le_bytes<float>({3, 4}));
  b.header()["b"]["data_offsets"] = {4, 12};
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"),
                  {"bad.safetensors", "tensor 'a'", "tensor 'b'", "overlaps"});
}

TEST(SafetensorsFileErrors, TwoTensorsOnTheSameBytes) {
  TempDir tmp;
  SafetensorsBuilder b;
  b.add("a", "F32", {2}, le_bytes<float>({1, 2})).add("b", "F32", {2}, le_bytes<float>({3, 4}));
  b.header()["b"]["data_offsets"] = {0, 8};
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"), {"bad.safetensors", "'a'", "'b'", "overlaps"});
}

TEST(SafetensorsFileErrors, ShapeDoesNotMatchByteCount) {
  TempDir tmp;
  SafetensorsBuilder b = one_tensor();
  b.header()["w"]["shape"] = {3};  // 12 bytes of F32, but the offsets hold 16
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"),
                  {"bad.safetensors", "tensor 'w'", "needs 12 bytes", "hold 16"});
}

TEST(SafetensorsFileErrors, ShapeProductOverflows) {
  TempDir tmp;
  // 2^32 * 2^32 wraps to 0 in 64 bits, which would match offsets [0, 0] if unchecked.
  SafetensorsBuilder b;
  b.add("w", "F32", {int64_t{1} << 32, int64_t{1} << 32}, {});
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"), {"bad.safetensors", "tensor 'w'", "overflows"});
  // 2^62 elements fit, 2^62 * 4 bytes wraps to 0.
  SafetensorsBuilder c;
  c.add("v", "F32", {int64_t{1} << 62}, {});
  c.write(tmp / "bad2.safetensors");
  expect_contains(open_error(tmp / "bad2.safetensors"), {"bad2.safetensors", "tensor 'v'", "overflows"});
}

TEST(SafetensorsFileErrors, MetadataNotStringMap) {
  TempDir tmp;
  SafetensorsBuilder b = one_tensor();
  b.header()["__metadata__"] = {{"format", 1}};
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"),
                  {"bad.safetensors", "__metadata__", "'format'", "string"});
  b.header()["__metadata__"] = "pt";
  b.write(tmp / "bad.safetensors");
  expect_contains(open_error(tmp / "bad.safetensors"),
                  {"bad.safetensors", "__metadata__", "expected an object"});
}

TEST(SafetensorsFileErrors, EveryTruncationIsACheckpointError) {
  // Cutting a good file anywhere (inside the length, the header or the data) must be caught, never read past.
  TempDir tmp;
  SafetensorsBuilder b;
  b.add("a", "BF16", {3}, le_bytes<uint16_t>({1, 2, 3})).add("b", "F8_E4M3", {2}, {0x38, 0x40});
  b.write(tmp / "full.safetensors");
  const auto full_size = std::filesystem::file_size(tmp / "full.safetensors");
  for (uintmax_t size = 0; size < full_size; ++size) {
    std::filesystem::copy_file(tmp / "full.safetensors", tmp / "cut.safetensors",
                               std::filesystem::copy_options::overwrite_existing);
    std::filesystem::resize_file(tmp / "cut.safetensors", size);
    SCOPED_TRACE(size);
    expect_contains(open_error(tmp / "cut.safetensors"), {"cut.safetensors"});
  }
  EXPECT_EQ(SafetensorsFile::open(tmp / "full.safetensors")->tensors().size(), 2u);
}

}  // namespace
}  // namespace ds
