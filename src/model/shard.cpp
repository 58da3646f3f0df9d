#include "model/shard.h"

#include <cstring>

namespace ds {
namespace {

size_t elem(const TensorView& t) {
  return dtype_size(t.dtype);
}

// A weight whose values are `values` [rows, cols] in F32, owned by the store.
Weight owned_f32(const Weight& w, std::vector<float> values, int64_t rows, int64_t cols, ShardStore& store) {
  auto bytes = std::make_unique<std::byte[]>(values.size() * sizeof(float));
  std::memcpy(bytes.get(), values.data(), values.size() * sizeof(float));
  TensorView v;
  v.name = w.tensor->name;
  v.dtype = DType::kF32;
  v.shape = {rows, cols};
  v.data = bytes.get();
  v.nbytes = values.size() * sizeof(float);
  v.file = w.tensor->file;
  Weight out;
  out.tensor = store.add(std::move(v), std::move(bytes));
  out.rows = rows;
  out.cols = cols;
  return out;
}

// Rows [r0, r1) of a tensor as a view of the same bytes (same file descriptor, offset moved).
TensorView row_view(const TensorView& t, int64_t cols, int64_t r0, int64_t r1) {
  TensorView v = t;
  const size_t row_bytes = static_cast<size_t>(cols) * elem(t);
  v.data = t.data + static_cast<size_t>(r0) * row_bytes;
  v.nbytes = static_cast<size_t>(r1 - r0) * row_bytes;
  v.file_offset = t.file_offset + static_cast<uint64_t>(r0) * row_bytes;
  v.shape = t.shape.size() == 1 ? std::vector<int64_t>{r1 - r0} : std::vector<int64_t>{r1 - r0, cols};
  return v;
}

// Columns [c0, c1) of every row of a [rows, cols] tensor, copied into the store.
const TensorView* col_copy(const TensorView& t, int64_t rows, int64_t cols, int64_t c0, int64_t c1,
                           ShardStore& store) {
  const size_t e = elem(t), width = static_cast<size_t>(c1 - c0) * e;
  auto bytes = std::make_unique<std::byte[]>(static_cast<size_t>(rows) * width);
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(bytes.get() + static_cast<size_t>(r) * width,
                t.data + (static_cast<size_t>(r) * static_cast<size_t>(cols) + static_cast<size_t>(c0)) * e,
                width);
  TensorView v;
  v.name = t.name;
  v.dtype = t.dtype;
  v.shape = {rows, c1 - c0};
  v.data = bytes.get();
  v.nbytes = static_cast<size_t>(rows) * width;
  v.file = t.file;
  return store.add(std::move(v), std::move(bytes));
}

}  // namespace

const TensorView* ShardStore::add(TensorView view, std::unique_ptr<std::byte[]> bytes) {
  if (bytes != nullptr) {
    view.data = bytes.get();
    view.fd = -1;  // host memory: the upload copies it from there
    view.file_offset = 0;
    bytes_.push_back(std::move(bytes));
  }
  views_.push_back(std::move(view));
  return &views_.back();
}

Weight weight_rows(const Weight& w, int64_t r0, int64_t r1, ShardStore& store) {
  DS_CHECK(0 <= r0 && r0 <= r1 && r1 <= w.rows, "rows [{}, {}) of {} ({} rows)", r0, r1, w.name(), w.rows);
  if (w.scale_inv != nullptr && r0 % w.block_rows != 0) {
    std::vector<float> v(static_cast<size_t>((r1 - r0) * w.cols));
    dequantize_rows(w, r0, r1, v.data());
    return owned_f32(w, std::move(v), r1 - r0, w.cols, store);
  }
  Weight out = w;
  out.tensor = store.add(row_view(*w.tensor, w.cols, r0, r1));
  out.rows = r1 - r0;
  if (w.scale_inv != nullptr) {
    const int64_t b0 = r0 / w.block_rows, b1 = (r1 + w.block_rows - 1) / w.block_rows;
    out.scale_inv = store.add(row_view(*w.scale_inv, w.scale_inv->shape.at(1), b0, b1));
  }
  return out;
}

Weight weight_cols(const Weight& w, int64_t c0, int64_t c1, ShardStore& store) {
  DS_CHECK(0 <= c0 && c0 <= c1 && c1 <= w.cols, "columns [{}, {}) of {} ({} columns)", c0, c1, w.name(),
           w.cols);
  if (w.scale_inv != nullptr && c0 % w.block_cols != 0) {
    std::vector<float> row(static_cast<size_t>(w.cols)), v;
    v.reserve(static_cast<size_t>(w.rows * (c1 - c0)));
    for (int64_t r = 0; r < w.rows; ++r) {
      dequantize_rows(w, r, r + 1, row.data());
      v.insert(v.end(), row.begin() + c0, row.begin() + c1);
    }
    return owned_f32(w, std::move(v), w.rows, c1 - c0, store);
  }
  Weight out = w;
  out.tensor = col_copy(*w.tensor, w.rows, w.cols, c0, c1, store);
  out.cols = c1 - c0;
  if (w.scale_inv != nullptr) {
    const int64_t b0 = c0 / w.block_cols, b1 = (c1 + w.block_cols - 1) / w.block_cols;
    const int64_t scale_rows = w.scale_inv->shape.at(0), scale_cols = w.scale_inv->shape.at(1);
    out.scale_inv = col_copy(*w.scale_inv, scale_rows, scale_cols, b0, b1, store);
  }
  return out;
}

void validate_tensor_parallel(const ModelConfig& c, int tp, bool expert_parallel) {
  DS_REQUIRE(tp >= 1, UserError, "--tensor-parallel-size {}: must be at least 1", tp);
  if (tp == 1) return;
  DS_REQUIRE(c.num_attention_heads % tp == 0, UserError,
             "--tensor-parallel-size {}: num_attention_heads {} is not divisible by it", tp,
             c.num_attention_heads);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    if (!c.is_moe_layer(i)) {
      DS_REQUIRE(c.intermediate_size % tp == 0, UserError,
                 "--tensor-parallel-size {}: intermediate_size {} is not divisible by it", tp,
                 c.intermediate_size);
    } else if (expert_parallel) {
      DS_REQUIRE(c.n_routed_experts % tp == 0, UserError,
                 "--enable-expert-parallel over {} ranks: n_routed_experts {} is not divisible by it", tp,
                 c.n_routed_experts);
      DS_REQUIRE(c.n_shared_experts == 0 || (c.moe_intermediate_size * c.n_shared_experts) % tp == 0, UserError,
                 "--tensor-parallel-size {}: the shared experts' intermediate size {} is not divisible by it", tp,
                 c.moe_intermediate_size * c.n_shared_experts);
    } else {
      DS_REQUIRE(c.moe_intermediate_size % tp == 0, UserError,
                 "--tensor-parallel-size {}: moe_intermediate_size {} is not divisible by it", tp,
                 c.moe_intermediate_size);
    }
  }
}

void shard_weights(ModelWeights& w, const ModelConfig& c, TensorParallel tp, ShardStore& store) {
  if (tp.size == 1) return;
  validate_tensor_parallel(c, tp.size, tp.expert_parallel);
  const int64_t n = tp.size, r = tp.rank;
  const int64_t heads = c.num_attention_heads / n, h0 = r * heads;
  auto mlp = [&](MlpWeights& m) {
    const int64_t inter = m.gate_proj.rows / n, i0 = r * inter;
    m.gate_proj = weight_rows(m.gate_proj, i0, i0 + inter, store);
    m.up_proj = weight_rows(m.up_proj, i0, i0 + inter, store);
    m.down_proj = weight_cols(m.down_proj, i0, i0 + inter, store);
  };
  for (LayerWeights& layer : w.layers) {
    AttentionWeights& a = layer.attn;
    const int64_t qk = c.qk_head_dim(), kvb = c.qk_nope_head_dim + c.v_head_dim;
    Weight& q = c.q_lora_rank > 0 ? a.q_b_proj : a.q_proj;
    q = weight_rows(q, h0 * qk, (h0 + heads) * qk, store);
    a.kv_b_proj = weight_rows(a.kv_b_proj, h0 * kvb, (h0 + heads) * kvb, store);
    a.o_proj = weight_cols(a.o_proj, h0 * c.v_head_dim, (h0 + heads) * c.v_head_dim, store);
    if (!layer.is_moe) {
      mlp(layer.mlp);
    } else {
      std::vector<MlpWeights>& experts = layer.moe.experts;
      if (tp.expert_parallel) {
        const int64_t per_rank = static_cast<int64_t>(experts.size()) / n;
        for (int64_t e = 0; e < static_cast<int64_t>(experts.size()); ++e)
          if (e / per_rank != r) experts[static_cast<size_t>(e)] = MlpWeights{};  // another rank's
      } else {
        for (MlpWeights& e : experts) mlp(e);
      }
      if (layer.moe.has_shared_experts) mlp(layer.moe.shared_experts);
    }
  }
}

}  // namespace ds
