#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <utility>

#include "util/check.h"

namespace ds {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian data and TensorView hands it out as is");

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// huggingface/safetensors refuses headers above 100 MB; a length beyond that is a corrupt file, and
// refusing it keeps a garbage length from making us parse hundreds of GB as JSON.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
constexpr const char* kIndexFileName = "model.safetensors.index.json";
constexpr uint64_t kPageBytes = 4096;
constexpr uint64_t kProgressEveryBytes = 64ull << 20;

std::string supported_dtypes() {
  std::string names;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3}) {
    if (!names.empty()) names += ", ";
    names += dtype_name(dtype);
  }
  return names;
}

// A header array (shape, data_offsets) for an error message, as dump() prints it, except that nested
// values are elided: json::dump() recurses, and a corrupt header can nest arrays deeply enough to overflow
// the stack while the error is being written.
std::string brief(const json& value) {
  if (!value.is_array()) return value.is_structured() ? std::string(value.type_name()) : value.dump();
  std::string out = "[";
  for (size_t i = 0; i < value.size(); ++i) {
    if (i > 0) out += ',';
    const json& item = value[i];
    out += item.is_array() ? "[...]" : item.is_object() ? "{...}" : item.dump();
  }
  return out + "]";
}

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  [[nodiscard]] int get() const { return fd_; }
  [[nodiscard]] int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

struct ByteRange {
  uint64_t begin = 0;
  uint64_t end = 0;
  const std::string* name = nullptr;
};

// One header entry, checked against the data region [0, data_size). `where` is "<file>: tensor '<name>'".
TensorView parse_entry(const std::string& where, const json& entry, const std::byte* data, uint64_t data_size,
                       ByteRange& range) {
  DS_REQUIRE(entry.is_object(), CheckpointError, "{}: header entry is a {}, expected an object", where,
             entry.type_name());

  const auto dtype_it = entry.find("dtype");
  DS_REQUIRE(dtype_it != entry.end(), CheckpointError, "{}: missing 'dtype'", where);
  DS_REQUIRE(dtype_it->is_string(), CheckpointError, "{}: 'dtype' is a {}, expected a string", where,
             dtype_it->type_name());
  const auto& dtype_str = dtype_it->get_ref<const std::string&>();
  const std::optional<DType> dtype = parse_safetensors_dtype(dtype_str);
  DS_REQUIRE(dtype.has_value(), CheckpointError, "{}: unsupported dtype '{}' (supported: {})", where,
             dtype_str, supported_dtypes());

  const auto shape_it = entry.find("shape");
  DS_REQUIRE(shape_it != entry.end(), CheckpointError, "{}: missing 'shape'", where);
  DS_REQUIRE(shape_it->is_array(), CheckpointError, "{}: 'shape' is a {}, expected an array of integers",
             where, shape_it->type_name());
  std::vector<int64_t> shape;
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& dim : *shape_it) {
    DS_REQUIRE(dim.is_number_integer(), CheckpointError, "{}: shape {} has a non-integer dimension", where,
               brief(*shape_it));
    // nlohmann keeps non-negative integers as unsigned, negative ones as signed.
    DS_REQUIRE(dim.is_number_unsigned(), CheckpointError, "{}: shape {} has a negative dimension", where,
               brief(*shape_it));
    const uint64_t d = dim.get<uint64_t>();
    DS_REQUIRE(d <= static_cast<uint64_t>(INT64_MAX), CheckpointError,
               "{}: shape {} has a dimension too large", where, brief(*shape_it));
    overflow = overflow || __builtin_mul_overflow(numel, d, &numel);
    shape.push_back(static_cast<int64_t>(d));
  }
  uint64_t nbytes = 0;
  overflow = overflow || __builtin_mul_overflow(numel, dtype_size(*dtype), &nbytes);
  overflow = overflow || numel > static_cast<uint64_t>(INT64_MAX);

  const auto offsets_it = entry.find("data_offsets");
  DS_REQUIRE(offsets_it != entry.end(), CheckpointError, "{}: missing 'data_offsets'", where);
  DS_REQUIRE(offsets_it->is_array() && offsets_it->size() == 2 && (*offsets_it)[0].is_number_unsigned() &&
                 (*offsets_it)[1].is_number_unsigned(),
             CheckpointError, "{}: 'data_offsets' is {}, expected [begin, end] with non-negative integers",
             where, brief(*offsets_it));
  const uint64_t begin = (*offsets_it)[0].get<uint64_t>();
  const uint64_t end = (*offsets_it)[1].get<uint64_t>();
  DS_REQUIRE(begin <= end, CheckpointError, "{}: data_offsets [{}, {}] has begin after end", where, begin,
             end);
  DS_REQUIRE(end <= data_size, CheckpointError,
             "{}: data_offsets [{}, {}] run past the end of the data region ({} bytes; file truncated?)",
             where, begin, end, data_size);
  DS_REQUIRE(!overflow, CheckpointError, "{}: shape {} of {} is too large (its byte count overflows 64 bits)",
             where, brief(*shape_it), dtype_str);
  DS_REQUIRE(nbytes == end - begin, CheckpointError,
             "{}: shape {} of {} needs {} bytes but data_offsets [{}, {}] hold {}", where, brief(*shape_it),
             dtype_str, nbytes, begin, end, end - begin);

  range.begin = begin;
  range.end = end;
  TensorView view;
  view.dtype = *dtype;
  view.shape = std::move(shape);
  view.data = data + begin;
  view.nbytes = static_cast<size_t>(nbytes);
  return view;
}

}  // namespace

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
  if (fd_ >= 0) ::close(fd_);
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string file = path.string();
  // The destructor unmaps, so every throw below leaves nothing behind.
  std::unique_ptr<SafetensorsFile> st(new SafetensorsFile());
  st->path_ = path;
  {
    FileDescriptor fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    DS_REQUIRE(fd.get() >= 0, CheckpointError, "{}: cannot open: {}", file, std::strerror(errno));
    struct stat sb {};
    DS_REQUIRE(::fstat(fd.get(), &sb) == 0, CheckpointError, "{}: cannot stat: {}", file,
               std::strerror(errno));
    DS_REQUIRE(S_ISREG(sb.st_mode), CheckpointError, "{}: not a regular file", file);
    const auto size = static_cast<uint64_t>(sb.st_size);
    DS_REQUIRE(size >= 8, CheckpointError,
               "{}: file is {} bytes, shorter than the 8-byte header length of a safetensors file", file,
               size);
    void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    DS_REQUIRE(mapping != MAP_FAILED, CheckpointError, "{}: cannot mmap {} bytes: {}", file, size,
               std::strerror(errno));
    st->mapping_ = mapping;
    st->size_ = size;
    st->fd_ = fd.release();
  }

  const auto* bytes = static_cast<const std::byte*>(st->mapping_);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, sizeof header_len);
  DS_REQUIRE(header_len <= st->size_ - 8, CheckpointError,
             "{}: header length {} runs past the end of the file ({} bytes; truncated or not safetensors?)",
             file, header_len, st->size_);
  DS_REQUIRE(header_len <= kMaxHeaderBytes, CheckpointError,
             "{}: header length {} is above the {} byte limit (corrupt file?)", file, header_len,
             kMaxHeaderBytes);

  const auto* header_begin = reinterpret_cast<const char*>(bytes + 8);
  json header;
  try {
    header = json::parse(header_begin, header_begin + header_len);
  } catch (const json::exception& e) {
    throw CheckpointError(fmt::format("{}: header is not valid JSON: {}", file, e.what()));
  }
  DS_REQUIRE(header.is_object(), CheckpointError, "{}: header is a JSON {}, expected an object", file,
             header.type_name());

  const std::byte* data = bytes + 8 + header_len;
  const uint64_t data_size = st->size_ - 8 - header_len;
  std::vector<ByteRange> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      DS_REQUIRE(entry.is_object(), CheckpointError, "{}: __metadata__ is a {}, expected an object", file,
                 entry.type_name());
      for (const auto& [key, value] : entry.items()) {
        DS_REQUIRE(value.is_string(), CheckpointError,
                   "{}: __metadata__ value of '{}' is a {}, expected a string", file, key, value.type_name());
        st->metadata_.emplace(key, value.get<std::string>());
      }
      continue;
    }
    ByteRange range;
    TensorView view = parse_entry(fmt::format("{}: tensor '{}'", file, name), entry, data, data_size, range);
    view.name = name;
    view.file = path;
    view.fd = st->fd_;
    view.file_offset = static_cast<uint64_t>(view.data - bytes);
    const auto it = st->tensors_.emplace(name, std::move(view)).first;
    range.name = &it->first;
    if (range.end > range.begin) ranges.push_back(range);
  }

  // Sorted by begin, non-empty ranges are disjoint exactly when each starts at or after the previous end.
  std::sort(ranges.begin(), ranges.end(),
            [](const ByteRange& a, const ByteRange& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const ByteRange& prev = ranges[i - 1];
    const ByteRange& cur = ranges[i];
    DS_REQUIRE(cur.begin >= prev.end, CheckpointError,
               "{}: tensor '{}' (bytes [{}, {})) overlaps tensor '{}' (bytes [{}, {}))", file, *cur.name,
               cur.begin, cur.end, *prev.name, prev.begin, prev.end);
  }
  return st;
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

namespace {

// A shard name from the index is a file name inside the checkpoint directory, nothing else.
bool is_plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

// weight_map of model.safetensors.index.json: tensor name -> shard file name.
std::map<std::string, std::string> read_weight_map(const fs::path& index_path) {
  const std::string file = index_path.string();
  std::ifstream in(index_path, std::ios::binary);
  DS_REQUIRE(in.good(), CheckpointError, "{}: cannot open: {}", file, std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  json index;
  try {
    index = json::parse(text.str());
  } catch (const json::exception& e) {
    throw CheckpointError(fmt::format("{}: not valid JSON: {}", file, e.what()));
  }
  DS_REQUIRE(index.is_object(), CheckpointError, "{}: is a JSON {}, expected an object", file,
             index.type_name());
  const auto map_it = index.find("weight_map");
  DS_REQUIRE(map_it != index.end() && map_it->is_object(), CheckpointError,
             "{}: 'weight_map' is missing or not an object of tensor name -> shard file", file);
  std::map<std::string, std::string> weight_map;
  for (const auto& [tensor, shard] : map_it->items()) {
    DS_REQUIRE(shard.is_string(), CheckpointError,
               "{}: weight_map entry for tensor '{}' is a {}, expected a string", file, tensor,
               shard.type_name());
    const auto& shard_name = shard.get_ref<const std::string&>();
    DS_REQUIRE(
        is_plain_file_name(shard_name), CheckpointError,
        "{}: weight_map puts tensor '{}' in shard '{}', which is not a file name inside the checkpoint "
        "directory",
        file, tensor, shard_name);
    weight_map.emplace(tensor, shard_name);
  }
  return weight_map;
}

std::vector<std::string> list_shards(const fs::path& dir) {
  std::vector<std::string> shards;
  try {
    for (const auto& entry : fs::directory_iterator(dir)) {
      std::error_code ec;
      // is_regular_file follows symlinks, as in the HuggingFace cache's snapshot directories.
      if (entry.path().extension() == ".safetensors" && entry.is_regular_file(ec)) {
        shards.push_back(entry.path().filename().string());
      }
    }
  } catch (const fs::filesystem_error& e) {
    throw CheckpointError(fmt::format("checkpoint directory {}: cannot list: {}", dir.string(), e.what()));
  }
  std::sort(shards.begin(), shards.end());
  return shards;
}

}  // namespace

Checkpoint Checkpoint::open(const std::filesystem::path& dir) {
  std::error_code ec;
  const fs::file_status status = fs::status(dir, ec);
  DS_REQUIRE(fs::exists(status), CheckpointError, "checkpoint directory {} does not exist", dir.string());
  DS_REQUIRE(fs::is_directory(status), CheckpointError, "checkpoint path {} is not a directory",
             dir.string());

  Checkpoint ckpt;
  ckpt.dir_ = dir;
  const fs::path index_path = dir / kIndexFileName;
  std::map<std::string, std::string> weight_map;
  std::vector<std::string> shard_names;
  if (fs::exists(index_path, ec)) {
    weight_map = read_weight_map(index_path);
    std::set<std::string> unique;
    for (const auto& [tensor, shard] : weight_map) unique.insert(shard);
    shard_names.assign(unique.begin(), unique.end());
    for (const std::string& shard : shard_names) {
      DS_REQUIRE(fs::is_regular_file(dir / shard, ec), CheckpointError, "shard {} named by {} does not exist",
                 (dir / shard).string(), index_path.string());
    }
  } else {
    shard_names = list_shards(dir);
    DS_REQUIRE(!shard_names.empty(), CheckpointError,
               "checkpoint directory {} has no {} and no *.safetensors files", dir.string(), kIndexFileName);
  }

  for (const std::string& shard : shard_names) {
    ckpt.shards_.push_back(SafetensorsFile::open(dir / shard));
    for (const auto& [name, view] : ckpt.shards_.back()->tensors()) {
      const auto [it, inserted] = ckpt.index_.emplace(name, &view);
      DS_REQUIRE(inserted, CheckpointError, "tensor '{}' is in two shards: {} and {}", name,
                 it->second->file.string(), view.file.string());
    }
  }

  for (const auto& [tensor, shard] : weight_map) {
    const TensorView* view = ckpt.find(tensor);
    DS_REQUIRE(view != nullptr, CheckpointError, "tensor '{}' is missing from shard {} (where {} puts it)",
               tensor, (dir / shard).string(), index_path.string());
    DS_REQUIRE(view->file.filename() == shard, CheckpointError,
               "tensor '{}' is missing from shard {} (where {} puts it); it is in {}", tensor,
               (dir / shard).string(), index_path.string(), view->file.string());
  }
  return ckpt;
}

const TensorView* Checkpoint::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorView& Checkpoint::get(const std::string& name) const {
  const TensorView* view = find(name);
  DS_REQUIRE(view != nullptr, CheckpointError, "tensor '{}' is missing from checkpoint {}", name,
             dir_.string());
  return *view;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> names;
  names.reserve(index_.size());
  for (const auto& [name, view] : index_) names.push_back(name);
  return names;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (const auto& shard : shards_) total += shard->file_size();
  return total;
}

void Checkpoint::prefetch(const std::function<void(uint64_t, uint64_t)>& on_progress) const {
  const uint64_t total = total_bytes();
  uint64_t done = 0;
  uint64_t next_report = kProgressEveryBytes;
  // One read per page faults it in; the volatile sum keeps the compiler from dropping the reads.
  volatile uint8_t sink = 0;
  for (const auto& shard : shards_) {
    const std::span<const std::byte> bytes = shard->bytes();
    for (uint64_t offset = 0; offset < bytes.size(); offset += kPageBytes) {
      sink = static_cast<uint8_t>(sink + static_cast<uint8_t>(bytes[offset]));
      done += std::min<uint64_t>(kPageBytes, bytes.size() - offset);
      if (done >= next_report && done < total) {
        if (on_progress) on_progress(done, total);
        next_report = done + kProgressEveryBytes;
      }
    }
  }
  if (on_progress) on_progress(done, total);
}

}  // namespace ds
