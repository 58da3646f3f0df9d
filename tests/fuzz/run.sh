#!/usr/bin/env bash
# Builds the libFuzzer targets with clang-14 (ASan + UBSan, build-fuzz/) and runs each for FUZZ_SECONDS.
#
#   tests/fuzz/run.sh                      # every target, 60 s each
#   FUZZ_SECONDS=5 tests/fuzz/run.sh       # smoke test (also replays the seeds and the regressions)
#   FUZZ_SECONDS=180 tests/fuzz/run.sh fuzz_jinja
#
# Each target starts from its seed corpus (tests/fuzz/corpus/<target>/, committed) plus what earlier runs
# found (build-fuzz/corpus/<target>/, not committed), and first replays tests/fuzz/regressions/<target>/.
# A crash leaves its input as build-fuzz/artifacts/<target>/crash-*; reproduce with
#   build-fuzz/tests/fuzz/<target> build-fuzz/artifacts/<target>/crash-...
# One line per target; the exit status is non-zero when any target crashed.
set -euo pipefail
cd "$(dirname "$0")/../.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
ALL_TARGETS=(fuzz_tokenizer_json fuzz_tokenizer_encode fuzz_jinja fuzz_safetensors fuzz_request_sampling
             fuzz_http_framing)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")

# Per target: longest input, seconds before one input counts as a hang, and options of its own.
# max_len: tokenizer.json seeds are a few KB; templates and safetensors headers are shorter.
declare -A MAX_LEN=([fuzz_tokenizer_json]=16384 [fuzz_tokenizer_encode]=4096 [fuzz_jinja]=4096
                    [fuzz_safetensors]=8192 [fuzz_request_sampling]=4096 [fuzz_http_framing]=4096)
declare -A DICT=([fuzz_tokenizer_json]=tokenizer_json.dict [fuzz_tokenizer_encode]=tokenizer_encode.dict
                 [fuzz_jinja]=jinja.dict [fuzz_safetensors]=safetensors.dict
                 [fuzz_request_sampling]=request_sampling.dict [fuzz_http_framing]=http.dict)

if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DDEEPSERVE_FUZZ=ON -DDEEPSERVE_CUDA=OFF \
    -DDEEPSERVE_TESTS=OFF -DDEEPSERVE_BENCH=OFF >/dev/null
fi
cmake --build "$BUILD" --target "${TARGETS[@]}"

# halt_on_error: the first report is the finding. detect_leaks stays on: a leak is a finding too.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=0
for target in "${TARGETS[@]}"; do
  bin="$BUILD/tests/fuzz/$target"
  seeds="tests/fuzz/corpus/$target"
  corpus="$BUILD/corpus/$target"
  artifacts="$BUILD/artifacts/$target"
  log="$BUILD/logs/$target.log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  dict=()
  [ -f "tests/fuzz/dicts/${DICT[$target]}" ] && dict=(-dict="tests/fuzz/dicts/${DICT[$target]}")

  # Replay the saved crashing inputs first: each must now pass.
  regressions="tests/fuzz/regressions/$target"
  if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
    if ! "$bin" -runs=0 -timeout=10 -malloc_limit_mb=1024 "$regressions"/* >"$BUILD/logs/$target.regressions.log" 2>&1; then
      echo "$target: FAIL (a saved regression input crashes again; see $BUILD/logs/$target.regressions.log)"
      failed=1
      continue
    fi
  fi

  # The regression inputs seed the run too: the neighbourhood of an old bug is a good place to look.
  extra=()
  [ -d "$regressions" ] && extra=("$regressions")
  status=0
  "$bin" "$corpus" "$seeds" "${extra[@]}" "${dict[@]}" -max_total_time="$FUZZ_SECONDS" -max_len="${MAX_LEN[$target]}" \
    -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{print $2}' | tail -1 || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | awk '{print $2}' | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}' || true)
  if [ "$status" -eq 0 ]; then
    echo "$target: ok (${FUZZ_SECONDS}s, $runs runs, $rate exec/s, cov ${cov:-?})"
  else
    crash=$(ls -t "$artifacts" 2>/dev/null | head -1 || true)
    if [ -n "$crash" ]; then
      echo "$target: CRASH (exit $status) input $artifacts/$crash; log $log"
    else
      echo "$target: FAIL (exit $status, no crash input saved); log $log"
    fi
    failed=1
  fi
done
exit $failed
