#include "model/deepseek.h"

#include <algorithm>

#include "model/rope.h"

namespace ds {

std::unique_ptr<DeepseekModel> DeepseekModel::load(const std::filesystem::path& dir, Backend& backend,
                                                   ModelParallel parallel) {
  ModelConfig config = load_model_config(dir);
  validate_tensor_parallel(config, parallel.tp.size, parallel.tp.expert_parallel);
  Checkpoint checkpoint = Checkpoint::open(dir);
  return std::make_unique<DeepseekModel>(std::move(config), std::move(checkpoint), backend, parallel);
}

DeepseekModel::DeepseekModel(ModelConfig config, Checkpoint checkpoint, Backend& backend, ModelParallel parallel)
    : config_(std::move(config)),
      checkpoint_(std::move(checkpoint)),
      parallel_(parallel),
      local_heads_(config_.num_attention_heads / std::max(parallel.tp.size, 1)),
      weights_(bind_weights(checkpoint_, config_)),
      backend_(backend),
      rope_(make_rope_params(config_)),
      softmax_scale_(static_cast<float>(config_.softmax_scale())) {
  DS_CHECK(parallel_.tp.size == 1 || (parallel_.comm != nullptr && parallel_.comm->size() == parallel_.tp.size &&
                                      parallel_.comm->rank() == parallel_.tp.rank),
           "tensor-parallel rank {} of {} without a matching communicator", parallel_.tp.rank, parallel_.tp.size);
  shard_weights(weights_, config_, parallel_.tp, shards_);
  // A tied lm_head views the embedding's tensor: prepare that once and share the backend's copy.
  const bool tied = weights_.lm_head.tensor == weights_.embed_tokens.tensor;
  std::vector<Weight*> to_prepare;
  for_each_weight(weights_, [&](Weight& w) {
    if (!(tied && &w == &weights_.lm_head)) to_prepare.push_back(&w);
  });
  backend_.prepare_weights(to_prepare);
  if (tied) weights_.lm_head = weights_.embed_tokens;
}

void DeepseekModel::allocate_kv_cache(int64_t num_blocks, int32_t block_size) {
  DS_CHECK(num_blocks > 0 && block_size > 0, "kv cache of {} blocks of {}", num_blocks, block_size);
  clear_decode_graphs();  // they read the old cache
  kv_cache_.clear();
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i)
    kv_cache_.push_back(backend_.empty({num_blocks * block_size, config_.kv_cache_dim()}));
  num_kv_blocks_ = num_blocks;
  block_size_ = block_size;
}

void DeepseekModel::allocate_swap_space(int64_t num_blocks) {
  DS_CHECK(block_size_ > 0, "allocate_kv_cache before allocate_swap_space");
  swap_space_.clear();
  if (num_blocks == 0) return;
  for (int64_t i = 0; i < config_.num_hidden_layers; ++i)
    swap_space_.push_back(backend_.empty_host({num_blocks * block_size_, config_.kv_cache_dim()}));
}

void DeepseekModel::swap_out(std::span<const BlockMove> moves) {
  if (moves.empty()) return;
  DS_CHECK(swap_space_.size() == kv_cache_.size(), "no swap space allocated");
  for (size_t i = 0; i < kv_cache_.size(); ++i) backend_.copy_blocks(kv_cache_[i], swap_space_[i], moves, block_size_);
}

void DeepseekModel::swap_in(std::span<const BlockMove> moves) {
  if (moves.empty()) return;
  DS_CHECK(swap_space_.size() == kv_cache_.size(), "no swap space allocated");
  for (size_t i = 0; i < kv_cache_.size(); ++i) backend_.copy_blocks(swap_space_[i], kv_cache_[i], moves, block_size_);
}

void DeepseekModel::copy_blocks(std::span<const BlockMove> moves) {
  if (moves.empty()) return;
  for (Tensor& layer : kv_cache_) backend_.copy_blocks(layer, layer, moves, block_size_);
}

int64_t DeepseekModel::kv_block_bytes(int32_t block_size) const {
  return config_.num_hidden_layers * int64_t{block_size} * config_.kv_cache_dim() *
         static_cast<int64_t>(dtype_size(backend_.activation_dtype()));
}

Tensor DeepseekModel::forward(const ForwardBatch& batch, std::vector<std::vector<float>>* trace) {
  if (trace == nullptr) {
    if (const int64_t size = decode_graph_size(batch); size > 0) return replay_decode_graph(batch, size);
  }
  return forward_eager(batch, trace);
}

Tensor DeepseekModel::forward_eager(const ForwardBatch& batch, std::vector<std::vector<float>>* trace,
                                    const Tensor* logits_into, int32_t table_pitch) {
  DS_CHECK(!kv_cache_.empty(), "allocate_kv_cache before forward");
  batch.validate(num_kv_blocks_ * block_size_, block_size_);
  const ModelConfig& c = config_;
  const int64_t t = batch.num_tokens(), h = c.hidden_size;
  const StepScope step(backend_, batch, table_pitch);

  const float eps = static_cast<float>(c.rms_norm_eps);
  Tensor hidden = backend_.empty_f32({t, h});  // [T, hidden] residual stream
  backend_.embedding(weights_.embed_tokens, batch.token_ids, hidden);
  auto record = [&](const Tensor& x) {
    if (trace == nullptr) return;
    trace->emplace_back(static_cast<size_t>(x.numel()));
    backend_.copy_to_host(x, trace->back());
  };
  record(hidden);
  Tensor normed = backend_.empty({t, h});
  // [T, hidden] each layer's attention or MLP/MoE output: F32 like the residual it is added to, which saves a
  // bf16 rounding per branch for the price of the output GEMM writing 4 bytes instead of 2.
  Tensor branch = backend_.empty_f32({t, h});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerWeights& layer = weights_.layers[static_cast<size_t>(i)];
    // The previous layer's MLP output joins the residual stream in the same pass that normalizes it.
    if (i == 0) {
      backend_.rms_norm(hidden, layer.input_layernorm, eps, normed);
    } else {
      backend_.add_rms_norm(hidden, branch, layer.input_layernorm, eps, normed);
      record(hidden);  // HF's list holds the input of each layer
    }
    attention(i, normed, batch, branch);
    backend_.add_rms_norm(hidden, branch, layer.post_attention_layernorm, eps, normed);
    if (layer.is_moe) {
      // [T, hidden] the router's input in fp32: the same normalization again where activations are bf16.
      Tensor router_x = normed;
      if (normed.dtype != DType::kF32) {
        router_x = backend_.empty_f32({t, h});
        backend_.rms_norm(hidden, layer.post_attention_layernorm, eps, router_x);
      }
      moe(layer.moe, normed, router_x, branch);
    } else {
      backend_.mlp(normed, layer.mlp, branch);
      reduce_partial(branch);  // this rank's share of the intermediate
    }
  }
  if (c.num_hidden_layers > 0) backend_.add(hidden, branch);  // the last layer's MLP output
  if (trace != nullptr) {
    Tensor all_normed = backend_.empty({t, h});
    backend_.rms_norm(hidden, weights_.norm, eps, all_normed);
    record(all_normed);
  }
  // Only the rows that need logits go through the final norm and lm_head.
  const int64_t n = static_cast<int64_t>(batch.logits_indices.size());
  Tensor last = backend_.empty_f32({n, h});
  backend_.gather_rows(hidden, batch.logits_indices, last);
  Tensor last_normed = backend_.empty({n, h});
  backend_.rms_norm(last, weights_.norm, eps, last_normed);
  Tensor logits;
  if (logits_into != nullptr) {
    DS_CHECK(logits_into->rows() == n && logits_into->cols() == c.vocab_size && logits_into->dtype == DType::kF32,
             "logits buffer [{}, {}] for [{}, {}]", logits_into->rows(), logits_into->cols(), n, c.vocab_size);
    logits = *logits_into;
  } else {
    logits = backend_.empty_f32({n, c.vocab_size});
  }
  backend_.linear(last_normed, weights_.lm_head, logits);
  return logits;
}

void DeepseekModel::attention(int64_t layer, const Tensor& x, const ForwardBatch& batch, Tensor& out) {
  const ModelConfig& c = config_;
  const AttentionWeights& w = weights_.layers[static_cast<size_t>(layer)].attn;
  const int64_t t = x.rows(), heads = local_heads_;
  const float eps = static_cast<float>(c.rms_norm_eps);

  Tensor q = backend_.empty({t, heads * c.qk_head_dim()});  // [T, heads * (nope | rope)]
  if (c.q_lora_rank > 0) {
    Tensor q_a = backend_.empty({t, c.q_lora_rank});  // [T, q_lora_rank]
    backend_.linear(x, w.q_a_proj, q_a);
    Tensor q_a_normed = backend_.empty({t, c.q_lora_rank});
    backend_.rms_norm(q_a, w.q_a_layernorm, eps, q_a_normed);
    backend_.linear(q_a_normed, w.q_b_proj, q);
  } else {
    backend_.linear(x, w.q_proj, q);
  }
  backend_.rope(q, batch.positions, heads, c.qk_head_dim(), c.qk_nope_head_dim, rope_);

  Tensor kv_a = backend_.empty({t, c.kv_cache_dim()});  // [T, kv_lora_rank | qk_rope_head_dim]
  backend_.linear(x, w.kv_a_proj_with_mqa, kv_a);
  Tensor latent = backend_.empty({t, c.kv_lora_rank});  // [T, kv_lora_rank], normalized
  backend_.rms_norm_cols(kv_a, 0, w.kv_a_layernorm, eps, latent);
  // The rope key is shared by all heads (one "head" of width qk_rope_head_dim at column kv_lora_rank).
  backend_.rope(kv_a, batch.positions, 1, c.kv_cache_dim(), c.kv_lora_rank, rope_);
  backend_.store_kv(latent, kv_a, c.kv_lora_rank, batch.slot_mapping, kv_cache_[static_cast<size_t>(layer)]);

  Tensor attn = backend_.empty({t, heads * c.v_head_dim});  // [T, heads * v_head_dim]
  MlaAttentionParams p;
  p.q = &q;
  p.kv_cache = &kv_cache_[static_cast<size_t>(layer)];
  p.kv_b_proj = &w.kv_b_proj;
  p.out = &attn;
  p.num_heads = heads;
  p.qk_nope_head_dim = c.qk_nope_head_dim;
  p.qk_rope_head_dim = c.qk_rope_head_dim;
  p.v_head_dim = c.v_head_dim;
  p.kv_lora_rank = c.kv_lora_rank;
  p.block_size = block_size_;
  p.softmax_scale = softmax_scale_;
  backend_.mla_attention(p, batch);
  backend_.linear(attn, w.o_proj, out);  // a partial sum of this rank's heads under TP
  reduce_partial(out);
}

void DeepseekModel::reduce_partial(Tensor& t) {
  if (parallel_.tp.size > 1) parallel_.comm->all_reduce(t);
}

void DeepseekModel::moe(const MoeWeights& w, const Tensor& x, const Tensor& router_x, Tensor& out) {
  const ModelConfig& c = config_;
  MoeGateParams gate;
  gate.gate = &w.gate;
  gate.e_score_correction_bias = w.e_score_correction_bias.empty() ? nullptr : &w.e_score_correction_bias;
  gate.top_k = c.num_experts_per_tok;
  gate.n_group = c.n_group;
  gate.topk_group = c.topk_group;
  gate.topk_method = c.topk_method;
  gate.scoring_func = c.scoring_func;
  gate.norm_topk_prob = c.norm_topk_prob;
  gate.routed_scaling_factor = static_cast<float>(c.routed_scaling_factor);
  Tensor topk_ids = backend_.empty_i32({x.rows(), gate.top_k});      // [T, top_k]
  Tensor topk_weights = backend_.empty_f32({x.rows(), gate.top_k});  // [T, top_k]
  backend_.moe_gate(router_x, gate, topk_ids, topk_weights);
  if (w.has_shared_experts) {
    backend_.mlp(x, w.shared_experts, out);
  } else {
    backend_.fill_zero(out);
  }
  backend_.moe_experts(x, w.experts, topk_ids, topk_weights, out);
  reduce_partial(out);  // every expert's (and the shared experts') share of its intermediate
}

}  // namespace ds
