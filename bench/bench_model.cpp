// bench_model: a DeepSeek checkpoint on the CUDA backend, measured against the card's own ceilings.
//
//   bench_model --model DIR [--label NAME] [--batches 1,8,32,64,128,256] [--context 1024] [--prompt 1024]
//   bench_model --mla-op                      the MLA decode op alone on FlashMLA's shapes
//   bench_model --mla-prefill-op              the MLA op alone on one prompt, absorbed vs expanded form
//   bench_model --moe-op                      the routed experts and the decode linears alone (random weights
//                                             made on the device at V2-Lite's and the V3 slice's shapes)
//   bench_model --model DIR --cuda-graphs     decode rows replay CUDA graphs (DEEPSERVE_BENCH_GRAPHS=1 too)
//
// In one process: the ceilings (device-to-device copy bandwidth, cuBLASLt bf16 GEMM rate at 8192^3), then the
// prefill of one prompt, then decode steps at each batch size with `context` tokens already cached per
// sequence. The cache is filled by that prefill (real latents of the model), whose blocks are then copied to
// every other sequence (separate copies, so no sequence reads another's memory). A decode step is one
// DeepseekModel::forward of one new token per sequence, logits for each (lm_head included), timed with CUDA
// events on the backend's stream (host work inside the step, such as the router's copy to the host, counts).
// Each row: median of the timed steps after warm-up, the roofline (bytes that must be read — each weight the
// step touches once, routed experts only where a token went, plus the KV cache — over the measured bandwidth;
// FLOPs over the measured GEMM rate), and the share of the roofline reached. One more step per row runs with
// events around every op, for the split of where the time goes (written with --ops-out).
#include <cuda_runtime.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "gpu/ceilings.h"
#include "gpu/event_timing.h"
#include "gpu/mla_op_bench.h"
#include "gpu/mla_prefill_bench.h"
#include "gpu/moe_op_bench.h"
#include "gpu/op_profiler.h"
#include "model/deepseek.h"

namespace ds::bench {
namespace {

struct Options {
  std::string model_dir;
  std::string label;
  std::vector<int> batches = {1, 8, 32, 64, 128, 256};
  int context = 1024;
  int prompt = 1024;
  int block_size = 64;
  int warmup = 2;
  int iters = 10;
  double row_budget_ms = 4000;  // fewer repetitions (at least 3) for rows slower than this in total
  bool mla_op = false;
  bool mla_prefill_op = false;
  bool moe_op = false;
  bool cuda_graphs = false;  // decode rows replay CUDA graphs captured for the batch sizes (DEEPSERVE_BENCH_GRAPHS=1)
  std::string out;      // markdown tables appended here (and printed)
  std::string ops_out;  // per-op split appended here
};

struct StepResult {
  std::string what;
  int64_t batch = 0, tokens = 0;
  Timing time;
  StepStats cost;                // from the profiled step
  int64_t nonfinite_logits = 0;  // of the profiled step: random weights must keep activations finite
};

// One step: `seqs` sequences of `new_tokens` tokens each on top of `cached` tokens, sequence s in blocks
// [s * blocks_per_seq, ...). Logits for the last token of each sequence.
ForwardBatch make_step(int64_t seqs, int64_t new_tokens, int64_t cached, int32_t block_size,
                       int64_t blocks_per_seq, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  ForwardBatch b;
  b.max_blocks_per_seq = static_cast<int32_t>(blocks_per_seq);
  b.query_start_loc.push_back(0);
  for (int64_t s = 0; s < seqs; ++s) {
    for (int64_t i = 0; i < new_tokens; ++i) {
      const int64_t pos = cached + i;
      b.token_ids.push_back(token(rng));
      b.positions.push_back(static_cast<int32_t>(pos));
      b.slot_mapping.push_back((s * blocks_per_seq + pos / block_size) * block_size + pos % block_size);
    }
    b.logits_indices.push_back(static_cast<int32_t>(b.token_ids.size() - 1));
    b.query_start_loc.push_back(static_cast<int32_t>(b.token_ids.size()));
    b.seq_lens.push_back(static_cast<int32_t>(cached + new_tokens));
    for (int64_t k = 0; k < blocks_per_seq; ++k)
      b.block_table.push_back(static_cast<int32_t>(s * blocks_per_seq + k));
  }
  return b;
}

// Runs `batch` warmup + N times with events around forward(), then once profiled; counts non-finite logits.
StepResult run_step(const Options& o, DeepseekModel& model, CudaBackend& cuda, ProfilingBackend& prof,
                    const ForwardBatch& batch, const std::string& what) {
  const Timing time = time_calls(static_cast<cudaStream_t>(cuda.stream_handle()), o.warmup, o.iters,
                                 o.row_budget_ms, [&] { (void)model.forward(batch); });

  prof.begin_step(true);
  const Tensor logits = model.forward_eager(batch);  // ops one by one, even where forward() replays a graph
  StepResult r;
  r.cost = prof.end_step();
  std::vector<float> host(static_cast<size_t>(logits.numel()));
  cuda.copy_to_host(logits, host);
  for (float x : host) r.nonfinite_logits += std::isfinite(x) ? 0 : 1;
  r.what = what;
  r.batch = batch.num_seqs();
  r.tokens = batch.num_tokens();
  r.time = time;
  return r;
}

std::string fmt_bytes(double b) {
  return b >= 1e9 ? fmt::format("{:.2f} GB", b / 1e9) : fmt::format("{:.1f} MB", b / 1e6);
}

std::string fmt_ms(double ms) {
  return ms >= 10 ? fmt::format("{:.1f}", ms) : fmt::format("{:.3f}", ms);
}

// The roofline of a step: the larger of bytes / bandwidth and FLOPs / GEMM rate.
struct Roof {
  double bytes = 0, t_bytes = 0, t_flops = 0, floor = 0;
};
Roof roof(const StepStats& c, const Ceilings& ceil) {
  Roof r;
  r.bytes = c.weight_bytes + c.kv_bytes;
  r.t_bytes = r.bytes / (ceil.copy_gbps * 1e9) * 1e3;
  r.t_flops = c.flops / (ceil.gemm_tflops * 1e12) * 1e3;
  r.floor = std::max(r.t_bytes, r.t_flops);
  return r;
}

std::string step_table(const std::string& title, const std::vector<StepResult>& rows, const Ceilings& ceil) {
  std::ostringstream s;
  s << "\n### " << title << "\n\n"
    << "| step | batch | ms (median) | min–max, n | tok/s | bytes must read (weights + KV) "
       "| experts touched / MoE layer | FLOPs | bytes/BW ms | FLOPs/rate ms | roofline ms | of roofline |\n"
    << "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const StepResult& r : rows) {
    const Roof rf = roof(r.cost, ceil);
    const double experts =
        r.cost.moe_layers > 0 ? static_cast<double>(r.cost.experts_touched) / r.cost.moe_layers : 0;
    s << fmt::format(
        "| {} | {} | {} | {}–{}, {} | {:.0f} | {} ({} + {}) | {:.1f} | {:.2f} T | {} | {} | {} ({}) | "
        "{:.1f}% |\n",
        r.what, r.batch, fmt_ms(r.time.median_ms), fmt_ms(r.time.min_ms), fmt_ms(r.time.max_ms), r.time.iters,
        static_cast<double>(r.tokens) / (r.time.median_ms * 1e-3), fmt_bytes(rf.bytes),
        fmt_bytes(r.cost.weight_bytes), fmt_bytes(r.cost.kv_bytes), experts, r.cost.flops / 1e12,
        fmt_ms(rf.t_bytes), fmt_ms(rf.t_flops), fmt_ms(rf.floor),
        rf.t_bytes >= rf.t_flops ? "memory" : "compute", 100.0 * rf.floor / r.time.median_ms);
  }
  for (const StepResult& r : rows)
    s << fmt::format("\n{} batch {}: {}", r.what, r.batch,
                     r.nonfinite_logits == 0 ? "every logit finite"
                                             : fmt::format("{} logits NOT finite", r.nonfinite_logits));
  s << "\n";
  return s.str();
}

// Where one profiled step's time goes, op by op, each beside its own floor.
std::string ops_table(const std::string& title, const StepResult& r, const Ceilings& ceil) {
  std::ostringstream s;
  s << "\n#### " << title << " — " << r.what << ", batch " << r.batch
    << " (one step with events around each op: " << fmt_ms(r.cost.timed_ms) << " ms; untimed median "
    << fmt_ms(r.time.median_ms) << " ms)\n\n"
    << "| op | calls | ms | share | bytes | FLOPs | own floor ms | of floor "
       "|\n|---|---|---|---|---|---|---|---|\n";
  double sum = 0;
  for (const OpStats& op : r.cost.ops) {
    const double floor =
        std::max(op.bytes / (ceil.copy_gbps * 1e9), op.flops / (ceil.gemm_tflops * 1e12)) * 1e3;
    sum += op.ms;
    s << fmt::format("| {} | {} | {} | {:.1f}% | {} | {:.3f} T | {} | {:.1f}% |\n", op.name, op.calls,
                     fmt_ms(op.ms), 100.0 * op.ms / r.cost.timed_ms, fmt_bytes(op.bytes), op.flops / 1e12,
                     fmt_ms(floor), op.ms > 0 ? 100.0 * floor / op.ms : 0.0);
  }
  const double gap = r.cost.timed_ms - sum;
  s << fmt::format("| between ops (host: allocation, uploads, launches) | | {} | {:.1f}% | | | | |\n",
                   fmt_ms(gap), 100.0 * gap / r.cost.timed_ms);
  return s.str();
}

std::string ceilings_text(const Ceilings& c, const std::string& device) {
  return fmt::format(
      "\nCeilings on {} (same run): copy {:.0f} GB/s (device-to-device, {} read + written, median of {} = {} "
      "ms); "
      "cuBLASLt bf16 GEMM {}^3 {:.0f} TFLOP/s (median of {} = {} ms).\n",
      device, c.copy_gbps, fmt_bytes(c.copy_bytes), c.copy.iters, fmt_ms(c.copy.median_ms), c.gemm_n,
      c.gemm_tflops, c.gemm.iters, fmt_ms(c.gemm.median_ms));
}

void emit(const std::string& path, const std::string& text) {
  std::fputs(text.c_str(), stdout);
  std::fflush(stdout);
  if (path.empty()) return;
  std::ofstream f(path, std::ios::app);
  f << text;
}

std::string mla_table(const std::vector<MlaResult>& rows) {
  std::ostringstream s;
  s << "\n### MLA decode op alone (CudaBackend::mla_attention, FlashMLA's shapes: s_q 1, latent 576, page "
       "64, bf16)\n\n"
    << "op = the whole mla_attention call (W_UK GEMM, plan, attention kernel, combine, W_UV GEMM, host "
       "time in between); kernel = the attention kernel and its split-KV combine alone (events recorded by "
       "the backend around them). GB/s and TFLOP/s of the kernel time; difference = normalized difference "
       "of the output from the first kernel's.\n\n"
    << "| batch | s_k | heads | kernel | op µs (median) | kernel µs (median) | n | GB/s | TFLOP/s | "
       "FlashMLA µs (issue 6) | FlashMLA GB/s | FlashMLA / ours (kernel) | difference |\n"
    << "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const MlaResult& r : rows) {
    for (const MlaVariantResult& v : r.variants) {
      const double op_us = v.op.median_ms * 1e3, us = v.kernel.median_ms * 1e3;
      s << fmt::format(
          "| {} | {} | {} | {} | {:.0f} | {:.1f} | {} | {:.0f} | {:.1f} | {} | {} | {} | {:.1e} |\n",
          r.shape.batch, r.shape.s_k, r.shape.heads, v.name, op_us, us, v.kernel.iters,
          r.bytes / (us * 1e-6) / 1e9, r.flops / (us * 1e-6) / 1e12,
          r.shape.flashmla_us > 0 ? fmt::format("{:.0f}", r.shape.flashmla_us) : "—",
          r.shape.flashmla_gbps > 0 ? fmt::format("{:.0f}", r.shape.flashmla_gbps) : "—",
          r.shape.flashmla_us > 0 ? fmt::format("{:.3f}", r.shape.flashmla_us / us) : "—", v.difference);
    }
  }
  return s.str();
}

std::string mla_prefill_table(const std::vector<MlaPrefillResult>& rows, double gemm_tflops) {
  std::ostringstream s;
  s << "\n### MLA prefill op alone (CudaBackend::mla_attention, one prompt from position 0, latent 576, page 64, "
       "bf16): weight-absorbed vs expanded form\n\n"
    << "TFLOP/s count each form's own FLOPs (bench/gpu/mla_prefill_bench.h); % GEMM: of the cuBLASLt bf16 rate "
       "above.\n\n"
    << "| tokens | heads | absorbed µs | TFLOP/s | % GEMM | expanded µs | TFLOP/s | % GEMM | speedup | "
       "difference |\n"
    << "|---|---|---|---|---|---|---|---|---|---|\n";
  for (const MlaPrefillResult& r : rows) {
    const double a_us = r.absorbed.median_ms * 1e3, e_us = r.expanded.median_ms * 1e3;
    const double a_tf = r.absorbed_flops / (a_us * 1e-6) / 1e12, e_tf = r.expanded_flops / (e_us * 1e-6) / 1e12;
    s << fmt::format("| {} | {} | {:.0f} | {:.0f} | {:.0f}% | {:.0f} | {:.0f} | {:.0f}% | {:.2f}x | {:.1e} |\n",
                     r.shape.tokens, r.shape.heads, a_us, a_tf, 100 * a_tf / gemm_tflops, e_us, e_tf,
                     100 * e_tf / gemm_tflops, a_us / e_us, r.difference);
  }
  return s.str();
}

int run(const Options& o) {
  CudaBackend cuda;
  const std::string device = cuda.device_name();
  const Ceilings ceil = measure_ceilings(size_t{2} << 30, 8192, 3, 20);
  emit(o.out, ceilings_text(ceil, device));

  if (o.mla_op) {
    // FlashMLA on this H100 as issue 6 records it (2026-11-27, events around one call, median of 30).
    const std::vector<MlaShape> shapes = {{128, 4096, 128, 267, 2394},
                                          {64, 4096, 128, 146, 0},
                                          {8, 4096, 128, 57, 0},
                                          {128, 4096, 16, 229, 2653}};
    // Both attention kernels in the same run, each on its own backend (same device, same inputs).
    CudaBackend v1{CudaBackendOptions{.mla_decode = MlaDecodeKernel::kV1}};
    CudaBackend v2{CudaBackendOptions{.mla_decode = MlaDecodeKernel::kV2}};
    const std::vector<MlaVariant> variants = {{"V1", &v1}, {"V2", &v2}};
    emit(o.out, mla_table(bench_mla_decode(variants, shapes, o.warmup, o.iters)));
  }
  if (o.mla_prefill_op) {
    const std::vector<MlaPrefillShape> shapes = {{1024, 16}, {4096, 16}, {1024, 128}, {4096, 128}};
    emit(o.out, mla_prefill_table(bench_mla_prefill(shapes, o.warmup, o.iters), ceil.gemm_tflops));
  }
  if (o.moe_op) emit(o.out, bench_moe_ops(ceil, o.warmup, std::max(o.iters, 15)));
  if (o.model_dir.empty()) return 0;

  ProfilingBackend prof(cuda);
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<DeepseekModel> model = DeepseekModel::load(o.model_dir, prof);
  cuda.synchronize();
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const ModelConfig& c = model->config();
  const std::string label = o.label.empty() ? o.model_dir : o.label;
  emit(
      o.out,
      fmt::format(
          "\n## {} on {}\n\n{} layers, hidden {}, {} heads, {} routed experts top-{}, vocab {}{}; weights on "
          "the device {} (loaded in {:.1f} s, {:.2f} GB/s from the checkpoint files).\n",
          label, device, c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.n_routed_experts,
          c.num_experts_per_tok, c.vocab_size, c.fp8 ? ", block-FP8" : ", bf16",
          fmt_bytes(static_cast<double>(cuda.weight_bytes())), load_s,
          static_cast<double>(cuda.weight_bytes()) / 1e9 / load_s));

  int max_batch = 1;
  for (int b : o.batches) max_batch = std::max(max_batch, b);
  const int64_t blocks_per_seq = (std::max(o.context + 1, o.prompt) + o.block_size - 1) / o.block_size;
  model->allocate_kv_cache(int64_t{max_batch} * blocks_per_seq, o.block_size);
  if (o.cuda_graphs) {
    // Before the prefill: the capture's warm-up writes slot 0, which the prefill then fills for real.
    std::vector<int64_t> sizes(o.batches.begin(), o.batches.end());
    std::sort(sizes.begin(), sizes.end());
    sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
    const DecodeGraphSummary g =
        model->capture_decode_graphs(sizes, static_cast<int32_t>(blocks_per_seq));
    emit(o.out, fmt::format("\nDecode steps replay CUDA graphs: {}.\n", g.line()));
  }

  std::vector<StepResult> rows;
  std::string ops;
  // Prefill: one prompt of `prompt` tokens, sequence 0.
  const ForwardBatch prefill = make_step(1, o.prompt, 0, o.block_size, blocks_per_seq, c.vocab_size, 7);
  rows.push_back(run_step(o, *model, cuda, prof, prefill, fmt::format("prefill 1×{}", o.prompt)));
  ops += ops_table(label, rows.back(), ceil);

  // Decode needs `context` cached tokens per sequence: sequence 0's prefilled blocks, copied to the others.
  DS_CHECK(o.prompt >= o.context, "--prompt {} must cover --context {}", o.prompt, o.context);
  const int64_t full_blocks = (o.context + o.block_size - 1) / o.block_size;
  std::vector<BlockMove> moves;
  for (int64_t s = 1; s < max_batch; ++s)
    for (int64_t k = 0; k < full_blocks; ++k)
      moves.push_back({static_cast<int32_t>(k), static_cast<int32_t>(s * blocks_per_seq + k)});
  model->copy_blocks(moves);
  cuda.synchronize();

  for (int b : o.batches) {
    const ForwardBatch step = make_step(b, 1, o.context, o.block_size, blocks_per_seq, c.vocab_size, 100 + b);
    rows.push_back(run_step(o, *model, cuda, prof, step, fmt::format("decode @{}", o.context)));
    ops += ops_table(label, rows.back(), ceil);
  }
  emit(o.out, step_table(fmt::format("{}: prefill and decode{} (CUDA events, median)", label,
                                     o.cuda_graphs ? " through CUDA graphs" : ""),
                         rows, ceil));
  emit(o.ops_out, ops);
  return 0;
}

}  // namespace
}  // namespace ds::bench

int main(int argc, char** argv) {
  ds::bench::Options o;
  CLI::App app{"deepserve model benchmark on the CUDA backend (rooflines from the card's measured ceilings)"};
  app.add_option("--model", o.model_dir, "checkpoint directory (config.json + safetensors)");
  app.add_option("--label", o.label, "name of the model in the tables");
  app.add_option("--batches", o.batches, "decode batch sizes")->delimiter(',');
  app.add_option("--context", o.context, "cached tokens per sequence for decode");
  app.add_option("--prompt", o.prompt, "prefill prompt length (also fills the cache for decode)");
  app.add_option("--block-size", o.block_size, "KV cache block size");
  app.add_option("--warmup", o.warmup, "untimed steps before each row");
  app.add_option("--iters", o.iters, "timed steps per row (fewer for slow rows, at least 3)");
  app.add_option("--row-budget-ms", o.row_budget_ms, "time one row may take before repetitions are cut");
  app.add_flag("--mla-op", o.mla_op, "also time the MLA decode op alone on FlashMLA's shapes");
  app.add_flag("--mla-prefill-op", o.mla_prefill_op,
               "also time the MLA op alone on one prompt (1,024 and 4,096 tokens, 16 and 128 heads) in the "
               "weight-absorbed and the expanded form");
  app.add_flag("--moe-op", o.moe_op,
               "also time moe_experts alone (1, 8, 256, 1024 tokens; each tile size) and the decode linears "
               "(cuBLASLt, then the streaming kernel) on random weights, V2-Lite and V3 slice shapes");
  app.add_flag("--cuda-graphs", o.cuda_graphs,
               "decode rows replay CUDA graphs (captured at start for the batch sizes; the per-op split stays "
               "eager); DEEPSERVE_BENCH_GRAPHS=1 turns it on too");
  app.add_option("--out", o.out, "append the summary tables (markdown) to this file");
  app.add_option("--ops-out", o.ops_out, "append the per-op split (markdown) to this file");
  CLI11_PARSE(app, argc, argv);
  if (const char* env = std::getenv("DEEPSERVE_BENCH_GRAPHS"); env != nullptr && std::string(env) == "1")
    o.cuda_graphs = true;
  try {
    return ds::bench::run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_model: %s\n", e.what());
    return 1;
  }
}
