// Activation tensors and weight descriptions shared by every backend.
#pragma once

#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include "io/dtype.h"
#include "io/safetensors.h"
#include "util/check.h"

namespace ds {

// A dense row-major activation tensor owned by a backend. The CPU backend stores fp32 on the host; the CUDA
// backend stores bf16 (or fp32, see Backend::empty_f32) in device memory, so `data` is a device pointer there.
struct Tensor {
  std::shared_ptr<void> storage;
  void* data = nullptr;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;

  [[nodiscard]] int64_t numel() const {
    return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
  }
  [[nodiscard]] int64_t dim(int i) const { return shape.at(static_cast<size_t>(i)); }
  [[nodiscard]] int64_t rows() const { return shape.empty() ? 0 : numel() / shape.back(); }
  [[nodiscard]] int64_t cols() const { return shape.empty() ? 0 : shape.back(); }
  [[nodiscard]] float* f32() const {
    DS_CHECK(dtype == DType::kF32, "tensor is {}, not F32", dtype_name(dtype));
    return static_cast<float*>(data);
  }
};

// A weight matrix [rows = out_features, cols = in_features] as stored in the checkpoint, with its block scales
// when stored as FP8: w[r][c] = fp8[r][c] * scale_inv[r / block_rows][c / block_cols].
// Vectors (norm weights, biases) are matrices with rows == 1.
struct Weight {
  const TensorView* tensor = nullptr;
  const TensorView* scale_inv = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t block_rows = 0;
  int64_t block_cols = 0;
  // The backend's own copy, set by Backend::prepare_weight and owned by that backend (which must outlive
  // every use of it). Null on the CPU, which reads `tensor` in place. On the CUDA backend: the bytes of
  // `tensor` as stored (same dtype, FP8 stays FP8), and the block scales converted to fp32
  // [ceil(rows / block_rows), ceil(cols / block_cols)].
  const void* device_data = nullptr;
  const float* device_scale_inv = nullptr;

  [[nodiscard]] bool empty() const { return tensor == nullptr; }
  [[nodiscard]] const std::string& name() const { return tensor->name; }
};

// Converts rows [row_begin, row_end) of w into fp32 at out ([row_end - row_begin, w.cols]).
void dequantize_rows(const Weight& w, int64_t row_begin, int64_t row_end, float* out);

}  // namespace ds
