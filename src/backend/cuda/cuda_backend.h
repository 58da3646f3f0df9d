// The CUDA backend: the Backend ops on one GPU, on one stream, with activations in bf16 and fp32
// accumulation.
//
// Precision: empty() tensors are BF16 (projections, attention, MLP intermediates, the latent KV cache);
// empty_f32() tensors (the residual stream, the attention/MLP outputs added to it, the logits) are F32. Every
// kernel computes in fp32 and rounds only its output; GEMMs take bf16 operands (cuBLASLt, fp32 accumulation);
// FP8 checkpoint weights stay FP8 in device memory with their fp32 block scales. tests/gpu states the
// tolerances that follow, op by op and end to end.
//
// This header includes no CUDA header, so the CLI and the tests can name the backend without them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"

namespace ds {
namespace cuda {
struct CudaContext;
}

// Which form of MLA prefill sequences take (docs/gpu.md, "The two MLA forms"). Decode tokens always take the
// weight-absorbed form.
enum class MlaPrefillForm {
  kAbsorbed,  // every token weight-absorbed (the earlier behaviour)
  kAuto,      // sequences with many new tokens, where it needs fewer FLOPs, in the expanded form
  kExpanded,  // every sequence with more than one new token in the expanded form (tests, A/B measurement)
};

// When linears and MLPs of a few rows (decode) take the streaming kernel (cuda_moe_gemm.cu without tiles:
// weights read once, K split over CTAs, gate/up fused) instead of cuBLASLt. Measured on both paths at V2-Lite's
// and V3's shapes (bench/BENCH.md, "Large tiles for the routed experts..."): it wins only on FP8 weights at 1-8
// rows whose K is at least 3x their N (V3's q_a, kv_a and the shared experts' gate/up: 0.5-0.8x cuBLASLt's
// time, where cuBLASLt quantizes and pads the activations or expands the weight), and loses on bf16 weights and
// on wide FP8 ones (1.1-1.7x).
enum class StreamGemm {
  kOff,     // cuBLASLt for every linear
  kAuto,    // the streaming kernel where it measured faster: FP8, at most 8 rows, K >= 3 N
  kAlways,  // the streaming kernel for every linear and MLP of at most 64 rows it can read (tests, A/B)
};

// Which kernel runs weight-absorbed MLA attention over the latent cache (bench/BENCH.md has both measured).
enum class MlaDecodeKernel {
  kV1,  // cuda_mla.cu: 16-row warp tiles, warp pairs exchanging S every 32 keys
  kV2,  // cuda_mla_v2.cu for tiles of more than 16 rows (32-row warp tiles, one softmax per row); tiles of
        // at most 16 rows (decode at 16 heads) as kV1
};

struct CudaBackendOptions {
  int device = 0;
  // Wait for every op and check it (slow; names the op that faulted). DEEPSERVE_CUDA_SYNC=1 turns it on too.
  bool sync_each_op = false;
  // MLA attention through the first kernel (one thread block per (token, head), fp32 on CUDA cores) instead
  // of the tensor-core kernel, for every shape; DEEPSERVE_MLA=legacy turns it on too. Shapes other than
  // latent 512 + rope 64 always take it.
  bool legacy_mla = false;
  // FP8 weights with 128x128 block scales run on FP8 tensor cores with activations quantized per 1x128
  // (DeepSeek-V3's scheme); false expands them to bf16 for each GEMM instead (HF's numerics, slower).
  // DS_FP8_GEMM=0 turns it off too.
  bool fp8_gemm = true;
  // The routed experts as grouped GEMMs with the routing on the device (bf16 and block-FP8 experts); false
  // copies the routing to the host and runs one cuBLASLt GEMM per expert (the earlier path, for comparison).
  // DS_MOE_GROUPED=0 turns it off too.
  bool grouped_experts = true;
  // Decode-sized linears through the streaming kernel (StreamGemm above). DS_STREAM_GEMM=0 / 1 sets kOff /
  // kAlways; any other value of it is an error.
  StreamGemm stream_gemm = StreamGemm::kAuto;
  // MLA prefill: keys and values expanded through kv_b_proj, then causal flash attention (cuda_mla_prefill.cu),
  // for the sequences the rule in cuda_mla_expanded.cpp picks. DS_MLA_PREFILL=0 turns it off (kAbsorbed),
  // DS_MLA_PREFILL=1 leaves this as set; any other value of it is an error.
  MlaPrefillForm mla_prefill = MlaPrefillForm::kAuto;
  // The MLA attention kernel (tensor-core path): V2, 6-8% faster than V1 at 128 heads and equal elsewhere on
  // the H100 (bench/BENCH.md). DS_MLA_DECODE=1|2 overrides it; any other value is an error.
  MlaDecodeKernel mla_decode = MlaDecodeKernel::kV2;
  // Rows per tile of the grouped expert GEMMs: 0 picks per call (64-row tiles of the 8-warp kernel when the
  // batch averages at least kMoeLargeTileMinRows rows per expert, as in prefill; 32-row tiles otherwise);
  // 32 or 64 forces one (tests, bench_model --moe-op). DS_MOE_TILE_ROWS=32|64 forces one too.
  int moe_tile_rows = 0;
  // The router's GEMM on an F32 input (the model passes one) runs exactly in fp32 as HF's does: the input
  // split into two bf16 terms, hi + lo, through one bf16 GEMM of twice the rows (error ~2^-16 of the input
  // instead of bf16's 2^-9, which flips near-tied experts). false rounds the input to bf16 (the earlier
  // numerics); DS_ROUTER=bf16 turns it off too.
  bool exact_router = true;
};

// Average (token, expert) pairs per expert from which the grouped expert GEMMs cut 64-row tiles.
inline constexpr int64_t kMoeLargeTileMinRows = 32;

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(CudaBackendOptions options = {});
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  // Copies the weight to device memory as stored (FP8 stays FP8; block scales become fp32). The copy lives
  // until the backend is destroyed.
  void prepare_weight(Weight& w) override;
  // Allocates every weight, then copies them with parallel reader threads through pinned buffers.
  void prepare_weights(std::span<Weight* const> weights) override;
  [[nodiscard]] DType activation_dtype() const override { return DType::kBF16; }
  [[nodiscard]] std::optional<DeviceMemoryInfo> device_memory() override;
  void reset_memory_peak() override;
  [[nodiscard]] Tensor empty(std::vector<int64_t> shape) override;
  [[nodiscard]] Tensor empty_f32(std::vector<int64_t> shape) override;
  [[nodiscard]] Tensor empty_i32(std::vector<int64_t> shape) override;
  // Pinned host memory in the compute dtype (BF16), for the KV swap pool.
  [[nodiscard]] Tensor empty_host(std::vector<int64_t> shape) override;
  void copy_blocks(const Tensor& from, Tensor& to, std::span<const BlockMove> moves, int32_t block_size) override;
  void fill_zero(Tensor& t) override;
  void copy_to_host(const Tensor& t, std::span<float> out) override;
  void copy_from_host(std::span<const float> in, Tensor& t) override;

  void embedding(const Weight& table, std::span<const int32_t> ids, Tensor& out) override;
  void rms_norm(const Tensor& x, const Weight& weight, float eps, Tensor& out) override;
  void rms_norm_cols(const Tensor& x, int64_t col_offset, const Weight& weight, float eps,
                     Tensor& out) override;
  void linear(const Tensor& x, const Weight& w, Tensor& out) override;
  void add(Tensor& acc, const Tensor& x) override;
  void add_rms_norm(Tensor& residual, const Tensor& branch, const Weight& weight, float eps, Tensor& out) override;
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
  // Samples on the device (cuda_sample.cu) and copies back only the results; always returns true.
  bool sample(const Tensor& logits, std::span<const SampleRequest> requests, std::span<SampleResult> out) override;

  // cuda_graphs.cpp: the step's arrays in one pinned copy, and CUDA graphs of whole steps. Capture records
  // thread-locally on the backend's stream; tensors allocated while recording become the graph's own
  // allocations (freed within it, as the model's are). Not with sync_each_op (it synchronizes).
  void stage_step(const ForwardBatch& batch, int32_t table_pitch = 0) override;
  void unstage_step() override;
  [[nodiscard]] bool supports_graphs() const override;
  void begin_capture() override;
  [[nodiscard]] int64_t end_capture() override;
  void replay_graph(int64_t graph) override;
  void clear_graphs() override;
  [[nodiscard]] int64_t graph_memory_bytes() override;

  // Waits for every queued op; throws if one failed.
  void synchronize();
  [[nodiscard]] std::string device_name() const;
  // Bytes of device memory held by prepared weights (block scales included).
  [[nodiscard]] uint64_t weight_bytes() const { return weight_bytes_; }
  // The cudaStream_t every op is queued on, as an opaque pointer (this header includes no CUDA header): for
  // callers that time ops with CUDA events on the same stream (bench/).
  [[nodiscard]] void* stream_handle() const;
  // For bench/ (timing the attention kernel without the absorption GEMMs): later mla_attention calls on the
  // tensor-core path record these cudaEvent_t (opaque pointers) just before the attention kernel and just
  // after its split-KV combine. nullptr, nullptr stops it.
  void set_mla_kernel_events(void* start, void* stop) {
    mla_kernel_start_ = start;
    mla_kernel_stop_ = stop;
  }

 private:
  [[nodiscard]] Tensor allocate(std::vector<int64_t> shape, DType dtype);

  // Shared with every tensor's deleter, so that tensors outliving the backend still free on a live stream.
  std::shared_ptr<cuda::CudaContext> ctx_;
  bool legacy_mla_ = false;
  bool exact_router_ = true;
  MlaPrefillForm mla_prefill_ = MlaPrefillForm::kAuto;
  MlaDecodeKernel mla_decode_ = MlaDecodeKernel::kV2;
  void* mla_kernel_start_ = nullptr;  // set_mla_kernel_events
  void* mla_kernel_stop_ = nullptr;
  bool grouped_experts_ = true;
  int moe_tile_rows_ = 0;  // CudaBackendOptions::moe_tile_rows
  // Device memory for w's data (out of memory: a UserError with the sizes), and w's block scales uploaded as fp32.
  void* allocate_weight(const Weight& w, size_t bytes);
  void upload_scales(Weight& w);
  std::vector<void*> weight_allocations_;  // cudaMalloc'ed by prepare_weight, freed by the destructor

  // The routed experts of one MoE layer as the grouped expert GEMMs read them: device arrays of the experts'
  // weight and block-scale pointers, built on first use (keyed by the experts' address, which the model keeps).
  struct ExpertTable {
    const void* const* pointers = nullptr;  // [6][count]: gate, up, down, then their scales
    int64_t count = 0, inter = 0, hidden = 0;
    bool fp8 = false;
    bool grouped = false;  // bf16 or block-FP8 weights of one shape: the grouped path applies
  };
  const ExpertTable& expert_table(std::span<const MlpWeights> experts);
  // The routed experts for weights the grouped path does not take: routing copied to the host, one cuBLASLt
  // GEMM per expert and projection.
  void moe_experts_on_host_routing(const Tensor& x, std::span<const MlpWeights> experts, const Tensor& topk_ids,
                                   const Tensor& topk_weights, Tensor& out);
  std::unordered_map<const MlpWeights*, ExpertTable> expert_tables_;
  uint64_t weight_bytes_ = 0;
  WeightUploadStats upload_;  // summed over prepare_weights calls
};

}  // namespace ds
