// DeepSeekMoE router (after the gate GEMM) and the weighted combine of the routed experts' outputs.
// The router runs one token per thread through the same steps, in the same order and with the same
// tie-breaking (the lower expert index wins) as the CPU backend, so the chosen experts agree wherever the
// scores are not within rounding of each other. A per-token warp version comes with the performance step.
#include <math_constants.h>

#include "backend/cuda/cuda_common.cuh"

namespace ds::cuda {
namespace {

constexpr int kMaxGroups = 64;
constexpr int kMaxTopK = 32;

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

__global__ void moe_gate_kernel(MoeGateKernelParams p, DeviceWeight bias, bool has_bias) {
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t >= p.num_tokens) return;
  const int e_count = static_cast<int>(p.num_experts);
  const float* logits = p.logits + t * e_count;
  float* scores = p.scores + t * e_count;
  float* choice = p.choice + t * e_count;
  if (p.sigmoid) {
    for (int e = 0; e < e_count; ++e) scores[e] = 1.0f / (1.0f + expf(-logits[e]));
  } else {
    float mx = logits[0];
    for (int e = 1; e < e_count; ++e) mx = fmaxf(mx, logits[e]);
    double sum = 0.0;
    for (int e = 0; e < e_count; ++e) sum += exp(static_cast<double>(logits[e] - mx));
    for (int e = 0; e < e_count; ++e)
      scores[e] = static_cast<float>(exp(static_cast<double>(logits[e] - mx)) / sum);
  }
  // The bias moves experts in or out of the selection; the weights come from the unbiased scores.
  for (int e = 0; e < e_count; ++e) choice[e] = scores[e] + (has_bias ? weight_at(bias, 0, e) : 0.0f);
  if (p.method != GateMethod::kGreedy && p.n_group > 1) {
    const int groups = static_cast<int>(p.n_group), per_group = e_count / groups;
    float group_score[kMaxGroups];
    for (int g = 0; g < groups; ++g) {
      float first = -CUDART_INF_F, second = -CUDART_INF_F;
      for (int e = g * per_group; e < (g + 1) * per_group; ++e) {
        if (choice[e] > first) {
          second = first;
          first = choice[e];
        } else if (choice[e] > second) {
          second = choice[e];
        }
      }
      group_score[g] = p.method == GateMethod::kNoauxTc ? first + second : first;
    }
    int kept[kMaxGroups];
    for (int k = 0; k < p.topk_group; ++k) kept[k] = argmax_excluding(group_score, groups, kept, k);
    for (int e = 0; e < e_count; ++e) {
      bool keep = false;
      for (int k = 0; k < p.topk_group; ++k) keep |= kept[k] == e / per_group;
      if (!keep) choice[e] = -CUDART_INF_F;
    }
  }
  int chosen[kMaxTopK];
  float sum = 0.0f;
  for (int k = 0; k < p.top_k; ++k) {
    chosen[k] = argmax_excluding(choice, e_count, chosen, k);
    sum += scores[chosen[k]];
  }
  for (int k = 0; k < p.top_k; ++k) {
    float w = scores[chosen[k]];
    if (p.norm_topk_prob) w /= (sum + 1e-20f);
    p.topk_ids[t * p.top_k + k] = chosen[k];
    p.topk_weights[t * p.top_k + k] = w * p.routed_scaling_factor;
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
  constexpr int kThreads = 64;
  const DeviceWeight bias = p.bias != nullptr ? *p.bias : DeviceWeight{};
  moe_gate_kernel<<<blocks_for(p.num_tokens, kThreads), kThreads, 0, stream>>>(p, bias, p.bias != nullptr);
}

void launch_moe_combine(MatrixRef y, const int32_t* rows, const float* weights, int64_t top_k, MatrixRef out,
                        cudaStream_t stream) {
  if (out.rows == 0) return;
  const unsigned int threads = out.cols >= 256 ? 256 : static_cast<unsigned int>((out.cols + 31) / 32 * 32);
  moe_combine_kernel<<<static_cast<unsigned int>(out.rows), threads, 0, stream>>>(y, rows, weights, top_k,
                                                                                  out);
}

}  // namespace ds::cuda
