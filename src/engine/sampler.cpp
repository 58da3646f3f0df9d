#include "engine/sampler.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <limits>

#include "util/check.h"

namespace ds {

namespace {
// exp_nonpositive is 0 below this: 2^k stays a normal float (k >= -124), and e^-86 = 4e-38 is nothing
// beside the 1 the most likely token weighs.
constexpr float kExpZeroBelow = -86.0f;
}  // namespace

namespace detail {

float exp_nonpositive(float x) {
  // exp(x) = 2^k exp(r) with k = round(x / ln 2) and |r| <= ln(2) / 2, as Cephes' expf. The clamp and the
  // final select compare bit patterns (for x <= 0 a larger pattern is a more negative number): GCC will not
  // turn a float comparison into a vector select while it honours floating-point traps.
  constexpr float kLowest = kExpZeroBelow;
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi =
      0.693359375f;  // ln 2 = kLn2Hi + kLn2Lo, kLn2Hi short enough that k * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 0x1.8p23f;  // adding it rounds to an integer kept in the low mantissa bits
  constexpr uint32_t kLowestBits = std::bit_cast<uint32_t>(kLowest);
  const uint32_t x_bits = std::bit_cast<uint32_t>(x);
  const float clamped = std::bit_cast<float>(std::min(x_bits, kLowestBits));
  const float shifted = clamped * kLog2e + kRound;
  const float k = shifted - kRound;
  const float r = clamped - k * kLn2Hi - k * kLn2Lo;
  // Taylor series to r^7; the first term left out is below 0.35^8 / 8! = 6e-9.
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^k by adding k to p's exponent field; k is the low bits of `shifted`.
  const uint32_t k_bits = std::bit_cast<uint32_t>(shifted) - std::bit_cast<uint32_t>(kRound);
  const uint32_t y_bits = std::bit_cast<uint32_t>(p) + (k_bits << 23);
  const uint32_t keep = 0u - static_cast<uint32_t>(x_bits <= kLowestBits);  // all ones unless x < kLowest
  return std::bit_cast<float>(y_bits & keep);
}

}  // namespace detail

namespace {

using detail::exp_nonpositive;

// vLLM's _SAMPLING_EPS: a temperature this small is greedy (dividing by it would only overflow).
constexpr double kGreedyBelowTemperature = 1e-5;
constexpr float kMasked = -std::numeric_limits<float>::infinity();
// Rows are walked in chunks this long: exps into a buffer on the stack, and per-chunk sums for the draw.
constexpr size_t kChunk = 1024;
// top-k / top-p: below this many candidates just sort them; above, bucket them by logit first.
constexpr size_t kSortBelow = 512;
constexpr size_t kBuckets = 4096;
// top-k up to this takes the best k in one pass with a heap; a larger k goes through the buckets.
constexpr size_t kHeapTopKUpTo = 1024;
// Interleaved running maxima / sums: independent chains the compiler turns into vector lanes.
constexpr size_t kLanes = 8;

// Working buffers, kept per thread and reused from call to call: a vocabulary-sized vector is past malloc's
// mmap threshold, so a fresh one each call costs a page fault per 4 KiB, which was most of a call's time.
// They carry no state between calls; every use sizes and fills what it reads.
struct Scratch {
  std::vector<float> penalized;         // [vocab] the row after penalties
  std::vector<float> weight;            // [vocab] exp((logit - max) / T)
  std::vector<float> candidate_weight;  // weight[ids[j]]
  std::vector<float> kept_weight;       // [vocab] weight of the kept tokens, 0 elsewhere
  std::vector<int32_t> ids;             // candidate token ids
  std::vector<int32_t> boundary;        // the tokens of the bucket where a cut falls
  std::vector<uint16_t> bucket;         // bucket[j]: the bucket of ids[j]
  std::vector<double> per_bucket;       // [kBuckets]
  std::vector<double> chunk_sum;        // [ceil(vocab / kChunk)]
  std::vector<uint8_t> seen;            // [vocab] repetition penalty applied; valid only at the ids in hand
  std::vector<int32_t> count;           // [vocab] occurrences in the output; valid only at the ids in hand
  std::vector<float> allowed_logit;     // [allowed_token_ids] their logits while the row is masked
};

// The first n elements of a buffer that only ever grows, so that reuse never zero-fills it again.
template <typename T>
std::span<T> grow(std::vector<T>& buffer, size_t n) {
  if (buffer.size() < n) buffer.resize(n);
  return {buffer.data(), n};
}

Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

// Token a ranks before token b: the higher logit, or the lower id on a tie, so that every cut (top-k, top-p,
// top logprobs) is one a user can predict.
struct RanksBefore {
  std::span<const float> logits;
  bool operator()(int32_t a, int32_t b) const {
    const float la = logits[static_cast<size_t>(a)];
    const float lb = logits[static_cast<size_t>(b)];
    return la > lb || (la == lb && a < b);
  }
};

// A float's bits as an int32 that sorts like the float (NaN aside): negatives get their magnitude bits
// flipped. Its own inverse. Integer comparisons vectorize where float ones do not (see exp_nonpositive).
int32_t ordered_bits(float x) {
  const auto b = std::bit_cast<int32_t>(x);
  return b ^ ((b >> 31) & 0x7fffffff);
}

// The largest value of a row. A NaN with the sign bit clear wins (and fails the callers' checks), one with
// it set loses; row_stats looks for both.
float max_of(std::span<const float> row) {
  std::array<int32_t, kLanes> lane;
  lane.fill(ordered_bits(kMasked));
  size_t i = 0;
  for (; i + kLanes <= row.size(); i += kLanes)
    for (size_t j = 0; j < kLanes; ++j) lane[j] = std::max(lane[j], ordered_bits(row[i + j]));
  for (; i < row.size(); ++i) lane[0] = std::max(lane[0], ordered_bits(row[i]));
  return std::bit_cast<float>(
      ordered_bits(std::bit_cast<float>(*std::max_element(lane.begin(), lane.end()))));
}

// The sum in double, always added up in the same order, so that equal inputs give equal sums.
double sum_of(std::span<const float> values) {
  std::array<double, kLanes> lane{};
  size_t i = 0;
  for (; i + kLanes <= values.size(); i += kLanes)
    for (size_t j = 0; j < kLanes; ++j) lane[j] += values[i + j];
  for (; i < values.size(); ++i) lane[0] += values[i];
  double sum = 0.0;
  for (const double v : lane) sum += v;
  return sum;
}

// What the raw log-softmax needs: the max, and log(sum(exp(logits))) with the max taken out first so that
// nothing overflows.
struct RowStats {
  float max = 0.0f;
  double log_sum_exp = 0.0;
};

RowStats row_stats(std::span<const float> logits) {
  const float max_logit = max_of(logits);
  if (!std::isfinite(max_logit)) {
    throw SamplingError(
        SampleStatus::kBadLogits,
        fmt::format("the logits row of {} has no finite maximum ({})", logits.size(), max_logit));
  }
  std::array<float, kChunk> exps;
  double sum = 0.0;
  uint32_t nan_seen = 0;
  for (size_t start = 0; start < logits.size(); start += kChunk) {
    const size_t len = std::min(kChunk, logits.size() - start);
    for (size_t i = 0; i < len; ++i) {
      const float l = logits[start + i];
      exps[i] = exp_nonpositive(l - max_logit);
      nan_seen |= static_cast<uint32_t>((std::bit_cast<uint32_t>(l) & 0x7fffffffu) > 0x7f800000u);
    }
    sum += sum_of({exps.data(), len});
  }
  if (nan_seen != 0) {
    throw SamplingError(SampleStatus::kBadLogits,
                        fmt::format("the logits row of {} contains NaN", logits.size()));
  }
  return {max_logit, max_logit + std::log(sum)};
}

// The n best-ranked tokens of a row into `best`, best first. A heap of the best so far with the worst of
// them at the front: one pass in which nearly every token is turned away by one comparison with a float
// held in a register.
void best_n(std::span<const float> row, size_t n, std::vector<int32_t>& best) {
  best.clear();
  n = std::min(n, row.size());
  if (n == 0) return;
  const RanksBefore before{row};
  for (size_t i = 0; i < n; ++i) best.push_back(static_cast<int32_t>(i));
  std::make_heap(best.begin(), best.end(), before);
  float worst = row[static_cast<size_t>(best.front())];
  for (size_t i = n; i < row.size(); ++i) {
    if (row[i] <= worst) continue;  // ranks after the worst kept (on a tie, its id is the higher)
    std::pop_heap(best.begin(), best.end(), before);
    best.back() = static_cast<int32_t>(i);
    std::push_heap(best.begin(), best.end(), before);
    worst = row[static_cast<size_t>(best.front())];
  }
  std::sort_heap(best.begin(), best.end(), before);
}

// The top_n entries of the raw log-softmax, best first.
std::vector<TokenLogprob> top_logprobs(std::span<const float> logits, double lse, int64_t top_n) {
  DS_CHECK(top_n >= 0, "top_n {} < 0", top_n);
  std::vector<int32_t> best;
  best_n(logits, static_cast<size_t>(top_n), best);
  std::vector<TokenLogprob> out;
  out.reserve(best.size());
  for (const int32_t id : best)
    out.push_back({id, static_cast<float>(static_cast<double>(logits[static_cast<size_t>(id)]) - lse)});
  return out;
}

[[nodiscard]] bool changes_logits(const SamplingParams& params, const SamplingContext& context) {
  const bool in_min_tokens = static_cast<int64_t>(context.output_ids.size()) < params.min_tokens &&
                             !(context.eos_token_ids.empty() && params.stop_token_ids.empty());
  return params.repetition_penalty != 1.0 || params.frequency_penalty != 0.0 ||
         params.presence_penalty != 0.0 || in_min_tokens || !params.logit_bias.empty() ||
         !params.allowed_token_ids.empty();
}

// A penalized or biased logit as a float: beyond float's range it saturates at +-FLT_MAX rather than become
// an infinity (which would leave the row without a finite maximum, or unmask a token). Called only with a
// finite original logit: a masked one (-inf) stays masked.
float saturate(double logit) {
  constexpr double kMax = std::numeric_limits<float>::max();
  return static_cast<float>(std::clamp(logit, -kMax, kMax));
}

[[noreturn]] void throw_all_masked() {
  throw SamplingError(SampleStatus::kAllMasked,
                      "every token of the vocabulary is masked (allowed_token_ids, min_tokens with EOS and "
                      "stop_token_ids, or logits of -inf)");
}

void check_ids(std::span<const int32_t> ids, size_t vocab, const char* what) {
  for (const int32_t id : ids)
    DS_CHECK(id >= 0 && static_cast<size_t>(id) < vocab, "{} id {} outside the vocabulary [0, {})", what, id,
             vocab);
}

// A uniform double in [0, 1) from the top 53 bits of one draw: the same on every standard library, which
// std::uniform_real_distribution does not promise.
double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

int32_t argmax(std::span<const float> row, float max_logit) {
  if (!(max_logit > kMasked)) throw_all_masked();
  // The first of equal maxima: the lowest id, as torch.argmax.
  return static_cast<int32_t>(std::find(row.begin(), row.end(), max_logit) - row.begin());
}

// The shortest prefix of `ids` in rank order whose measure reaches `target`, i.e. a token is kept iff the
// measure of the tokens ranked before it is < target: with a measure of 1 that is top-k, with the weight
// top-p (vLLM's rule: at least one token, and the one that crosses p is kept). Moves the kept tokens to the
// front of ids, in no particular order, and returns that part. Tokens are bucketed by their distance from
// the max logit, a monotone map, so each bucket holds a run of consecutive ranks: one pass finds the bucket
// where the cut falls, and only that bucket is sorted.
template <typename Measure>
std::span<int32_t> keep_best_prefix(std::span<int32_t> ids, std::span<const float> row, float max_logit,
                                    float max_distance, const Measure& measure, double target,
                                    Scratch& scratch) {
  double before = 0.0;  // the measure of everything ranked before the next token looked at
  // Sorts a run of ids whose ranks all follow those already kept; returns how many of its front to keep.
  auto sort_and_count = [&](std::span<int32_t> run) {
    std::sort(run.begin(), run.end(), RanksBefore{row});
    size_t n = 0;
    for (; n < run.size() && before < target; ++n) before += measure(run[n]);
    return n;
  };
  if (ids.size() < kSortBelow) return ids.first(sort_and_count(ids));

  // The buckets split [0, max_distance] below the max logit; anything further (a token of weight 0) goes
  // to the last one.
  const float scale = static_cast<float>(kBuckets - 1) / max_distance;
  const std::span<uint16_t> bucket = grow(scratch.bucket, ids.size());
  std::vector<double>& per_bucket = scratch.per_bucket;
  per_bucket.assign(kBuckets, 0.0);
  for (size_t j = 0; j < ids.size(); ++j) {
    const float distance = (max_logit - row[static_cast<size_t>(ids[j])]) * scale;
    bucket[j] = static_cast<uint16_t>(std::min(distance, static_cast<float>(kBuckets - 1)));
    per_bucket[bucket[j]] += measure(ids[j]);
  }
  size_t cut_bucket = 0;
  while (cut_bucket + 1 < kBuckets && before + per_bucket[cut_bucket] < target)
    before += per_bucket[cut_bucket++];
  // The tokens of the buckets before the cut move to the front of ids (in place: the write position never
  // passes the read position), those of the cut's bucket aside. Every id is written and the positions
  // advance on a match, so there is no branch to mispredict on rows where half the tokens are kept.
  const std::span<int32_t> boundary = grow(scratch.boundary, ids.size());
  size_t num_kept = 0;
  size_t num_boundary = 0;
  for (size_t j = 0; j < ids.size(); ++j) {
    const int32_t id = ids[j];
    ids[num_kept] = id;
    num_kept += bucket[j] < cut_bucket;
    boundary[num_boundary] = id;
    num_boundary += bucket[j] == cut_bucket;
  }
  const size_t from_boundary = sort_and_count(boundary.first(num_boundary));
  std::copy_n(boundary.begin(), from_boundary, ids.begin() + static_cast<std::ptrdiff_t>(num_kept));
  return ids.first(num_kept + from_boundary);
}

// min-p: weights below min_weight become 0. Compared on the bits (both are >= 0) so that it vectorizes.
void zero_below(std::span<float> weight, float min_weight) {
  const auto min_bits = std::bit_cast<uint32_t>(min_weight);
  for (float& w : weight) {
    const auto bits = std::bit_cast<uint32_t>(w);
    w = std::bit_cast<float>(bits & (0u - static_cast<uint32_t>(bits >= min_bits)));
  }
}

// A draw by weight; returns the position in `weight`. The cumulative walk goes a chunk at a time on the chunk
// sums that made the total, so it only steps token by token inside the chunk where the target falls.
size_t draw_from_row(std::span<const float> weight, double uniform, Scratch& scratch) {
  const size_t n = weight.size();
  const std::span<double> chunk_sum = grow(scratch.chunk_sum, (n + kChunk - 1) / kChunk);
  double total = 0.0;
  for (size_t c = 0; c < chunk_sum.size(); ++c) {
    chunk_sum[c] = sum_of(weight.subspan(c * kChunk, std::min(kChunk, n - c * kChunk)));
    total += chunk_sum[c];
  }
  const double target = uniform * total;
  double acc = 0.0;
  for (size_t c = 0; c < chunk_sum.size(); ++c) {
    if (target >= acc + chunk_sum[c]) {
      acc += chunk_sum[c];
      continue;
    }
    const size_t end = std::min(n, (c + 1) * kChunk);
    size_t last = c * kChunk;
    for (size_t i = c * kChunk; i < end; ++i) {
      if (weight[i] == 0.0f) continue;
      acc += weight[i];
      last = i;
      if (target < acc) return i;
    }
    return last;  // rounding: the chunk's sum put the target inside it
  }
  // The target rounded up to the total: the last token that has any weight.
  for (size_t i = n; i-- > 0;)
    if (weight[i] > 0.0f) return i;
  DS_CHECK(false, "no token has any weight");
  return 0;
}

// Temperature, top-k, top-p, min-p, then one draw. `row` has its penalties applied and is free of NaN;
// max_logit is its max.
int32_t draw(std::span<const float> row, float max_logit, const SamplingParams& params, double uniform,
             Scratch& scratch) {
  const size_t vocab = row.size();
  if (!(max_logit > kMasked)) throw_all_masked();
  // weight = exp((logit - max) / T) = prob / max prob at this temperature: the most likely token weighs 1,
  // so min-p (keep prob >= min_p * max prob) is weight >= min_p. Neither top-k nor top-p drops the most
  // likely token or changes the ratios, so min-p after them is this same test. Weights are floats (a few
  // ulps, far below anything a draw can show); every sum over them is in double.
  const auto inv_temperature = static_cast<float>(1.0 / params.temperature);
  const auto min_weight = static_cast<float>(params.min_p);
  const std::span<float> weight = grow(scratch.weight, vocab);
  // No token of weight > 0 lies further than this below the max logit.
  const float max_distance = -kExpZeroBelow / inv_temperature;
  for (size_t i = 0; i < vocab; ++i) weight[i] = exp_nonpositive((row[i] - max_logit) * inv_temperature);
  const bool top_k_on = params.top_k > 0 && static_cast<uint64_t>(params.top_k) < vocab;
  const bool top_p_on = params.top_p < 1.0;

  if (!top_k_on && !top_p_on) {
    if (min_weight > 0.0f) zero_below(weight, min_weight);
    return static_cast<int32_t>(draw_from_row(weight, uniform, scratch));
  }

  // The candidates. Tokens of weight 0 (masked, or underflowed at this temperature) may be among them; they
  // add nothing to any mass and are never drawn.
  std::span<int32_t> ids;
  const auto top_k = static_cast<size_t>(params.top_k);
  if (top_k_on && top_k <= kHeapTopKUpTo) {
    best_n(row, top_k, scratch.ids);
    ids = scratch.ids;
  } else {
    ids = grow(scratch.ids, vocab);
    size_t num_ids = 0;
    for (size_t i = 0; i < vocab; ++i) {
      ids[num_ids] = static_cast<int32_t>(i);
      num_ids += weight[i] > 0.0f;
    }
    ids = ids.first(num_ids);
    if (top_k_on && ids.size() > top_k) {
      ids = keep_best_prefix(
          ids, row, max_logit, max_distance, [](int32_t) { return 1.0; }, static_cast<double>(top_k),
          scratch);
    }
  }
  // The candidates' weights side by side, so that sums over them vectorize and the draw can walk them.
  std::span<float> candidate_weight;
  auto gather_weights = [&] {
    candidate_weight = grow(scratch.candidate_weight, ids.size());
    for (size_t j = 0; j < ids.size(); ++j) candidate_weight[j] = weight[static_cast<size_t>(ids[j])];
  };
  if (top_p_on) {
    // vLLM renormalizes after top-k: the nucleus is top_p of the mass that top-k left.
    gather_weights();
    const double total = sum_of(candidate_weight);
    auto weight_of = [&](int32_t id) { return static_cast<double>(weight[static_cast<size_t>(id)]); };
    ids = keep_best_prefix(ids, row, max_logit, max_distance, weight_of, params.top_p * total, scratch);
  }
  // The draw walks the whole row in id order with the dropped tokens at weight 0, whatever order the cuts
  // left the kept ids in: the CUDA sampler computes the same weights and chunk sums bit for bit and walks the
  // same way, so both pick the same token for the same uniform.
  const std::span<float> kept_weight = grow(scratch.kept_weight, vocab);
  std::fill(kept_weight.begin(), kept_weight.end(), 0.0f);
  for (const int32_t id : ids) kept_weight[static_cast<size_t>(id)] = weight[static_cast<size_t>(id)];
  if (min_weight > 0.0f) zero_below(kept_weight, min_weight);
  return static_cast<int32_t>(draw_from_row(kept_weight, uniform, scratch));
}

}  // namespace

void Sampler::apply_penalties(std::span<float> logits, const SamplingParams& params,
                              const SamplingContext& context) {
  const size_t vocab = logits.size();
  check_ids(context.prompt_ids, vocab, "prompt token");
  check_ids(context.output_ids, vocab, "output token");
  // Ids from the request (bias, allowed, stop) outside the row can never be sampled: skipped.
  auto in_row = [vocab](int32_t id) { return id >= 0 && static_cast<size_t>(id) < vocab; };
  for (const LogitBias& b : params.logit_bias) {
    if (!in_row(b.token)) continue;
    float& logit = logits[static_cast<size_t>(b.token)];
    if (std::isfinite(logit)) logit = saturate(static_cast<double>(logit) + b.bias);
  }
  // Per-token scratch is reset and read only at the ids that occur: O(prompt + output), never O(vocab).
  Scratch& scratch = thread_scratch();
  if (params.repetition_penalty != 1.0) {
    const double penalty = params.repetition_penalty;
    std::vector<uint8_t>& seen = scratch.seen;
    if (seen.size() < vocab) seen.resize(vocab);
    for (const auto ids : {context.prompt_ids, context.output_ids})
      for (const int32_t id : ids) seen[static_cast<size_t>(id)] = 0;
    for (const auto ids : {context.prompt_ids, context.output_ids}) {
      for (const int32_t id : ids) {
        if (seen[static_cast<size_t>(id)]) continue;
        seen[static_cast<size_t>(id)] = 1;
        float& logit = logits[static_cast<size_t>(id)];
        const double l = logit;
        if (std::isfinite(l)) logit = saturate(l > 0.0 ? l / penalty : l * penalty);
      }
    }
  }
  if (params.frequency_penalty != 0.0 || params.presence_penalty != 0.0) {
    std::vector<int32_t>& count = scratch.count;
    if (count.size() < vocab) count.resize(vocab);
    for (const int32_t id : context.output_ids) count[static_cast<size_t>(id)] = 0;
    for (const int32_t id : context.output_ids) ++count[static_cast<size_t>(id)];
    for (const int32_t id : context.output_ids) {
      int32_t& c = count[static_cast<size_t>(id)];
      if (c == 0) continue;  // already applied
      float& logit = logits[static_cast<size_t>(id)];
      if (std::isfinite(logit)) {
        logit = saturate(static_cast<double>(logit) - params.frequency_penalty * c - params.presence_penalty);
      }
      c = 0;
    }
  }
  if (!params.allowed_token_ids.empty()) {
    std::vector<float>& kept = scratch.allowed_logit;
    kept.clear();
    for (const int32_t id : params.allowed_token_ids)
      kept.push_back(in_row(id) ? logits[static_cast<size_t>(id)] : kMasked);
    std::fill(logits.begin(), logits.end(), kMasked);
    for (size_t j = 0; j < kept.size(); ++j)
      if (in_row(params.allowed_token_ids[j]))
        logits[static_cast<size_t>(params.allowed_token_ids[j])] = kept[j];
  }
  if (static_cast<int64_t>(context.output_ids.size()) < params.min_tokens) {
    for (const auto ids : {context.eos_token_ids, std::span<const int32_t>(params.stop_token_ids)})
      for (const int32_t id : ids)
        if (in_row(id)) logits[static_cast<size_t>(id)] = kMasked;
  }
}

bool Sampler::is_greedy(const SamplingParams& params) {
  return params.temperature < kGreedyBelowTemperature;
}

double Sampler::draw_uniform(const SamplingParams& params, std::mt19937_64& rng) {
  return is_greedy(params) ? 0.0 : uniform01(rng);  // greedy draws nothing from rng, as in vLLM
}

SampledToken Sampler::sample(std::span<const float> logits, const SamplingParams& params,
                             const SamplingContext& context, std::mt19937_64& rng) const {
  return sample(logits, params, context, draw_uniform(params, rng));
}

SampledToken Sampler::sample(std::span<const float> logits, const SamplingParams& params,
                             const SamplingContext& context, double uniform) const {
  DS_CHECK(!logits.empty(), "sampling from an empty logits row");
  const RowStats raw = row_stats(logits);
  Scratch& scratch = thread_scratch();
  std::span<const float> row = logits;
  float max_logit = raw.max;
  if (changes_logits(params, context)) {
    scratch.penalized.assign(logits.begin(), logits.end());
    apply_penalties(scratch.penalized, params, context);
    row = scratch.penalized;
    max_logit = max_of(row);
  }
  const int32_t token =
      is_greedy(params) ? argmax(row, max_logit) : draw(row, max_logit, params, uniform, scratch);
  SampledToken out;
  out.token = token;
  out.logprob = static_cast<float>(static_cast<double>(logits[static_cast<size_t>(token)]) - raw.log_sum_exp);
  if (params.logprobs) out.top_logprobs = top_logprobs(logits, raw.log_sum_exp, *params.logprobs);
  return out;
}

SampledToken Sampler::score(std::span<const float> logits, int32_t token, int64_t top_n) {
  DS_CHECK(token >= 0 && static_cast<size_t>(token) < logits.size(), "token {} outside the row [0, {})",
           token, logits.size());
  const double lse = row_stats(logits).log_sum_exp;
  SampledToken out;
  out.token = token;
  out.logprob = static_cast<float>(static_cast<double>(logits[static_cast<size_t>(token)]) - lse);
  out.top_logprobs = top_logprobs(logits, lse, top_n);
  return out;
}

SampleRequest to_sample_request(const SamplingParams& params, const SamplingContext& context, int32_t row,
                                double uniform, int64_t vocab) {
  SampleRequest r;
  r.row = row;
  r.greedy = Sampler::is_greedy(params);
  if (!r.greedy) r.inv_temperature = static_cast<float>(1.0 / params.temperature);  // as draw() computes it
  r.top_k = std::max<int64_t>(params.top_k, 0);
  r.top_p = params.top_p;
  r.min_p = static_cast<float>(params.min_p);
  r.repetition_penalty = params.repetition_penalty;
  r.frequency_penalty = params.frequency_penalty;
  r.presence_penalty = params.presence_penalty;
  r.prompt_ids = context.prompt_ids;
  r.output_ids = context.output_ids;
  r.logit_bias = params.logit_bias;
  r.allowed_ids = params.allowed_token_ids;
  if (static_cast<int64_t>(context.output_ids.size()) < params.min_tokens) {
    for (const auto ids : {context.eos_token_ids, std::span<const int32_t>(params.stop_token_ids)})
      for (const int32_t id : ids)
        if (id >= 0 && id < vocab) r.masked_ids.push_back(id);
  }
  r.num_top_logprobs = static_cast<int32_t>(params.logprobs.value_or(0));
  r.uniform = uniform;
  return r;
}

SampledToken to_sampled_token(const SampleResult& result) {
  SampledToken out;
  out.token = result.token;
  out.logprob = result.logprob;
  for (size_t i = 0; i < result.top_ids.size(); ++i)
    out.top_logprobs.push_back({result.top_ids[i], result.top_logprobs[i]});
  return out;
}

}  // namespace ds
