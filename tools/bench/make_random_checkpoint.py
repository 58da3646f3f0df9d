#!/usr/bin/env python3
"""Random-weight DeepSeek checkpoints of real size, in the official HuggingFace layout, for benchmarks.

Run on the GPU machine (torch; no transformers needed):

    python3 tools/bench/make_random_checkpoint.py --preset v2-lite  --out /dev/shm/v2lite
    python3 tools/bench/make_random_checkpoint.py --preset v3-slice --out /dev/shm/v3slice

Writes config.json, model-XXXXX-of-YYYYY.safetensors shards and model.safetensors.index.json:

  v2-lite   DeepSeek-V2-Lite's config.json (27 layers, hidden 2048, 64 routed experts top-6 + 2 shared, MLA
            without q_lora, kv_lora 512, vocab 102400), bf16 weights: about 31 GB.
  v3-slice  DeepSeek-V3's config.json cut to 1 dense + 4 MoE layers (hidden 7168, 128 heads, q_lora 1536,
            256 experts top-8 in 8 groups, noaux_tc sigmoid routing with e_score_correction_bias), block-FP8
            weights (float8_e4m3fn + float32 weight_scale_inv per 128x128 block) as in the official release,
            embeddings, norms and the router in bf16 (the bias in fp32): about 50 GB.
  v3-dims   v3-slice cut to 1 dense + 1 MoE layer and a 16,384-token vocabulary (about 12 GB): every true
            dimension of V3, for the real-size correctness check (tests/gpu/real_size_test.cpp).

Weights are drawn on the GPU (normal, std 0.5 / sqrt(fan_in) for matrices, so each projection keeps its input's
scale and activations stay finite; norms 1; router std 1 / sqrt(hidden)), then written by a small
safetensors writer straight from the host copy (no second serialized copy in memory), a few shards in flight.
Timing matters, not values: the numbers the benchmark prints are the same for any finite weights.
"""
import argparse
import concurrent.futures
import json
import math
import os
import shutil
import sys
import threading
import time

import torch

BLOCK = 128
SHARD_BYTES = 4 << 30  # a shard is flushed once it holds about this much

# DeepSeek-V2-Lite's config.json as published (deepseek-ai/DeepSeek-V2-Lite).
V2_LITE = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001,
    "bos_token_id": 100000,
    "eos_token_id": 100001,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 10944,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v2",
    "moe_intermediate_size": 1408,
    "moe_layer_freq": 1,
    "n_group": 1,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "norm_topk_prob": False,
    "num_attention_heads": 16,
    "num_experts_per_tok": 6,
    "num_hidden_layers": 27,
    "num_key_value_heads": 16,
    "pretraining_tp": 1,
    "q_lora_rank": None,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000,
    "routed_scaling_factor": 1.0,
    "scoring_func": "softmax",
    "seq_aux": True,
    "tie_word_embeddings": False,
    "topk_group": 1,
    "topk_method": "greedy",
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 102400,
}

# DeepSeek-V3's config.json as published (deepseek-ai/DeepSeek-V3), cut to 1 dense + 4 MoE layers, no MTP layer.
V3_SLICE = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "ep_size": 1,
    "first_k_dense_replace": 1,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "initializer_range": 0.02,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "norm_topk_prob": True,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 5,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 0,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [BLOCK, BLOCK]},
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000,
    "routed_scaling_factor": 2.5,
    "scoring_func": "sigmoid",
    "tie_word_embeddings": False,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "v_head_dim": 128,
    "vocab_size": 129280,
}

# DeepSeek-V3's true dimensions at the smallest size that has them all, for the GPU's real-size correctness
# check (tests/gpu/real_size_test.cpp; the CPU reference runs it in seconds): 1 dense + 1 MoE layer, the
# vocabulary cut to 16,384. About 12 GB.
V3_DIMS = dict(V3_SLICE, num_hidden_layers=2, vocab_size=16384)

PRESETS = {"v2-lite": V2_LITE, "v3-slice": V3_SLICE, "v3-dims": V3_DIMS}


def layer_tensors(cfg, i):
    """(name, shape, kind) of decoder layer i; kind: linear (quantized when FP8) | norm | router | bias."""
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    qk = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    p = f"model.layers.{i}"
    a = f"{p}.self_attn"
    out = [(f"{p}.input_layernorm.weight", [h], "norm"), (f"{p}.post_attention_layernorm.weight", [h], "norm")]
    if cfg["q_lora_rank"]:
        out += [(f"{a}.q_a_proj.weight", [cfg["q_lora_rank"], h], "linear"),
                (f"{a}.q_a_layernorm.weight", [cfg["q_lora_rank"]], "norm"),
                (f"{a}.q_b_proj.weight", [heads * qk, cfg["q_lora_rank"]], "linear")]
    else:
        out.append((f"{a}.q_proj.weight", [heads * qk, h], "linear"))
    out += [(f"{a}.kv_a_proj_with_mqa.weight", [cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"], h], "linear"),
            (f"{a}.kv_a_layernorm.weight", [cfg["kv_lora_rank"]], "norm"),
            (f"{a}.kv_b_proj.weight", [heads * (cfg["qk_nope_head_dim"] + cfg["v_head_dim"]), cfg["kv_lora_rank"]],
             "linear"),
            (f"{a}.o_proj.weight", [h, heads * cfg["v_head_dim"]], "linear")]

    def mlp(prefix, inter):
        return [(f"{prefix}.gate_proj.weight", [inter, h], "linear"), (f"{prefix}.up_proj.weight", [inter, h], "linear"),
                (f"{prefix}.down_proj.weight", [h, inter], "linear")]

    m = f"{p}.mlp"
    moe = i >= cfg["first_k_dense_replace"] and i % cfg["moe_layer_freq"] == 0
    if not moe:
        return out + mlp(m, cfg["intermediate_size"])
    e = cfg["n_routed_experts"]
    out.append((f"{m}.gate.weight", [e, h], "router"))
    if cfg["topk_method"] == "noaux_tc":
        out.append((f"{m}.gate.e_score_correction_bias", [e], "bias"))
    for j in range(e):
        out += mlp(f"{m}.experts.{j}", cfg["moe_intermediate_size"])
    return out + mlp(f"{m}.shared_experts", cfg["moe_intermediate_size"] * cfg["n_shared_experts"])


def all_tensors(cfg):
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    out = [("model.embed_tokens.weight", [v, h], "embed")]
    for i in range(cfg["num_hidden_layers"]):
        out += layer_tensors(cfg, i)
    return out + [("model.norm.weight", [h], "norm"), ("lm_head.weight", [v, h], "embed")]


def quantize_block_fp8(t):
    """t [rows, cols] on the GPU -> (fp8 q, fp32 scale_inv [ceil(rows/128), ceil(cols/128)]), t ~= q * scale_inv.
    Rows or columns that do not fill a block (kv_a_proj_with_mqa has 576 rows) are padded with zeros."""
    rows, cols = t.shape
    br, bc = math.ceil(rows / BLOCK), math.ceil(cols / BLOCK)
    padded = torch.zeros(br * BLOCK, bc * BLOCK, dtype=torch.float32, device=t.device)
    padded[:rows, :cols] = t.float()
    blocks = padded.view(br, BLOCK, bc, BLOCK)
    scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / 448.0  # [br, bc]
    q = (blocks / scale[:, None, :, None]).to(torch.float8_e4m3fn).view(br * BLOCK, bc * BLOCK)
    return q[:rows, :cols].contiguous(), scale.contiguous()


def generate(name, shape, kind, fp8, gen):
    """The stored tensors for one weight, as {name: GPU tensor}."""
    dev = "cuda"
    if kind == "norm":
        return {name: torch.ones(shape, dtype=torch.bfloat16, device=dev)}
    if kind == "bias":  # fp32, as in the official checkpoint
        return {name: 0.01 * torch.randn(shape, generator=gen, device=dev, dtype=torch.float32)}
    if kind == "embed":
        std = 1.0 if name.startswith("model.embed") else 1.0 / math.sqrt(shape[1])
        return {name: (std * torch.randn(shape, generator=gen, device=dev, dtype=torch.float32)).to(torch.bfloat16)}
    if kind == "router":  # the router stays bf16 in the official FP8 checkpoint
        return {name: (torch.randn(shape, generator=gen, device=dev, dtype=torch.float32) / math.sqrt(shape[1]))
                .to(torch.bfloat16)}
    w = torch.randn(shape, generator=gen, device=dev, dtype=torch.float32) * (0.5 / math.sqrt(shape[1]))
    if not fp8:
        return {name: w.to(torch.bfloat16)}
    q, s = quantize_block_fp8(w)
    return {name: q, name.replace(".weight", ".weight_scale_inv"): s}


SAFETENSORS_DTYPE = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float8_e4m3fn: "F8_E4M3"}


def write_safetensors(path, tensors):
    """tensors: list of (name, host tensor). The format: u64 header length, JSON header (padded with spaces to a
    multiple of 8), then each tensor's bytes back to back in the header's order."""
    header, offset = {}, 0
    for name, t in tensors:
        n = t.numel() * t.element_size()
        header[name] = {"dtype": SAFETENSORS_DTYPE[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for _, t in tensors:
            f.write(memoryview(t.contiguous().view(-1).view(torch.uint8).numpy()))
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--writers", type=int, default=3, help="shards written at the same time")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("make_random_checkpoint: needs a CUDA GPU (weights are drawn on the device)")
    cfg = PRESETS[args.preset]
    fp8 = "quantization_config" in cfg
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    gen = torch.Generator(device="cuda").manual_seed(args.seed)

    t0 = time.time()
    specs = all_tensors(cfg)
    shards, current, current_bytes = [], [], 0
    weight_map, total = {}, 0
    in_flight = threading.BoundedSemaphore(args.writers)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.writers)
    futures = []

    def flush():
        nonlocal current, current_bytes
        if not current:
            return
        index = len(shards)
        shards.append([n for n, _ in current])
        batch = current
        current, current_bytes = [], 0
        in_flight.acquire()  # at most `writers` shards held on the host at once

        def job():
            try:
                write_safetensors(os.path.join(args.out, f"shard-{index:05d}.tmp"), batch)
            finally:
                in_flight.release()

        futures.append(pool.submit(job))

    for name, shape, kind in specs:
        for stored_name, t in generate(name, shape, kind, fp8, gen).items():
            host = t.cpu()
            n = host.numel() * host.element_size()
            current.append((stored_name, host))
            current_bytes += n
            total += n
        if current_bytes >= SHARD_BYTES:
            flush()
    flush()
    for f in futures:
        f.result()  # re-raises a writer's error
    pool.shutdown()

    # Final names need the shard count: model-00001-of-000NN.safetensors, as HF names them.
    count = len(shards)
    for index, names in enumerate(shards):
        fname = f"model-{index + 1:05d}-of-{count:05d}.safetensors"
        os.replace(os.path.join(args.out, f"shard-{index:05d}.tmp"), os.path.join(args.out, fname))
        for n in names:
            weight_map[n] = fname
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    secs = time.time() - t0
    print(f"make_random_checkpoint: {args.preset} -> {args.out}: {len(weight_map)} tensors, {count} shards, "
          f"{total / 1e9:.2f} GB in {secs:.1f} s ({total / 1e9 / max(secs, 1e-9):.2f} GB/s)", flush=True)


if __name__ == "__main__":
    main()
