#!/usr/bin/env python3
"""The HuggingFace transformers peer for bench_model: the same checkpoint, bf16, sdpa attention, on the same card.

Run on the GPU machine (torch, transformers), after tools/bench/make_random_checkpoint.py --preset v2-lite:

    python3 tools/bench/hf_peer.py --model /dev/shm/dsbench/v2lite [--batches 1,8,64] [--out tables.md]

Measures, with CUDA events (median after warm-up):
  prefill  one forward of a 1x1024 prompt (logits of the last token only);
  decode   one forward of one new token per sequence with 1,024 tokens cached per sequence. The cache comes from
           that prefill, repeated over the batch (Cache.batch_repeat_interleave; if that is missing, a prefill of the
           whole batch). Each timed step appends to the cache, so the context runs from 1,024 to 1,024 + steps.
Prints a markdown table (and appends it to --out). Anything that fails is reported in the table, not hidden.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch


def timed(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iters):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        samples.append(start.elapsed_time(stop))
    return statistics.median(samples), min(samples), max(samples), len(samples)


def load(model_dir, attn):
    from transformers import AutoModelForCausalLM
    kwargs = dict(attn_implementation=attn, device_map="cuda")
    try:
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, **kwargs)
    except TypeError:  # transformers 4.x spells it torch_dtype
        return AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.bfloat16, **kwargs)


def load_model(model_dir, notes):
    """sdpa as asked; if this transformers refuses it for the model, eager (and say so). If the config's rope_scaling
    is what it refuses, a copy of the config without it (timing does not depend on rotary frequencies)."""
    errors = []
    for attn in ("sdpa", "eager"):
        try:
            model = load(model_dir, attn)
            if attn != "sdpa":
                notes.append(f"attention '{attn}' (sdpa refused: {errors[-1][:200]})")
            return model, attn
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{type(e).__name__}: {e}")
    tmp = tempfile.mkdtemp(prefix="hf_peer_")
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    cfg["rope_scaling"] = None
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f)
    for name in os.listdir(model_dir):
        if name.endswith(".safetensors") or name.endswith(".index.json"):
            os.symlink(os.path.join(os.path.abspath(model_dir), name), os.path.join(tmp, name))
    model = load(tmp, "sdpa")
    notes.append(f"loaded with rope_scaling removed (refused: {errors[0][:200]})")
    return model, "sdpa"


def forward(model, ids, cache=None, last_only=True):
    kwargs = dict(input_ids=ids, use_cache=True)
    if cache is not None:
        kwargs["past_key_values"] = cache
    if last_only:
        try:
            return model(**kwargs, logits_to_keep=1)
        except TypeError:
            pass
    return model(**kwargs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", type=int, default=1024)
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b]

    import transformers
    notes, rows = [], []
    t0 = time.time()
    model, attn = load_model(args.model, notes)
    model.eval()
    torch.cuda.synchronize()
    load_s = time.time() - t0
    vocab = model.config.vocab_size
    gen = torch.Generator(device="cuda").manual_seed(0)
    prompt = torch.randint(0, vocab, (1, args.prompt), device="cuda", generator=gen)

    with torch.inference_mode():
        out = forward(model, prompt)
        finite = bool(torch.isfinite(out.logits).all())
        del out
        med, lo, hi, n = timed(lambda: forward(model, prompt), 1, max(3, args.iters // 2))
        rows.append((f"prefill 1×{args.prompt}", 1, med, lo, hi, n, args.prompt / med * 1e3))

        for b in batches:
            try:
                cache = forward(model, prompt).past_key_values
                try:
                    cache.batch_repeat_interleave(b)
                    how = "prefill repeated"
                except Exception as e:  # noqa: BLE001
                    del cache
                    notes.append(f"batch {b}: batch_repeat_interleave failed ({type(e).__name__}: {str(e)[:120]}); "
                                 "prefilled the whole batch")
                    cache = forward(model, prompt.expand(b, -1).contiguous()).past_key_values
                    how = "batch prefilled"
                step_ids = torch.randint(0, vocab, (b, 1), device="cuda", generator=gen)
                med, lo, hi, n = timed(lambda: forward(model, step_ids, cache, last_only=False), args.warmup, args.iters)
                rows.append((f"decode @{args.prompt} ({how})", b, med, lo, hi, n, b / med * 1e3))
                del cache
            except torch.cuda.OutOfMemoryError as e:
                notes.append(f"batch {b}: out of memory ({str(e)[:160]})")
            torch.cuda.empty_cache()

    name = torch.cuda.get_device_name()
    text = [f"\n### HF transformers peer: {args.model} on {name}\n",
            f"transformers {transformers.__version__}, torch {torch.__version__}, bf16, attention '{attn}', "
            f"loaded in {load_s:.1f} s; prefill logits finite: {finite}; CUDA events, median.",
            *[f"Note: {n}" for n in notes], "",
            "| step | batch | ms (median) | min–max, n | tok/s |", "|---|---|---|---|---|"]
    for what, b, med, lo, hi, n, tps in rows:
        text.append(f"| {what} | {b} | {med:.1f} | {lo:.1f}–{hi:.1f}, {n} | {tps:.0f} |")
    report = "\n".join(text) + "\n"
    print(report, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(report)


if __name__ == "__main__":
    sys.exit(main())
