#include "model/config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

namespace ds {
namespace {

constexpr const char* kSupportedArchitectures = "DeepseekV3ForCausalLM, DeepseekV2ForCausalLM";

// Reads keys with the config's file name in every message.
class Reader {
 public:
  Reader(const nlohmann::json& json, std::string source) : json_(json), source_(std::move(source)) {}

  [[nodiscard]] bool has(const char* key) const { return json_.contains(key) && !json_[key].is_null(); }

  [[nodiscard]] int64_t integer(const char* key) const {
    DS_REQUIRE(has(key), ConfigError, "{}: missing required key '{}'", source_, key);
    return as_integer(json_[key], key);
  }
  [[nodiscard]] int64_t integer(const char* key, int64_t fallback) const {
    return has(key) ? as_integer(json_[key], key) : fallback;
  }
  [[nodiscard]] int64_t positive(const char* key) const {
    const int64_t v = integer(key);
    DS_REQUIRE(v > 0, ConfigError, "{}: '{}' must be positive, got {}", source_, key, v);
    return v;
  }
  [[nodiscard]] double number(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const auto& v = json_[key];
    DS_REQUIRE(v.is_number(), ConfigError, "{}: '{}' must be a number, got {}", source_, key, v.dump());
    const double d = v.get<double>();
    DS_REQUIRE(std::isfinite(d), ConfigError, "{}: '{}' must be finite", source_, key);
    return d;
  }
  [[nodiscard]] bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    DS_REQUIRE(json_[key].is_boolean(), ConfigError, "{}: '{}' must be true or false, got {}", source_, key,
               json_[key].dump());
    return json_[key].get<bool>();
  }
  [[nodiscard]] std::string string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    DS_REQUIRE(json_[key].is_string(), ConfigError, "{}: '{}' must be a string, got {}", source_, key,
               json_[key].dump());
    return json_[key].get<std::string>();
  }
  [[nodiscard]] const std::string& source() const { return source_; }

 private:
  int64_t as_integer(const nlohmann::json& v, const char* key) const {
    if (v.is_number_integer()) return v.get<int64_t>();
    // Some configs write integers as 4.0.
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
    }
    throw ConfigError(fmt::format("{}: '{}' must be an integer, got {}", source_, key, v.dump()));
  }

  const nlohmann::json& json_;
  std::string source_;
};

Architecture parse_architecture(const nlohmann::json& json, const std::string& source) {
  std::string name;
  if (json.contains("architectures") && json["architectures"].is_array() && !json["architectures"].empty() &&
      json["architectures"][0].is_string()) {
    name = json["architectures"][0].get<std::string>();
  } else if (json.contains("model_type") && json["model_type"].is_string()) {
    const std::string type = json["model_type"].get<std::string>();
    if (type == "deepseek_v3") name = "DeepseekV3ForCausalLM";
    if (type == "deepseek_v2") name = "DeepseekV2ForCausalLM";
    if (name.empty()) name = "model_type " + type;
  }
  if (name == "DeepseekV3ForCausalLM") return Architecture::kDeepseekV3;
  if (name == "DeepseekV2ForCausalLM") return Architecture::kDeepseekV2;
  throw ConfigError(fmt::format("{}: unsupported architecture '{}'; supported: {}", source,
                                name.empty() ? "(none given)" : name, kSupportedArchitectures));
}

TopkMethod parse_topk_method(const std::string& s, const std::string& source) {
  if (s == "greedy") return TopkMethod::kGreedy;
  if (s == "group_limited_greedy") return TopkMethod::kGroupLimitedGreedy;
  if (s == "noaux_tc") return TopkMethod::kNoauxTc;
  throw ConfigError(fmt::format("{}: 'topk_method' is '{}'; supported: greedy, group_limited_greedy, noaux_tc",
                                source, s));
}

ScoringFunc parse_scoring_func(const std::string& s, const std::string& source) {
  if (s == "softmax") return ScoringFunc::kSoftmax;
  if (s == "sigmoid") return ScoringFunc::kSigmoid;
  throw ConfigError(fmt::format("{}: 'scoring_func' is '{}'; supported: softmax, sigmoid", source, s));
}

std::optional<YarnRopeScaling> parse_rope_scaling(const nlohmann::json& json, const std::string& source) {
  // transformers 5 writes rope_parameters; official checkpoints write rope_scaling.
  const char* key = json.contains("rope_scaling") && !json["rope_scaling"].is_null() ? "rope_scaling"
                                                                                     : "rope_parameters";
  if (!json.contains(key) || json[key].is_null()) return std::nullopt;
  const auto& rs = json[key];
  DS_REQUIRE(rs.is_object(), ConfigError, "{}: '{}' must be an object or null", source, key);
  const std::string where = fmt::format("{} ({})", source, key);
  Reader r(rs, where);
  const std::string type = r.string("type", r.string("rope_type", "default"));
  if (type == "default") return std::nullopt;
  DS_REQUIRE(type == "yarn", ConfigError, "{}: rope type '{}' is not supported; supported: yarn", where, type);
  YarnRopeScaling y;
  y.factor = r.number("factor", 1.0);
  DS_REQUIRE(y.factor >= 1.0, ConfigError, "{}: 'factor' must be >= 1, got {}", where, y.factor);
  y.original_max_position_embeddings = r.positive("original_max_position_embeddings");
  y.beta_fast = r.number("beta_fast", 32.0);
  y.beta_slow = r.number("beta_slow", 1.0);
  y.mscale = r.number("mscale", 1.0);
  y.mscale_all_dim = r.number("mscale_all_dim", 0.0);
  return y;
}

std::optional<Fp8Quantization> parse_quantization(const nlohmann::json& json, const std::string& source) {
  if (!json.contains("quantization_config") || json["quantization_config"].is_null()) return std::nullopt;
  const auto& q = json["quantization_config"];
  DS_REQUIRE(q.is_object(), ConfigError, "{}: 'quantization_config' must be an object", source);
  const std::string where = source + " (quantization_config)";
  Reader r(q, where);
  const std::string method = r.string("quant_method", "");
  DS_REQUIRE(method == "fp8", ConfigError, "{}: quant_method '{}' is not supported; supported: fp8", where,
             method);
  const std::string format = r.string("fmt", "e4m3");
  DS_REQUIRE(format == "e4m3", ConfigError, "{}: fmt '{}' is not supported; supported: e4m3", where, format);
  Fp8Quantization fp8;
  if (q.contains("weight_block_size")) {
    const auto& b = q["weight_block_size"];
    DS_REQUIRE(b.is_array() && b.size() == 2 && b[0].is_number_integer() && b[1].is_number_integer() &&
                   b[0].get<int64_t>() > 0 && b[1].get<int64_t>() > 0,
               ConfigError, "{}: 'weight_block_size' must be two positive integers, got {}", where, b.dump());
    fp8.block_rows = b[0].get<int64_t>();
    fp8.block_cols = b[1].get<int64_t>();
  }
  return fp8;
}

std::vector<int32_t> parse_eos(const nlohmann::json& json, const std::string& source) {
  std::vector<int32_t> ids;
  if (!json.contains("eos_token_id") || json["eos_token_id"].is_null()) return ids;
  const auto& e = json["eos_token_id"];
  if (e.is_number_integer()) return {e.get<int32_t>()};
  DS_REQUIRE(e.is_array(), ConfigError, "{}: 'eos_token_id' must be an integer or a list of integers", source);
  for (const auto& x : e) {
    DS_REQUIRE(x.is_number_integer(), ConfigError, "{}: 'eos_token_id' must hold integers, got {}", source,
               x.dump());
    ids.push_back(x.get<int32_t>());
  }
  return ids;
}

}  // namespace

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope_scaling && rope_scaling->mscale_all_dim != 0.0 && rope_scaling->factor > 1.0) {
    const double m = 0.1 * rope_scaling->mscale_all_dim * std::log(rope_scaling->factor) + 1.0;
    scale *= m * m;
  }
  return scale;
}

ModelConfig parse_model_config(const nlohmann::json& json, const std::string& source) {
  DS_REQUIRE(json.is_object(), ConfigError, "{}: must be a JSON object", source);
  const Reader r(json, source);
  ModelConfig c;
  c.architecture = parse_architecture(json, source);
  const bool v3 = c.architecture == Architecture::kDeepseekV3;
  c.model_type = r.string("model_type", v3 ? "deepseek_v3" : "deepseek_v2");

  c.vocab_size = r.positive("vocab_size");
  c.hidden_size = r.positive("hidden_size");
  c.intermediate_size = r.positive("intermediate_size");
  c.num_hidden_layers = r.positive("num_hidden_layers");
  c.num_nextn_predict_layers = r.integer("num_nextn_predict_layers", 0);
  c.num_attention_heads = r.positive("num_attention_heads");
  const int64_t kv_heads = r.integer("num_key_value_heads", c.num_attention_heads);
  DS_REQUIRE(kv_heads == c.num_attention_heads, ConfigError,
             "{}: num_key_value_heads ({}) must equal num_attention_heads ({}) for MLA", source, kv_heads,
             c.num_attention_heads);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  DS_REQUIRE(c.rms_norm_eps > 0, ConfigError, "{}: 'rms_norm_eps' must be positive", source);
  c.max_position_embeddings = r.positive("max_position_embeddings");
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.eos_token_ids = parse_eos(json, source);
  if (r.has("bos_token_id")) c.bos_token_id = r.integer("bos_token_id");

  c.q_lora_rank = r.integer("q_lora_rank", 0);
  c.kv_lora_rank = r.positive("kv_lora_rank");
  c.qk_nope_head_dim = r.positive("qk_nope_head_dim");
  c.qk_rope_head_dim = r.positive("qk_rope_head_dim");
  DS_REQUIRE(c.qk_rope_head_dim % 2 == 0, ConfigError, "{}: 'qk_rope_head_dim' must be even, got {}", source,
             c.qk_rope_head_dim);
  DS_REQUIRE(c.q_lora_rank >= 0, ConfigError, "{}: 'q_lora_rank' must be null or positive", source);
  c.v_head_dim = r.positive("v_head_dim");
  c.rope_theta = r.number("rope_theta", 10000.0);
  c.rope_scaling = parse_rope_scaling(json, source);
  DS_REQUIRE(!r.boolean("attention_bias", false), ConfigError, "{}: attention_bias true is not supported",
             source);
  const std::string act = r.string("hidden_act", "silu");
  DS_REQUIRE(act == "silu", ConfigError, "{}: hidden_act '{}' is not supported; supported: silu", source, act);

  c.n_routed_experts = r.integer("n_routed_experts", 0);
  DS_REQUIRE(c.n_routed_experts >= 0, ConfigError, "{}: 'n_routed_experts' must not be negative", source);
  if (c.n_routed_experts > 0) {
    c.moe_intermediate_size = r.positive("moe_intermediate_size");
    c.n_shared_experts = r.integer("n_shared_experts", 0);
    c.num_experts_per_tok = r.positive("num_experts_per_tok");
    c.n_group = r.integer("n_group", 1);
    c.topk_group = r.integer("topk_group", 1);
    c.topk_method = parse_topk_method(r.string("topk_method", v3 ? "noaux_tc" : "greedy"), source);
    c.scoring_func = parse_scoring_func(r.string("scoring_func", v3 ? "sigmoid" : "softmax"), source);
    c.norm_topk_prob = r.boolean("norm_topk_prob", v3);
    c.routed_scaling_factor = r.number("routed_scaling_factor", 1.0);
    c.first_k_dense_replace = r.integer("first_k_dense_replace", 0);
    c.moe_layer_freq = r.integer("moe_layer_freq", 1);
    DS_REQUIRE(c.n_shared_experts >= 0, ConfigError, "{}: 'n_shared_experts' must not be negative", source);
    DS_REQUIRE(c.moe_layer_freq > 0, ConfigError, "{}: 'moe_layer_freq' must be positive", source);
    DS_REQUIRE(c.num_experts_per_tok <= c.n_routed_experts, ConfigError,
               "{}: num_experts_per_tok ({}) exceeds n_routed_experts ({})", source, c.num_experts_per_tok,
               c.n_routed_experts);
    if (c.topk_method != TopkMethod::kGreedy) {
      DS_REQUIRE(c.n_group > 0 && c.n_routed_experts % c.n_group == 0, ConfigError,
                 "{}: n_routed_experts ({}) must be divisible by n_group ({})", source, c.n_routed_experts,
                 c.n_group);
      DS_REQUIRE(c.topk_group > 0 && c.topk_group <= c.n_group, ConfigError,
                 "{}: topk_group ({}) must be in [1, n_group ({})]", source, c.topk_group, c.n_group);
      DS_REQUIRE(c.num_experts_per_tok <= c.topk_group * (c.n_routed_experts / c.n_group), ConfigError,
                 "{}: num_experts_per_tok ({}) exceeds the experts in topk_group groups ({})", source,
                 c.num_experts_per_tok, c.topk_group * (c.n_routed_experts / c.n_group));
    }
    if (c.topk_method == TopkMethod::kNoauxTc) {
      DS_REQUIRE(c.n_routed_experts / c.n_group >= 2, ConfigError,
                 "{}: noaux_tc ranks groups by their two best experts; groups of {} are too small", source,
                 c.n_routed_experts / c.n_group);
    }
  }
  c.fp8 = parse_quantization(json, source);
  return c;
}

ModelConfig load_model_config(const std::filesystem::path& model_dir) {
  const auto path = model_dir / "config.json";
  std::ifstream in(path);
  DS_REQUIRE(in.good(), ConfigError, "cannot open {} (is --model a HuggingFace checkpoint directory?)",
             path.string());
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
  }
  return parse_model_config(json, path.string());
}

const char* to_string(TopkMethod method) {
  switch (method) {
    case TopkMethod::kGreedy: return "greedy";
    case TopkMethod::kGroupLimitedGreedy: return "group_limited_greedy";
    case TopkMethod::kNoauxTc: return "noaux_tc";
  }
  return "?";
}

const char* to_string(ScoringFunc func) { return func == ScoringFunc::kSoftmax ? "softmax" : "sigmoid"; }

}  // namespace ds
