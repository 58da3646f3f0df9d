// The weights of a DeepSeek V2/V3 model by their official HuggingFace names, checked against the config.
#pragma once

#include <functional>
#include <vector>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace ds {

struct AttentionWeights {
  Weight q_proj;              // [heads * qk_head_dim, hidden]      when q_lora_rank is null
  Weight q_a_proj;            // [q_lora_rank, hidden]
  Weight q_a_layernorm;       // [q_lora_rank]
  Weight q_b_proj;            // [heads * qk_head_dim, q_lora_rank]
  Weight kv_a_proj_with_mqa;  // [kv_lora_rank + qk_rope_head_dim, hidden]
  Weight kv_a_layernorm;      // [kv_lora_rank]
  Weight kv_b_proj;           // [heads * (qk_nope_head_dim + v_head_dim), kv_lora_rank]
  Weight o_proj;              // [hidden, heads * v_head_dim]
};

struct MoeWeights {
  Weight gate;                     // [n_routed_experts, hidden]
  Weight e_score_correction_bias;  // [n_routed_experts], noaux_tc only
  std::vector<MlpWeights> experts;
  MlpWeights shared_experts;  // intermediate = moe_intermediate_size * n_shared_experts
  bool has_shared_experts = false;
};

struct LayerWeights {
  Weight input_layernorm;
  Weight post_attention_layernorm;
  AttentionWeights attn;
  bool is_moe = false;
  MlpWeights mlp;  // dense layers
  MoeWeights moe;  // MoE layers
};

struct ModelWeights {
  Weight embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  Weight norm;     // [hidden]
  Weight lm_head;  // [vocab, hidden]
};

// Finds every tensor the forward pass needs (the MTP layers after num_hidden_layers are skipped) and checks
// dtype, shape and FP8 block scales. Throws CheckpointError naming the tensor and its file.
[[nodiscard]] ModelWeights bind_weights(const Checkpoint& checkpoint, const ModelConfig& config);

// Calls fn on every bound (non-empty) Weight of the model, e.g. to hand each to Backend::prepare_weight.
void for_each_weight(ModelWeights& weights, const std::function<void(Weight&)>& fn);

}  // namespace ds
