#!/usr/bin/env bash
# On a GPU machine (Ubuntu 24.04, CUDA 13, one H100/H200; no internet needed): configures and builds with the
# CUDA backend for sm_90a, runs the CPU unit tests, the GPU tests (tests/gpu: every CUDA op against the CPU
# reference, the fixtures end to end on the GPU), `deepserve generate --device cuda` beside the CPU, `serve
# --device cuda` against the CPU server and through the official openai client, and the benchmarks, then prints
# a short summary table last. Full logs go to $OUT when it is set, else to $BUILD_DIR/logs.
#
#   bash scripts/gpu-check.sh                      # everything, benchmarks last (about 9 minutes on an H100)
#   GPU_CHECK_SANITIZER=1 bash scripts/gpu-check.sh  # also every GPU test under compute-sanitizer memcheck
#   GPU_CHECK_BENCH=0 bash scripts/gpu-check.sh      # build and tests only (about 3 minutes)
#   GPU_CHECK_DEADLINE=560 bash scripts/gpu-check.sh  # seconds for the whole script: the benchmarks get what is
#                                                     # left (GPU_CHECK_BENCH_SECONDS sets their share outright)
#   GPU_CHECK_CPU_TESTS=0 bash scripts/gpu-check.sh  # skip the CPU unit tests (CI runs them)
#   GPU_CHECK_SWEEP=0 / GPU_CHECK_REAL_SIZE=0        # skip the config sweep / the real-size check (issue 20)
set -uo pipefail
cd "$(dirname "$0")/.."
script_start=$(date +%s)
BUILD=${BUILD_DIR:-build-gpu}
LOGS=${OUT:-$BUILD/logs}
mkdir -p "$LOGS"
JOBS=$(nproc)
export PATH="$PATH:/usr/local/cuda/bin"
status=0
rows=()
row() { rows+=("$(printf '%-28s %-5s %s' "$1" "$2" "$3")"); [ "$2" = ok ] || [ "$2" = info ] || status=1; }
seconds() { echo $(( $(date +%s) - $1 )); }
# "N% tests passed, F tests failed out of T" -> "P/T passed"
# ctest's "100% tests passed out of T" or "P% tests passed, F tests failed out of T" -> "(T-F)/T passed"
ctest_counts() {
  local line total failed
  line=$(grep -E 'tests passed' "$1" | tail -1)
  total=$(grep -Eo 'out of [0-9]+' <<<"$line" | grep -Eo '[0-9]+')
  failed=$(grep -Eo '[0-9]+ tests failed' <<<"$line" | grep -Eo '[0-9]+' || echo 0)
  [ -n "$total" ] && echo "$((total - failed))/$total passed" || echo "no ctest summary"
}

echo "== machine"
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)
cuda=$(nvcc --version 2>/dev/null | grep -Eo 'release [0-9.]+' || echo "nvcc not found")
echo "$gpu; CUDA $cuda; $(nproc) cores" | tee "$LOGS/machine.txt"
row "machine" info "$gpu, CUDA ${cuda#release }"

echo "== configure (CUDA ON, sm_90a)"
t0=$(date +%s)
# PCRE2: the system's when it has one, else the static copy scripts/gpu-deps.sh prepared on the build machine.
extra=()
if ! pkg-config --exists libpcre2-8 2>/dev/null; then
  if [ -f .gpu-deps/pcre2/lib/libpcre2-8.a ]; then
    extra+=("-DPCRE2_ROOT=$(pwd)/.gpu-deps/pcre2")
  else
    echo "no PCRE2 here: run scripts/gpu-deps.sh on the build machine and send .gpu-deps along" >&2
  fi
fi
if cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDEEPSERVE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
     -DDEEPSERVE_BENCH=ON "${extra[@]}" >"$LOGS/build.log" 2>&1; then
  row "configure" ok "$(grep -o 'CUDA backend ON' "$LOGS/build.log")"
else
  tail -30 "$LOGS/build.log"
  row "configure" FAIL "see build.log"
  printf '\n%s\n' "${rows[@]}"
  exit 1
fi

echo "== build (-j$JOBS)"
t0=$(date +%s)
if cmake --build "$BUILD" -j "$JOBS" >>"$LOGS/build.log" 2>&1; then
  row "build" ok "$(seconds "$t0") s"
else
  grep -E 'error|FAILED' -A3 "$LOGS/build.log" | head -60
  row "build" FAIL "see build.log"
  printf '\n%s\n' "${rows[@]}"
  exit 1
fi

echo "== CPU unit tests"
t0=$(date +%s)
if [ "${GPU_CHECK_CPU_TESTS:-1}" = 0 ]; then
  row "CPU unit tests" info "skipped (GPU_CHECK_CPU_TESTS=0)"
elif ctest --test-dir "$BUILD" -LE gpu -j "$JOBS" --output-on-failure >"$LOGS/test-cpu.log" 2>&1; then
  row "CPU unit tests" ok "$(ctest_counts "$LOGS/test-cpu.log"), $(seconds "$t0") s"
else
  grep -E '\*\*\*Failed|Failed|Exception' "$LOGS/test-cpu.log" | head -20
  row "CPU unit tests" FAIL "$(ctest_counts "$LOGS/test-cpu.log") (test-cpu.log)"
fi

echo "== GPU tests (tests/gpu)"
t0=$(date +%s)
# -V keeps each test's output: the SUMMARY lines of the fixture tests go into the table below.
if ctest --test-dir "$BUILD" -L gpu -j 4 -V --timeout 300 >"$LOGS/test-gpu.log" 2>&1; then
  row "GPU tests" ok "$(ctest_counts "$LOGS/test-gpu.log"), $(seconds "$t0") s"
else
  grep -E 'Failure|Expected|Which is|actual|error:|exception' "$LOGS/test-gpu.log" | head -40
  row "GPU tests" FAIL "$(ctest_counts "$LOGS/test-gpu.log") (test-gpu.log)"
  mapfile -t failed < <(grep -E 'The following tests FAILED' -A40 "$LOGS/test-gpu.log" | sed -n '2,40p')
  for line in "${failed[@]}"; do rows+=("$(printf '%-28s %-5s %s' "" "" "$line")"); done
fi

echo "== config sweep (issue 20: random DeepSeek configs against HF, scripts/gpu-sweep.sh)"
t0=$(date +%s)
if [ "${GPU_CHECK_SWEEP:-1}" = 0 ]; then
  row "config sweep" info "skipped (GPU_CHECK_SWEEP=0)"
elif OUT="$LOGS" bash scripts/gpu-sweep.sh "$BUILD" >"$LOGS/sweep-summary.txt" 2>&1; then
  row "config sweep" ok "$(grep -Eo '[0-9]+ of [0-9]+ checkpoints within tolerance' "$LOGS/sweep.log" | tail -1), $(seconds "$t0") s"
else
  grep -E 'FAIL|refused' "$LOGS/sweep.log" | cut -c1-200 | head -10
  row "config sweep" FAIL "$(grep -Eo '[0-9]+ of [0-9]+ checkpoints within tolerance' "$LOGS/sweep.log" | tail -1) (sweep.log)"
fi

echo "== real size (V3's true dimensions: CUDA against the CPU)"
t0=$(date +%s)
if [ "${GPU_CHECK_REAL_SIZE:-1}" = 0 ]; then
  row "real size" info "skipped (GPU_CHECK_REAL_SIZE=0)"
elif timeout 300 python3 tools/bench/make_random_checkpoint.py --preset v3-dims --out /dev/shm/ds_v3dims \
       >"$LOGS/v3dims.log" 2>&1 &&
     DS_REAL_SIZE_CHECKPOINT=/dev/shm/ds_v3dims timeout 600 "$BUILD/tests/gpu/test_gpu" --gtest_filter='RealSize.*' \
       >"$LOGS/real-size.log" 2>&1; then
  row "real size" ok "$(grep -Eo 'pinned routing worst [0-9.]+' "$LOGS/real-size.log"), $(seconds "$t0") s"
else
  grep -E 'Failure|Expected|Which|REAL' "$LOGS/real-size.log" 2>/dev/null | head -10
  row "real size" FAIL "see real-size.log / v3dims.log"
fi
rm -rf /dev/shm/ds_v3dims

echo "== deepserve generate --device cuda vs cpu"
fixture=tests/fixtures/deepseek_v3_tiny_bf16
args=(generate --model "$fixture" --prompt-ids 100,200,300 --max-tokens 32 --temperature 0 --ignore-eos)
t0=$(date +%s%N)
gpu_out=$("$BUILD/deepserve" "${args[@]}" --device cuda 2>"$BUILD/generate-cuda.err")
gpu_rc=$?
t1=$(date +%s%N)
cpu_out=$("$BUILD/deepserve" "${args[@]}" --device cpu 2>"$BUILD/generate-cpu.err")
t2=$(date +%s%N)
{ echo "cuda: $gpu_out"; echo "cpu:  $cpu_out"; } | tee "$LOGS/generate.txt"
cat "$BUILD/generate-cuda.err" "$BUILD/generate-cpu.err" >>"$LOGS/generate.txt"
timing="cuda $(( (t1 - t0) / 1000000 )) ms, cpu $(( (t2 - t1) / 1000000 )) ms wall incl. load"
if [ $gpu_rc -ne 0 ]; then
  cat "$BUILD/generate-cuda.err"
  row "generate --device cuda" FAIL "exit $gpu_rc (generate.txt)"
elif [ "$gpu_out" = "$cpu_out" ]; then
  row "generate --device cuda" ok "32 greedy tokens = CPU's; $timing"
else
  row "generate --device cuda" info "differs from CPU (see generate.txt; near-ties?); $timing"
fi

echo "== deepserve generate --device cuda: CUDA graphs (the default) vs --enforce-eager"
eager_out=$("$BUILD/deepserve" "${args[@]}" --device cuda --enforce-eager 2>"$BUILD/generate-eager.err")
eager_rc=$?
{ echo "eager: $eager_out"; cat "$BUILD/generate-eager.err"; } >>"$LOGS/generate.txt"
captured=$(grep -Eo '(captured CUDA graphs|no CUDA graphs)[^;]*' "$BUILD/generate-cuda.err" | head -1)
if [ $eager_rc -ne 0 ]; then
  row "generate --enforce-eager" FAIL "exit $eager_rc (generate.txt)"
elif [ "$eager_out" = "$gpu_out" ]; then
  row "generate --enforce-eager" ok "same 32 tokens as with graphs (${captured:-no capture line})"
else
  row "generate --enforce-eager" FAIL "tokens differ from the graphs' (generate.txt; ${captured:-no capture line})"
fi

echo "== deepserve serve --device cuda vs cpu (scripted fixture, tests/e2e/serve_compare.py)"
# The openai-client tests need Node, which this machine lacks: the same answers are checked here with Python's
# standard library, against a CPU server and a GPU server on the scripted fixture (reasoning and a tool call).
scripted=tests/fixtures/deepseek_v3_tiny_scripted
pids=()
for dev_port in cpu:18401 cuda:18402; do
  "$BUILD/deepserve" serve --model "$scripted" --device "${dev_port%%:*}" --port "${dev_port##*:}" \
    --reasoning-parser deepseek_r1 --access-log "" --shutdown-timeout 2 >"$LOGS/serve-${dev_port%%:*}.log" 2>&1 &
  pids+=($!)
done
up() { python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$1/health', timeout=1)" 2>/dev/null; }
for _ in $(seq 1 120); do up 18401 && up 18402 && break; sleep 0.5; done
if python3 tests/e2e/serve_compare.py --cpu http://127.0.0.1:18401 --cuda http://127.0.0.1:18402 \
     >"$LOGS/serve.txt" 2>&1; then
  row "serve --device cuda" ok "$(grep -c '^ok' "$LOGS/serve.txt") checks = CPU server = HF script (serve.txt)"
else
  grep -E '^FAIL' "$LOGS/serve.txt" | head -10
  row "serve --device cuda" FAIL "$(grep -c '^FAIL' "$LOGS/serve.txt") failed (serve.txt, serve-*.log)"
fi
kill -TERM "${pids[@]}" 2>/dev/null
for pid in "${pids[@]}"; do
  wait "$pid"
  rc=$?
  [ $rc -eq 0 ] || row "serve exit on SIGTERM" FAIL "exit $rc (serve-*.log)"
done

echo "== the openai client (npm, tests/e2e/openai_client) against serve --device cuda"
# This machine has no Node: scripts/gpu-deps.sh packs the build machine's node and the client's node_modules into
# .gpu-node, unpacked here with Python (the image may lack xz).
node_cmd=$(command -v node || true)
if [ -f .gpu-node/node.xz ]; then
  python3 - "$BUILD/node" "$([ -z "$node_cmd" ] && echo unpack-node)" <<'PY'
import lzma, os, shutil, sys, tarfile
dest, want_node = sys.argv[1], sys.argv[2] == "unpack-node"
os.makedirs(dest, exist_ok=True)
if want_node:
    with lzma.open(".gpu-node/node.xz") as src, open(os.path.join(dest, "node"), "wb") as out:
        shutil.copyfileobj(src, out)
    os.chmod(os.path.join(dest, "node"), 0o755)
if not os.path.isdir("tests/e2e/openai_client/node_modules/openai"):
    with tarfile.open(".gpu-node/openai_client_node_modules.tar.xz") as t:
        t.extractall("tests/e2e/openai_client", filter="data")
PY
  [ -n "$node_cmd" ] || node_cmd=$BUILD/node/node
fi
if [ -n "$node_cmd" ] && [ -d tests/e2e/openai_client/node_modules/openai ]; then
  t0=$(date +%s)
  if DEEPSERVE_E2E_DEVICE=cuda timeout 120 "$node_cmd" tests/e2e/openai_client/run.mjs "$BUILD/deepserve" \
       >"$LOGS/e2e-openai.txt" 2>&1; then
    row "openai client e2e (cuda)" ok "$(tail -1 "$LOGS/e2e-openai.txt"), $(seconds "$t0") s"
  else
    grep -E '^FAIL' -A3 "$LOGS/e2e-openai.txt" | head -20
    row "openai client e2e (cuda)" FAIL "$(tail -1 "$LOGS/e2e-openai.txt") (e2e-openai.txt)"
  fi
else
  row "openai client e2e (cuda)" info "skipped: no node here and none in .gpu-node (scripts/gpu-deps.sh)"
fi

if [ "${GPU_CHECK_SANITIZER:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  echo "== compute-sanitizer memcheck (every GPU test)"
  t0=$(date +%s)
  if timeout 400 compute-sanitizer --tool memcheck --error-exitcode 9 "$BUILD/tests/gpu/test_gpu" \
       >"$LOGS/memcheck.log" 2>&1; then
    row "memcheck" ok "$(grep -Eo 'ERROR SUMMARY: [0-9]+ errors' "$LOGS/memcheck.log" | tail -1), $(seconds "$t0") s"
  else
    grep -E '=========' "$LOGS/memcheck.log" | head -30
    row "memcheck" FAIL "$(grep -Eo 'ERROR SUMMARY: [0-9]+ errors' "$LOGS/memcheck.log" | tail -1) (memcheck.log)"
  fi
fi

# The benchmarks of issue 6 (tools/bench/run_gpu_bench.sh: MLA op, V2-Lite shape, serve, HF peer, V3 slice) on the
# same build, within GPU_CHECK_BENCH_SECONDS (phases that do not fit are skipped and listed); their headline rows
# join the summary. GPU_CHECK_BENCH=0 skips them.
if [ "${GPU_CHECK_BENCH:-1}" != 0 ]; then
  echo "== benchmarks (tools/bench/run_gpu_bench.sh)"
  t0=$(date +%s)
  bench_seconds=${GPU_CHECK_BENCH_SECONDS:-$(( ${GPU_CHECK_DEADLINE:-560} - (t0 - script_start) ))}
  echo "benchmarks get $bench_seconds s"
  if OUT="$LOGS/bench" BUILD_DIR="$BUILD" BENCH_DEADLINE="$bench_seconds" \
       bash tools/bench/run_gpu_bench.sh >"$LOGS/bench.log" 2>&1 && [ -s "$LOGS/bench/tables.md" ]; then
    row "benchmarks" info "$(seconds "$t0") s, tables in bench/tables.md, per-op split in bench/ops.md"
    while IFS='|' read -r name result; do
      row "$name" info "$result"
    done < <(bash tools/bench/summary_rows.sh "$LOGS/bench/tables.md")
  else
    tail -5 "$LOGS/bench.log"
    row "benchmarks" FAIL "exit or no tables after $(seconds "$t0") s (bench.log)"
  fi
fi

echo
commit=$( [ -e .git ] && git rev-parse --short HEAD 2>/dev/null || echo "tree without .git")
echo "== summary ($commit, $(date -u +%Y-%m-%dT%H:%MZ))"
printf '%-28s %-5s %s\n' "step" "" "result"
printf '%s\n' "${rows[@]}"
grep -h 'SUMMARY ' "$LOGS/test-gpu.log" 2>/dev/null | sed 's/^[0-9]*: //; s/^SUMMARY /  /' | sort -u
exit $status
