#!/usr/bin/env bash
# The MLA attention work of issue 6 in one device call: builds test_gpu and bench_model (sm_90a), runs the MLA
# GPU tests (then the other GPU tests), times the MLA op alone on FlashMLA's shapes, times its kernels alone
# under ncu (gpu__time_duration, clocks as found), and, when the MLA tests pass, the V2-Lite model rows through
# tools/bench/run_gpu_bench.sh (phases in MLA_BENCH_PHASES, default "v2lite hf"). Logs go to $OUT as at most
# 8 files: summary.txt, tables.md, ops.md, ncu.txt, logs.tar.gz.
#
#   OUT=/tmp/out bash tools/bench/run_mla_check.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/mla-out}
mkdir -p "$OUT"
LOGS=$(mktemp -d)
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
export PATH="$PATH:/usr/local/cuda/bin"
BUILD=${BUILD_DIR:-build-bench}
START=$(date +%s)
say() { echo "$*" | tee -a "$SUMMARY"; }
finish() {
  tar -czf "$OUT/logs.tar.gz" -C "$LOGS" . 2>/dev/null
  say "== done in $(( $(date +%s) - START )) s"
  cat "$SUMMARY"
  exit "${1:-0}"
}

say "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader); commit $(cat .bench-commit 2>/dev/null || git rev-parse --short HEAD 2>/dev/null)"
extra=()
if ! pkg-config --exists libpcre2-8 2>/dev/null && [ -f .gpu-deps/pcre2/lib/libpcre2-8.a ]; then
  extra+=("-DPCRE2_ROOT=$(pwd)/.gpu-deps/pcre2")
fi
if ! cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDEEPSERVE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
       -DDEEPSERVE_TESTS=ON -DDEEPSERVE_BENCH=ON "${extra[@]}" >"$LOGS/build.log" 2>&1 ||
   ! cmake --build "$BUILD" -j "$(nproc)" --target test_gpu bench_model >>"$LOGS/build.log" 2>&1; then
  grep -E 'error|FAILED' -A3 "$LOGS/build.log" | head -40 | tee -a "$SUMMARY"
  say "build failed"
  finish 1
fi
say "built in $(( $(date +%s) - START )) s"

TEST=$BUILD/tests/gpu/test_gpu
timeout 300 "$TEST" --gtest_filter='MlaTest.*' >"$LOGS/test-mla.log" 2>&1
mla_rc=$?
grep -E '^\[  (PASSED|FAILED) |Failure|Expected|Which is|actual|SUMMARY|error' "$LOGS/test-mla.log" | head -40 |
  tee -a "$SUMMARY"
say "MLA tests: exit $mla_rc"

"$BUILD/bench/bench_model" --mla-op --out "$OUT/tables.md" >"$LOGS/bench-mla.log" 2>&1 || say "mla op bench: exit $?"
grep -A8 '^| batch' "$OUT/tables.md" | tee -a "$SUMMARY"

# Kernels alone (the op also runs the two absorption GEMMs and uploads its metadata).
if command -v ncu >/dev/null; then
  timeout 120 ncu --clock-control none --metrics gpu__time_duration.sum -k 'regex:mla_|gemm|Kernel|sm90' \
    "$BUILD/bench/bench_model" --mla-op --warmup 1 --iters 3 >"$OUT/ncu.txt" 2>&1 || say "ncu: exit $?"
fi

timeout 200 "$TEST" --gtest_filter='-MlaTest.*' >"$LOGS/test-gpu-rest.log" 2>&1
rest_rc=$?
grep -E '^\[  (PASSED|FAILED) |FAILED|SUMMARY' "$LOGS/test-gpu-rest.log" | head -30 | tee -a "$SUMMARY"
say "other GPU tests: exit $rest_rc"

if [ $mla_rc -eq 0 ] && [ -n "${MLA_BENCH_PHASES-v2lite hf}" ]; then
  left=$(( ${MLA_DEADLINE:-540} - ($(date +%s) - START) ))
  OUT=$LOGS/model BUILD_DIR=$BUILD BENCH_PHASES="${MLA_BENCH_PHASES-v2lite hf}" BENCH_DEADLINE=$left \
    bash tools/bench/run_gpu_bench.sh >"$LOGS/model-bench.log" 2>&1
  cp "$LOGS/model/tables.md" "$OUT/model-tables.md" 2>/dev/null
  cp "$LOGS/model/ops.md" "$OUT/ops.md" 2>/dev/null
  grep -E '^\| (prefill|decode)|skipped' "$OUT/model-tables.md" | tee -a "$SUMMARY"
fi
finish $mla_rc
