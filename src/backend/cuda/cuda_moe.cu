// DeepSeekMoE router (after the gate GEMM) and the weighted combine of the routed experts' outputs.
// The router runs one token per warp through the same steps, in the same order and with the same
// tie-breaking (the lower expert index wins) as the CPU backend, so the chosen experts agree wherever the
// scores are not within rounding of each other.
#include <math_constants.h>

#include "backend/cuda/cuda_common.cuh"

namespace ds::cuda {
namespace {

constexpr int kMaxGroups = 64;
constexpr int kMaxTopK = 32;
constexpr int kMaxExperts = 1024;

constexpr int kGateWarps = 4;  // tokens per CTA of the router

// Index of the largest v[i] over i < n not in `taken` (ties: lowest index), or -1.
__device__ int argmax_excluding(const float* v, int n, const int* taken, int num_taken) {
  int best = -1;
  for (int i = 0; i < n; ++i) {
    bool skip = false;
    for (int k = 0; k < num_taken; ++k) skip |= taken[k] == i;
    if (skip) continue;
    if (best < 0 || v[i] > v[best]) best = i;
  }
  return best;
}

// The warp's largest (value, index) pair, ties to the lower index; index -1 stands for "none".
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (oi >= 0 && (i < 0 || ov > v || (ov == v && oi < i))) {
      v = ov;
      i = oi;
    }
  }
}

// One warp per token: the lanes share the experts (e = lane, lane + 32, ...) for the scores, the group scores
// and each of the top_k rounds of a warp-wide argmax.
__global__ void moe_gate_kernel(MoeGateKernelParams p, DeviceWeight bias, bool has_bias) {
  __shared__ float group_score[kGateWarps][kMaxGroups];
  __shared__ unsigned long long kept_groups[kGateWarps];
  __shared__ uint32_t taken[kGateWarps][kMaxExperts / 32];
  __shared__ int chosen[kGateWarps][kMaxTopK];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t t = int64_t{blockIdx.x} * kGateWarps + warp;
  if (t >= p.num_tokens) return;  // the whole warp leaves together
  const int e_count = static_cast<int>(p.num_experts);
  const float* logits = p.logits + t * e_count;
  const float* logits_lo = p.logits_lo != nullptr ? p.logits_lo + t * e_count : nullptr;
  float* scores = p.scores + t * e_count;
  float* choice = p.choice + t * e_count;
  // The logits, the lo term's added (scores holds them until they become scores).
  for (int e = lane; e < e_count; e += 32) scores[e] = logits[e] + (logits_lo != nullptr ? logits_lo[e] : 0.0f);
  if (p.sigmoid) {
    for (int e = lane; e < e_count; e += 32) scores[e] = 1.0f / (1.0f + expf(-scores[e]));
  } else {
    float mx = -CUDART_INF_F;
    for (int e = lane; e < e_count; e += 32) mx = fmaxf(mx, scores[e]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    double sum = 0.0;
    for (int e = lane; e < e_count; e += 32) sum += exp(static_cast<double>(scores[e] - mx));
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    for (int e = lane; e < e_count; e += 32)
      scores[e] = static_cast<float>(exp(static_cast<double>(scores[e] - mx)) / sum);
  }
  // The bias moves experts in or out of the selection; the weights come from the unbiased scores.
  for (int e = lane; e < e_count; e += 32) choice[e] = scores[e] + (has_bias ? weight_at(bias, 0, e) : 0.0f);
  for (int w = lane; w < (e_count + 31) / 32; w += 32) taken[warp][w] = 0;
  __syncwarp();
  if (p.method != GateMethod::kGreedy && p.n_group > 1) {
    const int groups = static_cast<int>(p.n_group), per_group = e_count / groups;
    for (int g = lane; g < groups; g += 32) {
      float first = -CUDART_INF_F, second = -CUDART_INF_F;
      for (int e = g * per_group; e < (g + 1) * per_group; ++e) {
        if (choice[e] > first) {
          second = first;
          first = choice[e];
        } else if (choice[e] > second) {
          second = choice[e];
        }
      }
      group_score[warp][g] = p.method == GateMethod::kNoauxTc ? first + second : first;
    }
    __syncwarp();
    if (lane == 0) {
      int kept[kMaxGroups];
      unsigned long long mask = 0;
      for (int k = 0; k < p.topk_group; ++k) {
        kept[k] = argmax_excluding(group_score[warp], groups, kept, k);
        mask |= 1ull << kept[k];
      }
      kept_groups[warp] = mask;
    }
    __syncwarp();
    const unsigned long long mask = kept_groups[warp];
    for (int e = lane; e < e_count; e += 32)
      if (((mask >> (e / per_group)) & 1ull) == 0) choice[e] = -CUDART_INF_F;
    __syncwarp();
  }
  for (int k = 0; k < p.top_k; ++k) {
    float best = -CUDART_INF_F;
    int best_e = -1;
    for (int e = lane; e < e_count; e += 32) {
      if ((taken[warp][e / 32] >> (e % 32)) & 1u) continue;
      if (best_e < 0 || choice[e] > best) {
        best = choice[e];
        best_e = e;
      }
    }
    warp_argmax(best, best_e);
    if (lane == 0) {
      chosen[warp][k] = best_e;
      taken[warp][best_e / 32] |= 1u << (best_e % 32);
    }
    __syncwarp();
  }
  if (lane == 0) {
    float sum = 0.0f;
    for (int k = 0; k < p.top_k; ++k) sum += scores[chosen[warp][k]];
    for (int k = 0; k < p.top_k; ++k) {
      float w = scores[chosen[warp][k]];
      if (p.norm_topk_prob) w /= (sum + 1e-20f);
      p.topk_ids[t * p.top_k + k] = chosen[warp][k];
      p.topk_weights[t * p.top_k + k] = w * p.routed_scaling_factor;
    }
  }
}

__global__ void moe_combine_kernel(MatrixRef y, const int32_t* rows, const float* weights, int64_t top_k,
                                   MatrixRef out) {
  const int64_t t = blockIdx.x;
  for (int64_t c = threadIdx.x; c < out.cols; c += blockDim.x) {
    float acc = load_at(out, t, c);
    for (int64_t k = 0; k < top_k; ++k) {
      const int32_t row = rows[t * top_k + k];
      if (row >= 0) acc += weights[t * top_k + k] * load_at(y, row, c);
    }
    store_at(out, t, c, acc);
  }
}

}  // namespace

void launch_moe_gate(const MoeGateKernelParams& p, cudaStream_t stream) {
  if (p.num_tokens == 0) return;
  const DeviceWeight bias = p.bias != nullptr ? *p.bias : DeviceWeight{};
  moe_gate_kernel<<<blocks_for(p.num_tokens, kGateWarps), kGateWarps * 32, 0, stream>>>(p, bias,
                                                                                      p.bias != nullptr);
}

void launch_moe_combine(MatrixRef y, const int32_t* rows, const float* weights, int64_t top_k, MatrixRef out,
                        cudaStream_t stream) {
  if (out.rows == 0) return;
  const unsigned int threads = out.cols >= 256 ? 256 : static_cast<unsigned int>((out.cols + 31) / 32 * 32);
  moe_combine_kernel<<<static_cast<unsigned int>(out.rows), threads, 0, stream>>>(y, rows, weights, top_k,
                                                                                  out);
}

}  // namespace ds::cuda
