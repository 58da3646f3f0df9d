#include "model/weights.h"

#include <fmt/format.h>

namespace ds {
namespace {

std::string shape_str(const std::vector<int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

class Binder {
 public:
  Binder(const Checkpoint& ckpt, const ModelConfig& config) : ckpt_(ckpt), config_(config) {}

  // A 2-D weight [rows, cols]; FP8 weights must come with `<name>_scale_inv` block scales.
  Weight matrix(const std::string& name, int64_t rows, int64_t cols) const {
    const TensorView& t = ckpt_.get(name);
    expect_shape(t, {rows, cols});
    Weight w{&t, nullptr, rows, cols, 0, 0};
    if (t.dtype == DType::kF8E4M3) {
      DS_REQUIRE(config_.fp8.has_value(), CheckpointError,
                 "tensor '{}' in {} is F8_E4M3 but config.json has no fp8 quantization_config", name, t.file.string());
      const std::string scale_name = name + "_scale_inv";
      const TensorView* s = ckpt_.find(scale_name);
      DS_REQUIRE(s != nullptr, CheckpointError, "tensor '{}' in {} is F8_E4M3 but '{}' (its block scales) is missing",
                 name, t.file.string(), scale_name);
      w.block_rows = config_.fp8->block_rows;
      w.block_cols = config_.fp8->block_cols;
      expect_shape(*s, {(rows + w.block_rows - 1) / w.block_rows, (cols + w.block_cols - 1) / w.block_cols});
      DS_REQUIRE(s->dtype != DType::kF8E4M3, CheckpointError, "tensor '{}' in {}: block scales must not be FP8",
                 scale_name, s->file.string());
      w.scale_inv = s;
    }
    return w;
  }

  // A 1-D weight [n] (norm scale, bias); must not be FP8.
  Weight vector(const std::string& name, int64_t n) const {
    const TensorView& t = ckpt_.get(name);
    expect_shape(t, {n});
    DS_REQUIRE(t.dtype != DType::kF8E4M3, CheckpointError, "tensor '{}' in {}: a vector cannot be FP8", name,
               t.file.string());
    return Weight{&t, nullptr, 1, n, 0, 0};
  }

  MlpWeights mlp(const std::string& prefix, int64_t hidden, int64_t inter) const {
    return MlpWeights{matrix(prefix + ".gate_proj.weight", inter, hidden),
                      matrix(prefix + ".up_proj.weight", inter, hidden),
                      matrix(prefix + ".down_proj.weight", hidden, inter)};
  }

 private:
  static void expect_shape(const TensorView& t, const std::vector<int64_t>& shape) {
    DS_REQUIRE(t.shape == shape, CheckpointError, "tensor '{}' in {} has shape {}, expected {} from config.json",
               t.name, t.file.string(), shape_str(t.shape), shape_str(shape));
  }

  const Checkpoint& ckpt_;
  const ModelConfig& config_;
};

AttentionWeights bind_attention(const Binder& b, const ModelConfig& c, const std::string& p) {
  AttentionWeights a;
  const int64_t h = c.hidden_size, heads = c.num_attention_heads;
  if (c.q_lora_rank > 0) {
    a.q_a_proj = b.matrix(p + ".q_a_proj.weight", c.q_lora_rank, h);
    a.q_a_layernorm = b.vector(p + ".q_a_layernorm.weight", c.q_lora_rank);
    a.q_b_proj = b.matrix(p + ".q_b_proj.weight", heads * c.qk_head_dim(), c.q_lora_rank);
  } else {
    a.q_proj = b.matrix(p + ".q_proj.weight", heads * c.qk_head_dim(), h);
  }
  a.kv_a_proj_with_mqa = b.matrix(p + ".kv_a_proj_with_mqa.weight", c.kv_cache_dim(), h);
  a.kv_a_layernorm = b.vector(p + ".kv_a_layernorm.weight", c.kv_lora_rank);
  a.kv_b_proj = b.matrix(p + ".kv_b_proj.weight", heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
  a.o_proj = b.matrix(p + ".o_proj.weight", h, heads * c.v_head_dim);
  return a;
}

}  // namespace

ModelWeights bind_weights(const Checkpoint& checkpoint, const ModelConfig& c) {
  const Binder b(checkpoint, c);
  ModelWeights w;
  w.embed_tokens = b.matrix("model.embed_tokens.weight", c.vocab_size, c.hidden_size);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}", i);
    LayerWeights layer;
    layer.input_layernorm = b.vector(p + ".input_layernorm.weight", c.hidden_size);
    layer.post_attention_layernorm = b.vector(p + ".post_attention_layernorm.weight", c.hidden_size);
    layer.attn = bind_attention(b, c, p + ".self_attn");
    layer.is_moe = c.is_moe_layer(i);
    if (!layer.is_moe) {
      layer.mlp = b.mlp(p + ".mlp", c.hidden_size, c.intermediate_size);
    } else {
      MoeWeights& m = layer.moe;
      m.gate = b.matrix(p + ".mlp.gate.weight", c.n_routed_experts, c.hidden_size);
      if (c.topk_method == TopkMethod::kNoauxTc) {
        m.e_score_correction_bias = b.vector(p + ".mlp.gate.e_score_correction_bias", c.n_routed_experts);
      }
      for (int64_t e = 0; e < c.n_routed_experts; ++e)
        m.experts.push_back(b.mlp(fmt::format("{}.mlp.experts.{}", p, e), c.hidden_size, c.moe_intermediate_size));
      if (c.n_shared_experts > 0) {
        m.shared_experts = b.mlp(p + ".mlp.shared_experts", c.hidden_size, c.moe_intermediate_size * c.n_shared_experts);
        m.has_shared_experts = true;
      }
    }
    w.layers.push_back(std::move(layer));
  }
  w.norm = b.vector("model.norm.weight", c.hidden_size);
  if (c.tie_word_embeddings && !checkpoint.contains("lm_head.weight")) {
    w.lm_head = w.embed_tokens;
  } else {
    w.lm_head = b.matrix("lm_head.weight", c.vocab_size, c.hidden_size);
  }
  return w;
}

void for_each_weight(ModelWeights& w, const std::function<void(Weight&)>& fn) {
  auto visit = [&](Weight& weight) {
    if (!weight.empty()) fn(weight);
  };
  auto visit_mlp = [&](MlpWeights& m) {
    visit(m.gate_proj);
    visit(m.up_proj);
    visit(m.down_proj);
  };
  visit(w.embed_tokens);
  for (LayerWeights& layer : w.layers) {
    visit(layer.input_layernorm);
    visit(layer.post_attention_layernorm);
    AttentionWeights& a = layer.attn;
    for (Weight* x : {&a.q_proj, &a.q_a_proj, &a.q_a_layernorm, &a.q_b_proj, &a.kv_a_proj_with_mqa,
                      &a.kv_a_layernorm, &a.kv_b_proj, &a.o_proj})
      visit(*x);
    visit_mlp(layer.mlp);
    visit(layer.moe.gate);
    visit(layer.moe.e_score_correction_bias);
    for (MlpWeights& e : layer.moe.experts) visit_mlp(e);
    visit_mlp(layer.moe.shared_experts);
  }
  visit(w.norm);
  visit(w.lm_head);
}

}  // namespace ds
