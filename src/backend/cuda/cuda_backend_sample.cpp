// CudaBackend::sample: checks every request on the host, turns each one's token lists into one entry per
// distinct token (repetition, output count, min_tokens mask), uploads the requests and the entries in one
// copy, runs one thread block per request (cuda_sample.cu) and copies back only the results: a token, its
// logprob and up to 20 top logprobs per request, instead of the [rows, vocab] logits.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_context.h"
#include "util/check.h"

namespace ds {
namespace {

// Above this much dynamic shared memory (the per-chunk sums) the kernel would not launch without opting in.
constexpr size_t kMaxSampleSharedBytes = 24 * 1024;

void check_request(const SampleRequest& r, int64_t rows, int64_t vocab, size_t index) {
  DS_CHECK(r.row >= 0 && r.row < rows, "sample request {}: row {} outside the logits [0, {})", index, r.row,
           rows);
  DS_CHECK(r.num_top_logprobs >= 0 && r.num_top_logprobs <= kMaxSampleTopLogprobs,
           "sample request {}: {} top logprobs, allowed [0, {}]", index, r.num_top_logprobs,
           kMaxSampleTopLogprobs);
  DS_CHECK(r.top_k >= 0, "sample request {}: top_k {} < 0", index, r.top_k);
  DS_CHECK(r.top_p > 0.0 && r.top_p <= 1.0, "sample request {}: top_p {} outside (0, 1]", index, r.top_p);
  DS_CHECK(r.min_p >= 0.0f && r.min_p <= 1.0f, "sample request {}: min_p {} outside [0, 1]", index, r.min_p);
  DS_CHECK(r.greedy || (std::isfinite(r.inv_temperature) && r.inv_temperature > 0.0f),
           "sample request {}: inverse temperature {} is not a finite number > 0", index, r.inv_temperature);
  DS_CHECK(r.greedy || (r.uniform >= 0.0 && r.uniform < 1.0), "sample request {}: uniform {} outside [0, 1)",
           index, r.uniform);
  DS_CHECK(std::isfinite(r.repetition_penalty) && r.repetition_penalty > 0.0 &&
               std::isfinite(r.frequency_penalty) && std::isfinite(r.presence_penalty),
           "sample request {}: penalties {}, {}, {}", index, r.repetition_penalty, r.frequency_penalty,
           r.presence_penalty);
  for (const LogitBias& b : r.logit_bias)
    DS_CHECK(b.token >= 0 && b.token < vocab && std::isfinite(b.bias),
             "sample request {}: logit_bias of token {} ({}) outside the vocabulary [0, {})", index, b.token,
             b.bias, vocab);
  for (const auto ids : {r.prompt_ids, r.output_ids, r.allowed_ids, std::span<const int32_t>(r.masked_ids)})
    for (const int32_t id : ids)
      DS_CHECK(id >= 0 && id < vocab, "sample request {}: token id {} outside the vocabulary [0, {})", index,
               id, vocab);
}

// Appends one entry per distinct token r's penalties and mask touch. slot: [vocab] all -1 on entry and on
// return (reset only where it was set, so a call costs O(ids), never O(vocab)).
void append_entries(const SampleRequest& r, std::vector<cuda::PenaltyEntry>& entries,
                    std::vector<int32_t>& slot) {
  const size_t first = entries.size();
  auto entry = [&](int32_t id) -> cuda::PenaltyEntry& {
    int32_t& s = slot[static_cast<size_t>(id)];
    if (s < 0) {
      s = static_cast<int32_t>(entries.size());
      entries.push_back({.id = id});
    }
    return entries[static_cast<size_t>(s)];
  };
  for (const LogitBias& b : r.logit_bias) {
    entry(b.token).has_bias = 1;
    entry(b.token).bias = b.bias;
  }
  for (const int32_t id : r.allowed_ids) entry(id).allowed = 1;
  if (r.repetition_penalty != 1.0) {
    for (const int32_t id : r.prompt_ids) entry(id).repeated = 1;
    for (const int32_t id : r.output_ids) entry(id).repeated = 1;
  }
  if (r.frequency_penalty != 0.0 || r.presence_penalty != 0.0)
    for (const int32_t id : r.output_ids) ++entry(id).output_count;
  for (const int32_t id : r.masked_ids) entry(id).masked = 1;
  for (size_t e = first; e < entries.size(); ++e) slot[static_cast<size_t>(entries[e].id)] = -1;
}

}  // namespace

bool CudaBackend::sample(const Tensor& logits, std::span<const SampleRequest> requests,
                         std::span<SampleResult> out) {
  DS_CHECK(logits.dtype == DType::kF32 && logits.shape.size() == 2,
           "sample: logits must be F32 [rows, vocab]");
  DS_CHECK(out.size() == requests.size(), "sample: {} results for {} requests", out.size(), requests.size());
  const int64_t rows = logits.rows(), vocab = logits.cols();
  DS_CHECK(vocab > 0 && vocab < INT32_MAX, "sample: vocabulary of {}", vocab);
  DS_CHECK(cuda::sample_shared_bytes(vocab) <= kMaxSampleSharedBytes,
           "sample: a vocabulary of {} is too large", vocab);
  if (requests.empty()) return true;

  std::vector<cuda::SampleKernelRequest> kernel_requests(requests.size());
  std::vector<cuda::PenaltyEntry> entries;
  std::vector<int32_t> slot;  // append_entries' [vocab], made when a request first needs it
  int32_t num_penalized = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const SampleRequest& r = requests[i];
    check_request(r, rows, vocab, i);
    cuda::SampleKernelRequest& k = kernel_requests[i];
    k.row = r.row;
    k.greedy = r.greedy ? 1 : 0;
    k.top_k = r.top_k > 0 && r.top_k < vocab ? static_cast<int32_t>(r.top_k) : 0;
    k.num_top = static_cast<int32_t>(std::min<int64_t>(r.num_top_logprobs, vocab));
    k.inv_temperature = r.inv_temperature;
    k.min_p = r.min_p;
    k.top_p = r.top_p;
    k.repetition_penalty = r.repetition_penalty;
    k.frequency_penalty = r.frequency_penalty;
    k.presence_penalty = r.presence_penalty;
    k.uniform = r.greedy ? 0.0 : r.uniform;
    k.entry_begin = static_cast<int32_t>(entries.size());
    k.allowed_only = r.allowed_ids.empty() ? 0 : 1;
    if (r.repetition_penalty != 1.0 || r.frequency_penalty != 0.0 || r.presence_penalty != 0.0 ||
        !r.masked_ids.empty() || !r.logit_bias.empty() || !r.allowed_ids.empty()) {
      if (slot.empty()) slot.assign(static_cast<size_t>(vocab), -1);
      append_entries(r, entries, slot);
    }
    k.entry_end = static_cast<int32_t>(entries.size());
    k.penalized_row = k.entry_end > k.entry_begin ? num_penalized++ : -1;
  }

  // The requests and the entries in one upload.
  const size_t request_bytes = kernel_requests.size() * sizeof(cuda::SampleKernelRequest);
  std::vector<std::byte> packed(request_bytes + entries.size() * sizeof(cuda::PenaltyEntry));
  std::memcpy(packed.data(), kernel_requests.data(), request_bytes);
  if (!entries.empty())
    std::memcpy(packed.data() + request_bytes, entries.data(), packed.size() - request_bytes);
  const cuda::DeviceBuffer d_packed = cuda::upload(*ctx_, std::span<const std::byte>(packed));
  const cuda::DeviceBuffer d_penalized(ctx_->stream,
                                       static_cast<size_t>(num_penalized * vocab) * sizeof(float));
  const cuda::DeviceBuffer d_out(ctx_->stream, requests.size() * sizeof(cuda::SampleKernelResult));
  const auto* d_requests = d_packed.as<cuda::SampleKernelRequest>();
  const auto* d_entries =
      reinterpret_cast<const cuda::PenaltyEntry*>(d_packed.as<std::byte>() + request_bytes);
  cuda::launch_sample(logits.f32(), vocab, vocab, d_requests, static_cast<int32_t>(requests.size()),
                      d_entries, d_penalized.as<float>(), d_out.as<cuda::SampleKernelResult>(), ctx_->stream);
  DS_CUDA_CHECK_LAUNCH();
  ctx_->after_op("sample");

  std::vector<cuda::SampleKernelResult> results(requests.size());
  DS_CUDA_CHECK(cudaMemcpyAsync(results.data(), d_out.as<cuda::SampleKernelResult>(),
                                results.size() * sizeof(cuda::SampleKernelResult), cudaMemcpyDeviceToHost,
                                ctx_->stream));
  DS_CUDA_CHECK(cudaStreamSynchronize(ctx_->stream));
  for (size_t i = 0; i < results.size(); ++i) {
    const cuda::SampleKernelResult& r = results[i];
    SampleResult& o = out[i];
    // A row with NaN or nothing left to sample fails its own request only (the engine ends that one).
    if (r.status == static_cast<int32_t>(SampleStatus::kBadLogits) ||
        r.status == static_cast<int32_t>(SampleStatus::kAllMasked)) {
      o = SampleResult{};
      o.status = static_cast<SampleStatus>(r.status);
      continue;
    }
    DS_CHECK(r.status == 0 && r.token >= 0 && r.token < vocab && r.num_top == kernel_requests[i].num_top,
             "sample request {}: the kernel returned status {}, token {}", i, r.status, r.token);
    o.status = SampleStatus::kOk;
    o.token = r.token;
    o.logprob = r.logprob;
    o.top_ids.assign(r.top_ids, r.top_ids + r.num_top);
    o.top_logprobs.assign(r.top_logprobs, r.top_logprobs + r.num_top);
  }
  return true;
}

}  // namespace ds
