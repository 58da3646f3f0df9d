#!/usr/bin/env python3
"""The peer for bench/bench_tokenizer: HF `tokenizers` (Rust) encoding the same corpus on one core.

    DS_BENCH_CORPUS_OUT=/tmp/corpus.txt build/bench/bench_tokenizer --benchmark_filter=BM_Encode$
    python3 tools/bench/hf_tokenizer_speed.py tests/fixtures/tokenizer/tokenizer.json /tmp/corpus.txt

Prints MB/s (median of 10 encodes of the whole corpus as one string, after 2 warm-ups) and the token count,
which must equal bench_tokenizer's `tokens` counter.
"""
import os
import statistics
import sys
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"
from tokenizers import Tokenizer  # noqa: E402


def main():
    tok = Tokenizer.from_file(sys.argv[1])
    text = open(sys.argv[2], encoding="utf-8").read()
    nbytes = len(text.encode("utf-8"))
    for _ in range(2):
        tok.encode(text, add_special_tokens=False)
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        ids = tok.encode(text, add_special_tokens=False).ids
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(f"hf tokenizers: {nbytes / med / 1e6:.2f} MB/s, median {med * 1e3:.1f} ms over {nbytes} bytes, "
          f"{len(ids)} tokens")


if __name__ == "__main__":
    main()
