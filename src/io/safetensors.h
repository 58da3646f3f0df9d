// Safetensors over mmap, and a checkpoint directory of shards.
//
// File layout: u64 little-endian header length N, N bytes of JSON header
//   {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {...}}
// then the data region; offsets are relative to the start of the data region (8 + N).
// Every structural problem is a CheckpointError naming the file and, where there is one, the tensor:
// the reader never touches a byte outside the mapping.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/dtype.h"

namespace ds {

struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;  // row-major; [] is a scalar
  const std::byte* data = nullptr;
  size_t nbytes = 0;
  std::filesystem::path file;  // the shard it came from, for error messages
  // The same bytes in the shard's file, for readers that copy with pread rather than through the map (the
  // CUDA weight upload): a descriptor open for as long as the shard is, and the data's offset in the file.
  int fd = -1;
  uint64_t file_offset = 0;

  [[nodiscard]] int64_t numel() const;
  [[nodiscard]] int64_t dim(int i) const { return shape.at(static_cast<size_t>(i)); }
};

class SafetensorsFile {
 public:
  // Maps the file read-only and validates the whole header. Throws CheckpointError.
  static std::unique_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  [[nodiscard]] const TensorView* find(const std::string& name) const;
  [[nodiscard]] const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const { return metadata_; }
  [[nodiscard]] size_t file_size() const { return size_; }
  // The whole mapped file, header included.
  [[nodiscard]] std::span<const std::byte> bytes() const {
    return {static_cast<const std::byte*>(mapping_), size_};
  }

 private:
  SafetensorsFile() = default;

  std::filesystem::path path_;
  int fd_ = -1;  // kept open for TensorView::fd
  void* mapping_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint directory: `model.safetensors.index.json` (weight_map: tensor -> shard file) when present,
// else every `*.safetensors` file in the directory. Shards named by the index must all exist and hold the
// tensors the index assigns them; a tensor in two shards is an error.
class Checkpoint {
 public:
  static Checkpoint open(const std::filesystem::path& dir);

  [[nodiscard]] const std::filesystem::path& dir() const { return dir_; }
  [[nodiscard]] const TensorView* find(const std::string& name) const;
  // Throws CheckpointError "tensor '<name>' is missing from checkpoint <dir>" when absent.
  [[nodiscard]] const TensorView& get(const std::string& name) const;
  [[nodiscard]] bool contains(const std::string& name) const { return find(name) != nullptr; }
  [[nodiscard]] std::vector<std::string> names() const;
  [[nodiscard]] uint64_t total_bytes() const;  // sum of the shards' sizes

  // Reads every page of every shard once (so later accesses do not fault on disk), reporting progress as
  // (bytes_done, bytes_total) every few MB and once at the end.
  void prefetch(const std::function<void(uint64_t, uint64_t)>& on_progress) const;

 private:
  std::filesystem::path dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> shards_;
  std::map<std::string, const TensorView*> index_;
};

}  // namespace ds
