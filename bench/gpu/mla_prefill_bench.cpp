#include "gpu/mla_prefill_bench.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "gpu/event_timing.h"
#include "gpu/mla_bench_util.h"
#include "util/check.h"

namespace ds::bench {
namespace {

constexpr int64_t kLora = kMlaLora, kRope = kMlaRope, kNope = kMlaNope, kV = kMlaV;
constexpr int32_t kPage = kMlaPage;

// Median time of mla_attention on `backend`, and its output.
Timing time_form(CudaBackend& backend, const Weight& kv_b_proj, const ForwardBatch& batch,
                 const std::vector<float>& cache_v, const std::vector<float>& q_v, int64_t heads, int warmup,
                 int iters, std::vector<float>* out_v) {
  const int64_t t = batch.num_tokens();
  Tensor cache = backend.empty({static_cast<int64_t>(cache_v.size()) / (kLora + kRope), kLora + kRope});
  backend.copy_from_host(cache_v, cache);
  Tensor q = backend.empty({t, heads * (kNope + kRope)});
  backend.copy_from_host(q_v, q);
  Tensor out = backend.empty({t, heads * kV});
  MlaAttentionParams p;
  p.q = &q, p.kv_cache = &cache, p.kv_b_proj = &kv_b_proj, p.out = &out;
  p.num_heads = heads, p.qk_nope_head_dim = kNope, p.qk_rope_head_dim = kRope, p.v_head_dim = kV;
  p.kv_lora_rank = kLora, p.block_size = kPage;
  p.softmax_scale = 1.0f / std::sqrt(static_cast<float>(kNope + kRope));

  // Slow shapes get fewer repetitions (at least 3), so the table stays within a few seconds.
  const Timing time = time_calls(static_cast<cudaStream_t>(backend.stream_handle()), warmup, iters, 1000.0,
                                 [&] { backend.mla_attention(p, batch); });
  out_v->resize(static_cast<size_t>(out.numel()));
  backend.copy_to_host(out, *out_v);
  return time;
}

}  // namespace

std::vector<MlaPrefillResult> bench_mla_prefill(const std::vector<MlaPrefillShape>& shapes, int warmup,
                                                int iters) {
  CudaBackend absorbed{CudaBackendOptions{.mla_prefill = MlaPrefillForm::kAbsorbed}};
  CudaBackend expanded{CudaBackendOptions{.mla_prefill = MlaPrefillForm::kExpanded}};
  std::vector<MlaPrefillResult> results;
  for (const MlaPrefillShape& s : shapes) {
    const int64_t n = s.tokens, h = s.heads, pages = (n + kPage - 1) / kPage;
    // kv_b_proj; its device copy (prepared by `expanded`) serves both backends.
    const std::unique_ptr<HostKvB> w = random_kv_b_proj(h, 21, "bench.prefill.kv_b_proj.weight");
    Weight& kv_b_proj = w->weight;
    expanded.prepare_weight(kv_b_proj);

    ForwardBatch batch;
    batch.max_blocks_per_seq = static_cast<int32_t>(pages);
    batch.query_start_loc = {0, static_cast<int32_t>(n)};
    batch.seq_lens = {static_cast<int32_t>(n)};
    for (int64_t p = 0; p < pages; ++p) batch.block_table.push_back(static_cast<int32_t>(pages - 1 - p));
    for (int64_t i = 0; i < n; ++i) {
      batch.token_ids.push_back(0);
      batch.positions.push_back(static_cast<int32_t>(i));
      batch.slot_mapping.push_back((pages - 1 - i / kPage) * kPage + i % kPage);
    }
    const std::vector<float> cache_v =
        random_floats(static_cast<size_t>(pages * kPage * (kLora + kRope)), 22, 1.0f);
    const std::vector<float> q_v = random_floats(static_cast<size_t>(n * h * (kNope + kRope)), 23, 1.0f);

    MlaPrefillResult r;
    r.shape = s;
    std::vector<float> out_a, out_e;
    r.absorbed = time_form(absorbed, kv_b_proj, batch, cache_v, q_v, h, warmup, iters, &out_a);
    r.expanded = time_form(expanded, kv_b_proj, batch, cache_v, q_v, h, warmup, iters, &out_e);
    double diff = 0, norm = 0;
    for (size_t i = 0; i < out_a.size(); ++i) {
      DS_CHECK(std::isfinite(out_e[i]) && std::isfinite(out_a[i]), "MLA prefill n={} h={}: non-finite output",
               n, h);
      diff += (double(out_e[i]) - out_a[i]) * (double(out_e[i]) - out_a[i]);
      norm += double(out_a[i]) * out_a[i];
    }
    r.difference = std::sqrt(diff / norm);
    const double nd = static_cast<double>(n), hd = static_cast<double>(h), pairs = nd * (nd + 1) / 2;
    r.absorbed_flops = hd * (nd * 2 * 2 * kNope * kLora + pairs * 2 * (kLora + kRope + kLora));
    r.expanded_flops = hd * (nd * 2 * (kNope + kV) * kLora + pairs * 2 * (kNope + kRope + kV));
    results.push_back(r);
  }
  return results;
}

}  // namespace ds::bench
