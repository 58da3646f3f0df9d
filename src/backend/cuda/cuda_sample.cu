// Sampling on the device: one thread block per request, doing what the engine's Sampler
// (src/engine/sampler.cpp) does, in the same arithmetic wherever the chosen token depends on it:
//
//   penalties and the min_tokens mask (double, as the host) -> raw row max and log-sum-exp (for the logprobs)
//   -> greedy: the first id at the max; else weights exp_nonpositive((logit - max) * inv_temperature)
//   -> top-k and top-p as cuts of the rank order (logit descending, ties to the lower id) found by an 8-bit
//   radix select on a 64-bit rank key -> min-p -> chunk sums over the whole row (1024 tokens a chunk, 8 lanes
//   each, lanes added in order: the host's sum_of) -> an inverse-CDF walk in id order at uniform * total.
//
// The weights, the chunk sums, the total and the walk are bit for bit the host's, so the token agrees for the
// same uniform. Only the top-p cut sums weights in another order (atomics), so its boundary can differ from
// the host's where p * total lands within rounding (~1e-16 relative) of a cumulative sum.
#include <cstdint>

#include "backend/cuda/cuda_kernels.h"

namespace ds::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 1024;  // sampler.cpp's kChunk
constexpr int kLanes = 8;     // sampler.cpp's kLanes
constexpr int kRadix = 256;
constexpr int kHistCopies = 8;  // per-warp-group copies of the radix histogram, to spread atomic contention
constexpr float kExpZeroBelow = -86.0f;

// sampler.cpp's detail::exp_nonpositive with every operation rounded on its own: nvcc would fuse a * b + c
// into one FMA, which the host build (ISO C++, no -march) never does, and the bits must agree.
__device__ __forceinline__ float exp_nonpositive(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 0x1.8p23f;
  const uint32_t lowest_bits = __float_as_uint(kExpZeroBelow);
  const uint32_t x_bits = __float_as_uint(x);
  const float clamped = __uint_as_float(min(x_bits, lowest_bits));
  const float shifted = __fadd_rn(__fmul_rn(clamped, kLog2e), kRound);
  const float k = __fsub_rn(shifted, kRound);
  const float r = __fsub_rn(__fsub_rn(clamped, __fmul_rn(k, kLn2Hi)), __fmul_rn(k, kLn2Lo));
  float p = 1.0f / 5040.0f;
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 720.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 120.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 24.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f / 6.0f);
  p = __fadd_rn(__fmul_rn(p, r), 0.5f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f);
  const uint32_t k_bits = __float_as_uint(shifted) - __float_as_uint(kRound);
  const uint32_t y_bits = __float_as_uint(p) + (k_bits << 23);
  const uint32_t keep = 0u - static_cast<uint32_t>(x_bits <= lowest_bits);
  return __uint_as_float(y_bits & keep);
}

// sampler.cpp's saturate: a penalized logit as a float, at +-FLT_MAX beyond float's range.
__device__ __forceinline__ float saturate(double logit) {
  constexpr double kMax = 3.4028234663852886e38;  // FLT_MAX
  return __double2float_rn(fmin(fmax(logit, -kMax), kMax));
}

// sampler.cpp's ordered_bits: an int32 that sorts like the float (its own inverse).
__device__ __forceinline__ int32_t ordered_bits(float x) {
  const int32_t b = __float_as_int(x);
  return b ^ ((b >> 31) & 0x7fffffff);
}

// The float whose ordered_bits are o.
__device__ __forceinline__ float from_ordered_bits(int32_t o) {
  return __int_as_float(o ^ ((o >> 31) & 0x7fffffff));
}

// The rank of token i as one integer, larger = ranked first: the logit, then the lower id. -0 counts as +0,
// because the host ranks by float comparison.
__device__ __forceinline__ uint64_t rank_key(float logit, int64_t i) {
  const uint32_t b = __float_as_uint(logit == 0.0f ? 0.0f : logit);
  const uint32_t ordered = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return (static_cast<uint64_t>(ordered) << 32) | (0xffffffffu - static_cast<uint32_t>(i));
}

__device__ __forceinline__ float logit_of_key(uint64_t key) {
  const auto ordered = static_cast<uint32_t>(key >> 32);
  return __uint_as_float((ordered & 0x80000000u) ? (ordered & 0x7fffffffu) : ~ordered);
}

__device__ __forceinline__ int32_t id_of_key(uint64_t key) {
  return static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(key));
}

// The length of the chunk starting at begin: kChunk, or what is left of the row.
__device__ __forceinline__ int chunk_length(int64_t vocab, int64_t begin) {
  return vocab - begin < kChunk ? static_cast<int>(vocab - begin) : kChunk;
}

// What the block's reductions share. One reduction at a time: each starts and ends with __syncthreads().
struct Shared {
  int32_t i32[kWarps];
  uint64_t u64[kWarps];
  double f64[kWarps];
  double hist[kHistCopies][kRadix];
  float chunk_values[kChunk];
  int32_t flag;
  int32_t digit;
  int32_t draw_chunk;
  double draw_acc;
  double total;
};

template <class T, class Op>
__device__ T block_reduce(T v, Op op, T* slots) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (threadIdx.x % 32 == 0) slots[threadIdx.x / 32] = v;
  __syncthreads();
  T r = slots[0];
  for (int w = 1; w < kWarps; ++w) r = op(r, slots[w]);
  return r;
}

struct MaxI32 {
  __device__ int32_t operator()(int32_t a, int32_t b) const { return a > b ? a : b; }
};
struct MinI32 {
  __device__ int32_t operator()(int32_t a, int32_t b) const { return a < b ? a : b; }
};
struct MaxU64 {
  __device__ uint64_t operator()(uint64_t a, uint64_t b) const { return a > b ? a : b; }
};
struct AddF64 {
  __device__ double operator()(double a, double b) const { return a + b; }
};

// sampler.cpp's max_of: the largest value by ordered bits (a NaN with the sign bit clear wins).
__device__ float row_max(const float* row, int64_t vocab, Shared& sh) {
  int32_t m = ordered_bits(-__int_as_float(0x7f800000));
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) m = max(m, ordered_bits(row[i]));
  return from_ordered_bits(block_reduce(m, MaxI32{}, sh.i32));
}

// The chunk sums of value(i) over the row exactly as sampler.cpp's sum_of adds each chunk of kChunk: lane j
// takes elements j, j + 8, ... of the chunk's whole groups of 8 in order, lane 0 then the tail, and the lanes
// are added in order starting from 0.0. chunk_sum[c] for every chunk; returns the sequential total.
template <class Value>
__device__ double chunk_sums(int64_t vocab, const Value& value, double* lane_sum, double* chunk_sum,
                             Shared& sh) {
  const int num_chunks = static_cast<int>((vocab + kChunk - 1) / kChunk);
  for (int t = threadIdx.x; t < num_chunks * kLanes; t += kThreads) {
    const int c = t / kLanes, j = t % kLanes;
    const int64_t begin = int64_t{c} * kChunk;
    const int len = chunk_length(vocab, begin);
    const int full = len / kLanes * kLanes;
    double s = 0.0;
    for (int i = j; i < full; i += kLanes) s += static_cast<double>(value(begin + i));
    if (j == 0)
      for (int i = full; i < len; ++i) s += static_cast<double>(value(begin + i));
    lane_sum[t] = s;
  }
  __syncthreads();
  for (int c = threadIdx.x; c < num_chunks; c += kThreads) {
    double s = 0.0;
    for (int j = 0; j < kLanes; ++j) s += lane_sum[c * kLanes + j];
    chunk_sum[c] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int c = 0; c < num_chunks; ++c) total += chunk_sum[c];
    sh.total = total;
  }
  __syncthreads();
  return sh.total;
}

// The key of the last token kept by a cut of the rank order among the tokens with key >= floor (sampler.cpp's
// keep_best_prefix): token t is kept iff the measure of the tokens ranked before it is < target. Returns
// floor when they never reach the target (all kept). An 8-bit radix select from the top byte of the key down;
// the histogram holds the measure (a count or a weight) of the tokens under the prefix found so far.
template <class Measure>
__device__ uint64_t cut_key(const float* row, int64_t vocab, uint64_t floor, double target,
                            const Measure& measure, Shared& sh) {
  uint64_t prefix = 0;
  double above = 0.0;  // the measure of the tokens ranked before every key with this prefix
  double* hist = &sh.hist[(threadIdx.x / 32) % kHistCopies][0];
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < kHistCopies * kRadix; d += kThreads) (&sh.hist[0][0])[d] = 0.0;
    __syncthreads();
    const uint64_t high_mask = shift == 56 ? 0 : (~0ull << (shift + 8));
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      const uint64_t key = rank_key(row[i], i);
      if (key < floor || (key & high_mask) != prefix) continue;
      const double m = measure(i);
      if (m != 0.0) atomicAdd(&hist[(key >> shift) & (kRadix - 1)], m);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int found = -1, lowest_nonzero = -1;
      double before_lowest = above;
      for (int d = kRadix - 1; d >= 0; --d) {
        double h = 0.0;
        for (int k = 0; k < kHistCopies; ++k) h += sh.hist[k][d];
        if (h == 0.0) continue;
        if (above + h >= target) {
          found = d;
          break;
        }
        lowest_nonzero = d;
        before_lowest = above;
        above += h;
      }
      if (found < 0 && shift != 56 && lowest_nonzero >= 0) {
        // The sub-buckets summed (in another order) just below the target that their bucket reached: the cut
        // is at the last token under the prefix.
        found = lowest_nonzero;
        above = before_lowest;
      }
      sh.digit = found;
    }
    __syncthreads();
    const int digit = sh.digit;
    if (digit < 0) return floor;
    prefix |= static_cast<uint64_t>(digit) << shift;
  }
  return prefix;
}

__global__ void __launch_bounds__(kThreads)
    sample_kernel(const float* logits, int64_t ld, int64_t vocab, const SampleKernelRequest* requests,
                  const PenaltyEntry* entries, float* penalized, SampleKernelResult* out) {
  __shared__ Shared sh;
  extern __shared__ double dynamic_shared[];
  const int num_chunks = static_cast<int>((vocab + kChunk - 1) / kChunk);
  double* lane_sum = dynamic_shared;                         // [num_chunks * kLanes]
  double* chunk_sum = dynamic_shared + num_chunks * kLanes;  // [num_chunks]
  const SampleKernelRequest req = requests[blockIdx.x];
  SampleKernelResult& res = out[blockIdx.x];
  const float* raw = logits + int64_t{req.row} * ld;
  const int tid = threadIdx.x;

  // Penalties, in sampler.cpp's order and precision: logit_bias, repetition (double, once per distinct
  // token), then frequency and presence (double), each saturating at +-FLT_MAX as the host's saturate(), then
  // the allowed_token_ids and min_tokens masks. Each entry is a distinct token.
  const float* row = raw;
  if (req.penalized_row >= 0) {
    float* pen = penalized + int64_t{req.penalized_row} * vocab;
    const float masked = -__int_as_float(0x7f800000);
    for (int64_t i = tid; i < vocab; i += kThreads) pen[i] = req.allowed_only ? masked : raw[i];
    __syncthreads();
    for (int e = req.entry_begin + tid; e < req.entry_end; e += kThreads) {
      const PenaltyEntry en = entries[e];
      if (req.allowed_only && !en.allowed) continue;  // masked above
      float l = raw[en.id];
      if (isfinite(l)) {
        if (en.has_bias) l = saturate(__dadd_rn(static_cast<double>(l), static_cast<double>(en.bias)));
        if (en.repeated) {
          const double d = l;
          l = saturate(d > 0.0 ? __ddiv_rn(d, req.repetition_penalty) : __dmul_rn(d, req.repetition_penalty));
        }
        if (en.output_count > 0) {
          l = saturate(
              __dsub_rn(__dsub_rn(static_cast<double>(l),
                                  __dmul_rn(req.frequency_penalty, static_cast<double>(en.output_count))),
                        req.presence_penalty));
        }
      }
      if (en.masked) l = masked;
      pen[en.id] = l;
    }
    __syncthreads();
    row = pen;
  }

  // The raw row's max and log-sum-exp (sampler.cpp's row_stats), and whether it holds a NaN.
  const float raw_max = row_max(raw, vocab, sh);
  int32_t nan_seen = 0;
  for (int64_t i = tid; i < vocab; i += kThreads) nan_seen |= isnan(raw[i]);
  nan_seen = block_reduce(nan_seen, MaxI32{}, sh.i32);
  if (nan_seen || !isfinite(raw_max)) {
    if (tid == 0) res.status = 1;
    return;
  }
  const double raw_sum = chunk_sums(
      vocab, [&](int64_t i) { return exp_nonpositive(__fsub_rn(raw[i], raw_max)); }, lane_sum, chunk_sum, sh);
  const double log_sum_exp = static_cast<double>(raw_max) + log(raw_sum);

  const float max_logit = row == raw ? raw_max : row_max(row, vocab, sh);
  if (!(max_logit > -__int_as_float(0x7f800000))) {
    if (tid == 0) res.status = 2;
    return;
  }

  int32_t token = 0;
  if (req.greedy) {
    // The first id at the max (std::find on the host).
    int32_t first = INT32_MAX;
    for (int64_t i = tid; i < vocab; i += kThreads)
      if (row[i] == max_logit) first = min(first, static_cast<int32_t>(i));
    token = block_reduce(first, MinI32{}, sh.i32);
  } else {
    const float inv_t = req.inv_temperature;
    auto weight = [&](int64_t i) { return exp_nonpositive(__fmul_rn(__fsub_rn(row[i], max_logit), inv_t)); };
    // The kept tokens are those with rank key >= threshold: top-k, then top-p over what top-k kept.
    uint64_t threshold = 0;
    if (req.top_k > 0) {
      threshold = cut_key(
          row, vocab, 0, static_cast<double>(req.top_k), [](int64_t) { return 1.0; }, sh);
    }
    if (req.top_p < 1.0) {
      double kept_total = 0.0;
      for (int64_t i = tid; i < vocab; i += kThreads)
        if (rank_key(row[i], i) >= threshold) kept_total += weight(i);
      kept_total = block_reduce(kept_total, AddF64{}, sh.f64);
      threshold = cut_key(row, vocab, threshold, req.top_p * kept_total, weight, sh);
    }
    const float min_p = req.min_p;
    auto kept_weight = [&](int64_t i) {
      const float w = rank_key(row[i], i) >= threshold ? weight(i) : 0.0f;
      return min_p > 0.0f && !(w >= min_p) ? 0.0f : w;
    };
    // sampler.cpp's draw_from_row over the whole row.
    const double total = chunk_sums(vocab, kept_weight, lane_sum, chunk_sum, sh);
    const double target = req.uniform * total;
    if (tid == 0) {
      double acc = 0.0;
      int c = 0;
      for (; c < num_chunks; ++c) {
        if (target >= acc + chunk_sum[c]) {
          acc += chunk_sum[c];
          continue;
        }
        break;
      }
      sh.draw_chunk = c;
      sh.draw_acc = acc;
    }
    __syncthreads();
    const int c = sh.draw_chunk;
    if (c < num_chunks) {
      const int64_t begin = int64_t{c} * kChunk;
      const int len = chunk_length(vocab, begin);
      for (int i = tid; i < len; i += kThreads) sh.chunk_values[i] = kept_weight(begin + i);
      __syncthreads();
      if (tid == 0) {
        double acc = sh.draw_acc;
        int64_t pick = begin;  // rounding: the chunk's sum put the target inside it; the last weighed token
        for (int i = 0; i < len; ++i) {
          const float w = sh.chunk_values[i];
          if (w == 0.0f) continue;
          acc += w;
          pick = begin + i;
          if (target < acc) break;
        }
        sh.draw_chunk = static_cast<int32_t>(pick);
      }
      __syncthreads();
      token = sh.draw_chunk;
    } else {
      // The target rounded up to the total: the last token that has any weight.
      int32_t last = -1;
      for (int64_t i = tid; i < vocab; i += kThreads)
        if (kept_weight(i) > 0.0f) last = max(last, static_cast<int32_t>(i));
      token = block_reduce(last, MaxI32{}, sh.i32);
      if (token < 0) {
        if (tid == 0) res.status = 2;
        return;
      }
    }
  }

  // The top logprobs of the raw row: each thread keeps its best num_top, then num_top rounds of a block max
  // over the threads' next candidates.
  const int num_top = req.num_top;
  uint64_t best[kSampleMaxTop];
  int count = 0;
  if (num_top > 0) {
    for (int64_t i = tid; i < vocab; i += kThreads) {
      const uint64_t key = rank_key(raw[i], i);
      if (count == num_top && key <= best[count - 1]) continue;
      int j = count < num_top ? count++ : count - 1;
      for (; j > 0 && best[j - 1] < key; --j) best[j] = best[j - 1];
      best[j] = key;
    }
  }
  int next = 0;
  for (int k = 0; k < num_top; ++k) {
    const uint64_t mine = next < count ? best[next] : 0;
    const uint64_t winner = block_reduce(mine, MaxU64{}, sh.u64);
    if (mine == winner && winner != 0) ++next;
    if (tid == 0) {
      res.top_ids[k] = id_of_key(winner);
      res.top_logprobs[k] = static_cast<float>(static_cast<double>(logit_of_key(winner)) - log_sum_exp);
    }
  }
  if (tid == 0) {
    res.token = token;
    res.logprob = static_cast<float>(static_cast<double>(raw[token]) - log_sum_exp);
    res.num_top = num_top;
    res.status = 0;
  }
}

}  // namespace

size_t sample_shared_bytes(int64_t vocab) {
  const int64_t num_chunks = (vocab + kChunk - 1) / kChunk;
  return static_cast<size_t>(num_chunks * (kLanes + 1)) * sizeof(double);
}

void launch_sample(const float* logits, int64_t ld, int64_t vocab, const SampleKernelRequest* requests,
                   int32_t num_requests, const PenaltyEntry* entries, float* penalized,
                   SampleKernelResult* out, cudaStream_t stream) {
  if (num_requests == 0) return;
  sample_kernel<<<num_requests, kThreads, sample_shared_bytes(vocab), stream>>>(logits, ld, vocab, requests,
                                                                                entries, penalized, out);
}

}  // namespace ds::cuda
