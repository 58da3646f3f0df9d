// ModelConfig: what config.json of a DeepseekV3ForCausalLM / DeepseekV2ForCausalLM checkpoint says.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "util/check.h"

namespace ds {

// config.json that is missing a required key or holds an unusable value.
class ConfigError : public UserError {
 public:
  using UserError::UserError;
};

enum class Architecture { kDeepseekV2, kDeepseekV3 };

struct YarnRopeScaling {
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

struct Fp8Quantization {
  int64_t block_rows = 128;  // weight_block_size[0]: along the output dimension
  int64_t block_cols = 128;  // weight_block_size[1]: along the input dimension
};

struct ModelConfig {
  Architecture architecture = Architecture::kDeepseekV3;
  std::string model_type;

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;      // dense MLP of the first first_k_dense_replace layers
  int64_t moe_intermediate_size = 0;  // one routed expert (shared experts: times n_shared_experts)
  int64_t num_hidden_layers = 0;
  int64_t num_nextn_predict_layers = 0;  // MTP layers stored after the last decoder layer; not run
  int64_t num_attention_heads = 0;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  std::vector<int32_t> eos_token_ids;
  std::optional<int64_t> bos_token_id;

  // MLA
  int64_t q_lora_rank = 0;  // 0: no q compression (q_proj), as config.json's null
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  double rope_theta = 10000.0;
  std::optional<YarnRopeScaling> rope_scaling;

  // MoE
  int64_t n_routed_experts = 0;  // 0: every layer dense
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  TopkMethod topk_method = TopkMethod::kGreedy;
  ScoringFunc scoring_func = ScoringFunc::kSoftmax;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;

  std::optional<Fp8Quantization> fp8;

  [[nodiscard]] int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Width of one token's MLA cache entry per layer: the compressed latent plus the shared rope key.
  [[nodiscard]] int64_t kv_cache_dim() const { return kv_lora_rank + qk_rope_head_dim; }
  [[nodiscard]] bool is_moe_layer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  // The softmax scale of attention, with YaRN's mscale applied twice (once for q, once for k), as HF does.
  [[nodiscard]] double softmax_scale() const;
};

// Parses and validates; errors name the file and the key. Unknown keys are ignored.
[[nodiscard]] ModelConfig parse_model_config(const nlohmann::json& json, const std::string& source = "config.json");
[[nodiscard]] ModelConfig load_model_config(const std::filesystem::path& model_dir);

[[nodiscard]] const char* to_string(TopkMethod method);
[[nodiscard]] const char* to_string(ScoringFunc func);

}  // namespace ds
