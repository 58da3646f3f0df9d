#include "backend/tensor.h"

namespace ds {

void dequantize_rows(const Weight& w, int64_t row_begin, int64_t row_end, float* out) {
  DS_CHECK(row_begin >= 0 && row_begin <= row_end && row_end <= w.rows, "rows [{}, {}) of {} ({} rows)", row_begin,
           row_end, w.name(), w.rows);
  const size_t elem = dtype_size(w.tensor->dtype);
  const std::byte* base = w.tensor->data + static_cast<size_t>(row_begin * w.cols) * elem;
  convert_to_f32(w.tensor->dtype, base, out, static_cast<size_t>((row_end - row_begin) * w.cols));
  if (w.scale_inv == nullptr) return;
  // Block scales: one fp32 per [block_rows, block_cols] tile.
  const int64_t scale_cols = w.scale_inv->shape.at(1);
  std::vector<float> scales(static_cast<size_t>(scale_cols));
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t br = r / w.block_rows;
    convert_to_f32(w.scale_inv->dtype,
                   w.scale_inv->data + static_cast<size_t>(br * scale_cols) * dtype_size(w.scale_inv->dtype),
                   scales.data(), scales.size());
    float* row = out + (r - row_begin) * w.cols;
    for (int64_t c = 0; c < w.cols; ++c) row[c] *= scales[static_cast<size_t>(c / w.block_cols)];
  }
}

}  // namespace ds
