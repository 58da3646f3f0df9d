// The CPU backend: fp32 math from any stored dtype, parallel over a small thread pool. It is the numerical
// reference the CUDA backend is tested against, so clarity wins over speed where they disagree.
#pragma once

#include "backend/backend.h"
#include "util/thread_pool.h"

namespace ds {

// Not final: tests derive from it to inject faults (tests/unit/engine/engine_request_faults_test.cpp).
class CpuBackend : public Backend {
 public:
  explicit CpuBackend(int num_threads = 0) : pool_(num_threads) {}

  [[nodiscard]] Tensor empty(std::vector<int64_t> shape) override;
  [[nodiscard]] Tensor empty_f32(std::vector<int64_t> shape) override { return empty(std::move(shape)); }
  [[nodiscard]] Tensor empty_host(std::vector<int64_t> shape) override { return empty(std::move(shape)); }
  [[nodiscard]] Tensor empty_i32(std::vector<int64_t> shape) override;
  void copy_blocks(const Tensor& from, Tensor& to, std::span<const BlockMove> moves, int32_t block_size) override;
  void fill_zero(Tensor& t) override;
  void copy_to_host(const Tensor& t, std::span<float> out) override;
  void copy_from_host(std::span<const float> in, Tensor& t) override;

  void embedding(const Weight& table, std::span<const int32_t> ids, Tensor& out) override;
  void rms_norm(const Tensor& x, const Weight& weight, float eps, Tensor& out) override;
  void rms_norm_cols(const Tensor& x, int64_t col_offset, const Weight& weight, float eps, Tensor& out) override;
  void linear(const Tensor& x, const Weight& w, Tensor& out) override;
  void add(Tensor& acc, const Tensor& x) override;
  void silu_mul(const Tensor& gate_up, Tensor& out) override;
  void rope(Tensor& x, std::span<const int32_t> positions, int64_t num_heads, int64_t head_dim,
            int64_t rope_offset, const RopeParams& rope) override;
  void store_kv(const Tensor& latent, const Tensor& k_rope_src, int64_t k_rope_col_offset,
                std::span<const int64_t> slot_mapping, Tensor& kv_cache) override;
  void mla_attention(const MlaAttentionParams& p, const ForwardBatch& batch) override;
  void moe_gate(const Tensor& x, const MoeGateParams& p, Tensor& topk_ids, Tensor& topk_weights) override;
  void moe_experts(const Tensor& x, std::span<const MlpWeights> experts, const Tensor& topk_ids,
                   const Tensor& topk_weights, Tensor& out) override;
  void mlp(const Tensor& x, const MlpWeights& w, Tensor& out) override;
  void gather_rows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) override;

  [[nodiscard]] ThreadPool& pool() { return pool_; }

 private:
  // x[T, K] @ w[N, K]^T for raw fp32 pointers (rows of x at stride ldx).
  void linear_f32(const float* x, int64_t num_rows, int64_t ldx, const Weight& w, float* out, int64_t ldo);

  ThreadPool pool_;
};

}  // namespace ds
