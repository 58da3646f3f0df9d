#!/usr/bin/env bash
# Issue 6's measurements in one go on a GPU machine (CUDA 13, torch + transformers + safetensors in python3):
# builds bench_model, measures ops alone (MLA decode, MLA prefill in both forms, the routed experts and the decode
# linears on random weights), generates the random DeepSeek-V2-Lite-shaped checkpoint,
# runs it through bench_model and through HF transformers (tools/bench/hf_peer.py), then the block-FP8 V3 slice
# through bench_model. Tables go to $OUT/tables.md (printed last), the per-op split to $OUT/ops.md, the whole log
# to $OUT/run.log. Checkpoints go to /dev/shm when it has room, else /tmp, and are deleted after use.
#
#   BENCH_DEADLINE=560 bash tools/bench/run_gpu_bench.sh       # seconds; later phases are skipped, not cut
#   BENCH_PHASES="mla v2lite serve hf v3slice"                  # the default, in this order
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/bench-out}
mkdir -p "$OUT"
TABLES=$OUT/tables.md OPS=$OUT/ops.md LOG=$OUT/run.log
: >"$TABLES"
: >"$OPS"
exec > >(tee -a "$LOG") 2>&1
export PATH="$PATH:/usr/local/cuda/bin" PYTHONUNBUFFERED=1
START=$(date +%s)
DEADLINE=${BENCH_DEADLINE:-560}
PHASES=${BENCH_PHASES:-"mla v2lite serve hf v3slice"}
BUILD=${BUILD_DIR:-build-bench}
BIN=$BUILD/bench/bench_model
skipped=()
elapsed() { echo $(( $(date +%s) - START )); }
# phase NAME SECONDS_IT_NEEDS: true when the phase is wanted and fits before the deadline.
phase() {
  [[ " $PHASES " == *" $1 "* ]] || return 1
  if (( $(elapsed) + $2 > DEADLINE )); then
    skipped+=("$1 (needs ~$2 s, $(( DEADLINE - $(elapsed) )) s left)")
    return 1
  fi
  echo "== $1 (t=$(elapsed) s)"
}
# Runs a command with whatever time is left before the deadline.
bounded() { timeout --signal=INT --kill-after=10 $(( DEADLINE - $(elapsed) )) "$@"; }

echo "== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader
nvcc --version | grep release
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' || true
df -h /dev/shm /tmp | tail -n +2
free -g | head -2
commit=$(git rev-parse --short HEAD 2>/dev/null || cat .bench-commit 2>/dev/null || echo unknown)
echo "commit $commit, $(date -u +%Y-%m-%dT%H:%MZ)" | tee -a "$TABLES"

echo "== build (t=$(elapsed) s)"
extra=()
if ! pkg-config --exists libpcre2-8 2>/dev/null && [ -f .gpu-deps/pcre2/lib/libpcre2-8.a ]; then
  extra+=("-DPCRE2_ROOT=$(pwd)/.gpu-deps/pcre2")
fi
if ! cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDEEPSERVE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
       -DDEEPSERVE_TESTS=OFF -DDEEPSERVE_BENCH=ON "${extra[@]}" >"$OUT/build.log" 2>&1 ||
   ! cmake --build "$BUILD" -j "$(nproc)" --target bench_model >>"$OUT/build.log" 2>&1; then
  grep -E 'error|Error|FAILED' -A3 "$OUT/build.log" | head -40
  echo "build failed (build.log)"
  exit 1
fi
echo "built in $(elapsed) s"

# The V3 slice needs about 52 GB: /dev/shm (RAM) when it has room, else /tmp, else a tmpfs of our own.
avail_gb() { df --output=avail -B1G "$1" 2>/dev/null | tail -1 | tr -d ' '; }
if [ "$(avail_gb /dev/shm)" -ge 56 ] 2>/dev/null; then
  DATA=/dev/shm/dsbench
elif [ "$(avail_gb /tmp)" -ge 56 ] 2>/dev/null; then
  DATA=/tmp/dsbench
else
  DATA=/tmp/dsbench
  mkdir -p "$DATA" && mount -t tmpfs -o size=60G tmpfs "$DATA" || echo "no room for the V3 slice: $(avail_gb /tmp) GB in /tmp"
fi
mkdir -p "$DATA"
echo "checkpoints in $DATA ($(avail_gb "$DATA") GB free)"

if phase mla 45; then
  bounded "$BIN" --mla-op --mla-prefill-op --moe-op --out "$TABLES" || echo "op benches: exit $?"
fi

if phase v2lite 100; then
  if bounded python3 tools/bench/make_random_checkpoint.py --preset v2-lite --out "$DATA/v2lite"; then
    bounded "$BIN" --model "$DATA/v2lite" --label "DeepSeek-V2-Lite shape (random bf16)" --out "$TABLES" \
      --ops-out "$OPS" || echo "bench_model v2lite: exit $?"
  else
    echo "v2lite checkpoint: failed"
  fi
fi

# The 16B-shaped checkpoint served for real: `deepserve serve --device cuda`, one greedy completion of 64 tokens.
if phase serve 50 && [ -f "$DATA/v2lite/config.json" ]; then
  (cd "$BUILD" && cmake --build . --target deepserve >>"$OUT/build.log" 2>&1) || echo "build deepserve failed"
  "$BUILD/deepserve" serve --model "$DATA/v2lite" --device cuda --port 18500 --max-model-len 4096 \
    --access-log "" --shutdown-timeout 5 >"$OUT/serve-v2lite.log" 2>&1 &
  spid=$!
  t0=$(date +%s)
  until python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:18500/health', timeout=1)" 2>/dev/null; do
    sleep 1
    if ! kill -0 $spid 2>/dev/null || (( $(date +%s) - t0 > 80 )); then echo "serve v2lite: not up"; break; fi
  done
  echo "serve v2lite: up after $(( $(date +%s) - t0 )) s"
  python3 - <<'PY' | tee -a "$TABLES"
import json, time, urllib.request
body = {"prompt": list(range(1000, 1512)), "max_tokens": 64, "temperature": 0, "ignore_eos": True}
req = urllib.request.Request("http://127.0.0.1:18500/v1/completions", data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
t = time.time()
r = json.load(urllib.request.urlopen(req, timeout=120))
dt = time.time() - t
u = r["usage"]
print(f"\n`deepserve serve --device cuda` on the V2-Lite-shaped checkpoint: one request, {u['prompt_tokens']} prompt "
      f"tokens + {u['completion_tokens']} generated (greedy) in {dt:.2f} s end to end over HTTP "
      f"({u['completion_tokens'] / dt:.1f} tok/s incl. prefill); finish_reason {r['choices'][0]['finish_reason']}.")
PY
  grep -E "KV cache|weights" "$OUT/serve-v2lite.log" | head -3 | tee -a "$TABLES"
  kill -TERM $spid; wait $spid; echo "serve v2lite: exit $?"
fi

if phase hf 60 && [ -f "$DATA/v2lite/config.json" ]; then
  bounded python3 tools/bench/hf_peer.py --model "$DATA/v2lite" --out "$TABLES" || echo "hf peer: exit $?"
fi
rm -rf "$DATA/v2lite"

if phase v3slice 100; then
  if bounded python3 tools/bench/make_random_checkpoint.py --preset v3-slice --out "$DATA/v3slice"; then
    bounded "$BIN" --model "$DATA/v3slice" --label "DeepSeek-V3 slice (1 dense + 4 MoE layers, random block-FP8)" \
      --out "$TABLES" --ops-out "$OPS" || echo "bench_model v3slice: exit $?"
  else
    echo "v3slice checkpoint: failed"
  fi
fi
rm -rf "$DATA"/*

for s in "${skipped[@]}"; do echo "skipped: $s" | tee -a "$TABLES"; done
echo "== done in $(elapsed) s"
echo
cat "$TABLES"
