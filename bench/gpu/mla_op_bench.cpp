#include "gpu/mla_op_bench.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "gpu/event_timing.h"
#include "gpu/mla_bench_util.h"
#include "util/check.h"

namespace ds::bench {
namespace {

constexpr int64_t kLora = kMlaLora, kRope = kMlaRope, kNope = kMlaNope, kV = kMlaV;
constexpr int32_t kPage = kMlaPage;

// Times one shape on one backend; `output` gets the op's output (for the comparison between variants).
MlaVariantResult bench_one(CudaBackend& backend, const MlaShape& s, int warmup, int iters,
                           std::vector<float>& output) {
  const int64_t b = s.batch, h = s.heads, pages_per_seq = (s.s_k + kPage - 1) / kPage;
  const int64_t num_pages = b * pages_per_seq, cache_dim = kLora + kRope;

  const std::unique_ptr<HostKvB> w = random_kv_b_proj(h, 11, "bench.kv_b_proj.weight");
  Weight& kv_b_proj = w->weight;
  backend.prepare_weight(kv_b_proj);

  // The cache: 64 pages of random latents, copied over every page (distinct memory, random contents).
  Tensor seed_pages = backend.empty({int64_t{64} * kPage, cache_dim});
  backend.copy_from_host(random_floats(static_cast<size_t>(seed_pages.numel()), 12, 1.0f), seed_pages);
  Tensor cache = backend.empty({num_pages * kPage, cache_dim});
  std::vector<BlockMove> moves;
  for (int64_t p = 0; p < num_pages; ++p)
    moves.push_back({static_cast<int32_t>(p % 64), static_cast<int32_t>(p)});
  backend.copy_blocks(seed_pages, cache, moves, kPage);

  Tensor q = backend.empty({b, h * (kNope + kRope)});
  backend.copy_from_host(random_floats(static_cast<size_t>(q.numel()), 13, 1.0f), q);
  Tensor out = backend.empty({b, h * kV});
  // Poisoned, so that an element the op does not write shows up as NaN below.
  backend.copy_from_host(std::vector<float>(static_cast<size_t>(out.numel()), NAN), out);

  ForwardBatch batch;
  batch.max_blocks_per_seq = static_cast<int32_t>(pages_per_seq);
  batch.query_start_loc.push_back(0);
  for (int64_t i = 0; i < b; ++i) {
    batch.token_ids.push_back(0);
    batch.positions.push_back(static_cast<int32_t>(s.s_k - 1));
    batch.query_start_loc.push_back(static_cast<int32_t>(i + 1));
    batch.seq_lens.push_back(static_cast<int32_t>(s.s_k));
    for (int64_t p = 0; p < pages_per_seq; ++p)
      batch.block_table.push_back(static_cast<int32_t>(i * pages_per_seq + p));
    const int64_t last = s.s_k - 1;
    batch.slot_mapping.push_back((i * pages_per_seq + last / kPage) * kPage + last % kPage);
  }

  MlaAttentionParams p;
  p.q = &q;
  p.kv_cache = &cache;
  p.kv_b_proj = &kv_b_proj;
  p.out = &out;
  p.num_heads = h;
  p.qk_nope_head_dim = kNope;
  p.qk_rope_head_dim = kRope;
  p.v_head_dim = kV;
  p.kv_lora_rank = kLora;
  p.block_size = kPage;
  p.softmax_scale = 1.0f / std::sqrt(static_cast<float>(kNope + kRope));

  const auto stream = static_cast<cudaStream_t>(backend.stream_handle());
  // [0, 1]: around the op; [2, 3]: around the attention kernel and its combine, recorded by the backend.
  cudaEvent_t ev[4] = {};
  for (cudaEvent_t& e : ev) check_cuda(cudaEventCreate(&e), "cudaEventCreate");
  backend.set_mla_kernel_events(ev[2], ev[3]);
  auto one = [&] {
    check_cuda(cudaEventRecord(ev[0], stream), "cudaEventRecord");
    backend.mla_attention(p, batch);
    check_cuda(cudaEventRecord(ev[1], stream), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(ev[1]), "cudaEventSynchronize");
    float op_ms = 0, kernel_ms = 0;
    check_cuda(cudaEventElapsedTime(&op_ms, ev[0], ev[1]), "cudaEventElapsedTime");
    check_cuda(cudaEventElapsedTime(&kernel_ms, ev[2], ev[3]), "cudaEventElapsedTime");
    return std::pair<double, double>(op_ms, kernel_ms);
  };
  double warm_ms = 0;
  for (int i = 0; i < warmup; ++i) warm_ms = one().first;
  // Slow shapes get fewer repetitions (at least 3), so the whole table stays within a few seconds each.
  const int n = std::max(3, std::min(iters, static_cast<int>(2000.0 / std::max(warm_ms, 1e-3))));
  std::vector<double> op_samples, kernel_samples;
  for (int i = 0; i < n; ++i) {
    const auto [op_ms, kernel_ms] = one();
    op_samples.push_back(op_ms);
    kernel_samples.push_back(kernel_ms);
  }
  backend.set_mla_kernel_events(nullptr, nullptr);
  for (cudaEvent_t e : ev) check_cuda(cudaEventDestroy(e), "cudaEventDestroy");

  // Every output element written and finite.
  output.assign(static_cast<size_t>(out.numel()), 0.0f);
  backend.copy_to_host(out, output);
  for (float x : output) DS_CHECK(std::isfinite(x), "MLA op b={} h={}: non-finite output", b, h);

  MlaVariantResult r;
  r.op = summarize(std::move(op_samples));
  r.kernel = summarize(std::move(kernel_samples));
  return r;
}

}  // namespace

std::vector<MlaResult> bench_mla_decode(const std::vector<MlaVariant>& variants,
                                        const std::vector<MlaShape>& shapes, int warmup, int iters) {
  std::vector<MlaResult> results;
  for (const MlaShape& s : shapes) {
    MlaResult r;
    r.shape = s;
    const double bd = static_cast<double>(s.batch), hd = static_cast<double>(s.heads),
                 sk = static_cast<double>(s.s_k), cache_dim = static_cast<double>(kLora + kRope);
    r.bytes = (bd * sk * cache_dim + bd * hd * cache_dim + bd * hd * kLora) * 2.0;
    r.flops = bd * hd * sk * (cache_dim + kLora) * 2.0;
    std::vector<float> first, output;
    for (const MlaVariant& v : variants) {
      MlaVariantResult vr = bench_one(*v.backend, s, warmup, iters, output);
      vr.name = v.name;
      if (first.empty()) {
        first = output;
      } else {
        double diff = 0, norm = 0;
        for (size_t i = 0; i < first.size(); ++i) {
          diff += (double(output[i]) - first[i]) * (double(output[i]) - first[i]);
          norm += double(first[i]) * first[i];
        }
        vr.difference = std::sqrt(diff / std::max(norm, 1e-30));
      }
      r.variants.push_back(std::move(vr));
    }
    results.push_back(std::move(r));
  }
  return results;
}

}  // namespace ds::bench
