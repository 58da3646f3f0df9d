#include "backend/cpu/cpu_backend.h"

#include <cmath>
#include <cstring>

namespace ds {
namespace {

// Reads a 1-row weight (a norm scale) into fp32.
std::vector<float> vector_f32(const Weight& w) {
  std::vector<float> v(static_cast<size_t>(w.rows * w.cols));
  dequantize_rows(w, 0, w.rows, v.data());
  return v;
}

void rms_norm_row(const float* x, int64_t n, const float* weight, float eps, float* out) {
  // Accumulate in double: HF's fp32 mean differs from ours by far less than the tolerances we hold.
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  const float inv = 1.0f / std::sqrt(static_cast<float>(sum / static_cast<double>(n)) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * inv);
}

}  // namespace

Tensor CpuBackend::empty(std::vector<int64_t> shape) {
  Tensor t;
  t.shape = std::move(shape);
  t.dtype = DType::kF32;
  const int64_t n = std::max<int64_t>(t.numel(), 1);
  auto storage = std::shared_ptr<float[]>(new float[static_cast<size_t>(n)]);
  t.data = storage.get();
  t.storage = std::shared_ptr<void>(storage, storage.get());
  return t;
}

Tensor CpuBackend::empty_i32(std::vector<int64_t> shape) {
  Tensor t;
  t.shape = std::move(shape);
  t.dtype = DType::kI32;
  const int64_t n = std::max<int64_t>(t.numel(), 1);
  auto storage = std::shared_ptr<int32_t[]>(new int32_t[static_cast<size_t>(n)]);
  t.data = storage.get();
  t.storage = std::shared_ptr<void>(storage, storage.get());
  return t;
}

void CpuBackend::fill_zero(Tensor& t) {
  std::memset(t.data, 0, static_cast<size_t>(t.numel()) * dtype_size(t.dtype));
}

void CpuBackend::copy_to_host(const Tensor& t, std::span<float> out) {
  DS_CHECK(static_cast<int64_t>(out.size()) == t.numel(), "copy of {} elements into {}", t.numel(), out.size());
  if (t.dtype == DType::kI32) {
    convert_to_f32(t.dtype, t.data, out.data(), out.size());
    return;
  }
  std::memcpy(out.data(), t.f32(), out.size() * sizeof(float));
}

void CpuBackend::copy_from_host(std::span<const float> in, Tensor& t) {
  DS_CHECK(static_cast<int64_t>(in.size()) == t.numel(), "copy of {} elements into {}", in.size(), t.numel());
  if (t.dtype == DType::kI32) {
    auto* out = static_cast<int32_t*>(t.data);
    for (size_t i = 0; i < in.size(); ++i) {
      DS_CHECK(in[i] == std::trunc(in[i]) && std::abs(in[i]) < 16777216.0f, "{} is not an int32 value", in[i]);
      out[i] = static_cast<int32_t>(in[i]);
    }
    return;
  }
  std::memcpy(t.f32(), in.data(), in.size() * sizeof(float));
}

void CpuBackend::embedding(const Weight& table, std::span<const int32_t> ids, Tensor& out) {
  DS_CHECK(out.rows() == static_cast<int64_t>(ids.size()) && out.cols() == table.cols, "embedding out shape");
  float* o = out.f32();
  pool_.parallel_for(static_cast<int64_t>(ids.size()), 16, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int32_t id = ids[static_cast<size_t>(t)];
      DS_CHECK(id >= 0 && id < table.rows, "token id {} outside the vocabulary [0, {})", id, table.rows);
      dequantize_rows(table, id, id + 1, o + t * table.cols);
    }
  });
}

void CpuBackend::rms_norm(const Tensor& x, const Weight& weight, float eps, Tensor& out) {
  rms_norm_cols(x, 0, weight, eps, out);
}

void CpuBackend::rms_norm_cols(const Tensor& x, int64_t col_offset, const Weight& weight, float eps,
                               Tensor& out) {
  const int64_t width = weight.rows * weight.cols;
  DS_CHECK(col_offset + width <= x.cols() && out.cols() == width && out.rows() == x.rows(),
           "rms_norm shapes: x [{}, {}], offset {}, weight {}, out [{}, {}]", x.rows(), x.cols(), col_offset, width,
           out.rows(), out.cols());
  const std::vector<float> w = vector_f32(weight);
  const float* xp = x.f32();
  float* op = out.f32();
  pool_.parallel_for(x.rows(), 8, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) rms_norm_row(xp + r * x.cols() + col_offset, width, w.data(), eps, op + r * width);
  });
}

void CpuBackend::add(Tensor& acc, const Tensor& x) {
  DS_CHECK(acc.numel() == x.numel(), "add of {} and {} elements", acc.numel(), x.numel());
  float* a = acc.f32();
  const float* b = x.f32();
  for (int64_t i = 0; i < acc.numel(); ++i) a[i] += b[i];
}

void CpuBackend::silu_mul(const Tensor& gate_up, Tensor& out) {
  const int64_t inter = out.cols();
  DS_CHECK(gate_up.cols() == 2 * inter && gate_up.rows() == out.rows(), "silu_mul shapes");
  const float* g = gate_up.f32();
  float* o = out.f32();
  for (int64_t r = 0; r < out.rows(); ++r) {
    const float* gate = g + r * 2 * inter;
    const float* up = gate + inter;
    for (int64_t i = 0; i < inter; ++i) o[r * inter + i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  }
}

void CpuBackend::rope(Tensor& x, std::span<const int32_t> positions, int64_t num_heads, int64_t head_dim,
                      int64_t rope_offset, const RopeParams& rope) {
  const int64_t half = static_cast<int64_t>(rope.inv_freq.size());
  DS_CHECK(x.rows() == static_cast<int64_t>(positions.size()) && x.cols() == num_heads * head_dim &&
               rope_offset + 2 * half <= head_dim,
           "rope shapes: x [{}, {}], heads {}, head_dim {}, offset {}", x.rows(), x.cols(), num_heads, head_dim,
           rope_offset);
  float* xp = x.f32();
  for (int64_t t = 0; t < x.rows(); ++t) {
    // Same arithmetic as HF: fp32 angle = fp32 position * fp32 inv_freq, then cos/sin scaled.
    std::vector<float> cos_v(static_cast<size_t>(half)), sin_v(static_cast<size_t>(half));
    const float pos = static_cast<float>(positions[static_cast<size_t>(t)]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * rope.inv_freq[static_cast<size_t>(i)];
      cos_v[static_cast<size_t>(i)] = std::cos(angle) * rope.attention_factor;
      sin_v[static_cast<size_t>(i)] = std::sin(angle) * rope.attention_factor;
    }
    for (int64_t h = 0; h < num_heads; ++h) {
      float* r = xp + t * x.cols() + h * head_dim + rope_offset;
      // DeepSeek's layout: pairs (r[2i], r[2i+1]) rotate together by angle i.
      for (int64_t i = 0; i < half; ++i) {
        const float a = r[2 * i], b = r[2 * i + 1];
        const float c = cos_v[static_cast<size_t>(i)], s = sin_v[static_cast<size_t>(i)];
        r[2 * i] = a * c - b * s;
        r[2 * i + 1] = b * c + a * s;
      }
    }
  }
}

void CpuBackend::store_kv(const Tensor& latent, const Tensor& k_rope_src, int64_t k_rope_col_offset,
                          std::span<const int64_t> slot_mapping, Tensor& kv_cache) {
  const int64_t lora = latent.cols();
  const int64_t rope = kv_cache.cols() - lora;
  DS_CHECK(latent.rows() == static_cast<int64_t>(slot_mapping.size()) && k_rope_src.rows() == latent.rows() &&
               k_rope_col_offset + rope <= k_rope_src.cols(),
           "store_kv shapes");
  float* cache = kv_cache.f32();
  for (int64_t t = 0; t < latent.rows(); ++t) {
    const int64_t slot = slot_mapping[static_cast<size_t>(t)];
    DS_CHECK(slot >= -1 && slot < kv_cache.rows(), "KV slot {} outside the cache ({} slots)", slot, kv_cache.rows());
    if (slot < 0) continue;  // a padding row: nothing stored
    float* dst = cache + slot * kv_cache.cols();
    std::memcpy(dst, latent.f32() + t * lora, static_cast<size_t>(lora) * sizeof(float));
    std::memcpy(dst + lora, k_rope_src.f32() + t * k_rope_src.cols() + k_rope_col_offset,
                static_cast<size_t>(rope) * sizeof(float));
  }
}

void CpuBackend::copy_blocks(const Tensor& from, Tensor& to, std::span<const BlockMove> moves, int32_t block_size) {
  DS_CHECK(from.cols() == to.cols(), "copy_blocks between caches of width {} and {}", from.cols(), to.cols());
  const int64_t block_elems = int64_t{block_size} * from.cols();
  for (const BlockMove& m : moves) {
    DS_CHECK(m.src >= 0 && (m.src + 1) * int64_t{block_size} <= from.rows() && m.dst >= 0 &&
                 (m.dst + 1) * int64_t{block_size} <= to.rows(),
             "block move {} -> {} out of range", m.src, m.dst);
    std::memcpy(to.f32() + m.dst * block_elems, from.f32() + m.src * block_elems,
                static_cast<size_t>(block_elems) * sizeof(float));
  }
}

void CpuBackend::gather_rows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) {
  DS_CHECK(out.rows() == static_cast<int64_t>(rows.size()) && out.cols() == x.cols(), "gather_rows shapes");
  for (size_t i = 0; i < rows.size(); ++i) {
    DS_CHECK(rows[i] >= 0 && rows[i] < x.rows(), "row {} out of range", rows[i]);
    std::memcpy(out.f32() + static_cast<int64_t>(i) * x.cols(), x.f32() + rows[i] * x.cols(),
                static_cast<size_t>(x.cols()) * sizeof(float));
  }
}

}  // namespace ds
