#!/usr/bin/env bash
# On the GPU machine, after a CUDA build: the config sweep of issue 20. Writes DeepSeek-V2/V3 checkpoints across
# the config space with HF transformers' reference outputs (tools/fixtures/make_config_fixtures.py; three of the
# held-out sizes plus GPU_SWEEP_RANDOM random configs, 24 by default) under $GPU_SWEEP_DIR, then runs
# tests/gpu's ConfigSweep on them (production options, free-running routing, CUDA graphs) and prints one SWEEP
# line per checkpoint.
#
#   bash scripts/gpu-sweep.sh [BUILD_DIR]        # default build-gpu; logs to $OUT or BUILD_DIR/logs
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-${BUILD_DIR:-build-gpu}}
LOGS=${OUT:-$BUILD/logs}
DIR=${GPU_SWEEP_DIR:-/dev/shm/ds_config_fixtures}
mkdir -p "$LOGS"
if [ ! -f "$DIR/manifest.json" ]; then
  PYTHONUNBUFFERED=1 timeout 900 python3 tools/fixtures/make_config_fixtures.py --out "$DIR" \
    --random "${GPU_SWEEP_RANDOM:-24}" >"$LOGS/sweep-fixtures.log" 2>&1 || { tail -20 "$LOGS/sweep-fixtures.log"; exit 1; }
fi
DS_CONFIG_FIXTURES="$DIR" timeout 900 "$BUILD/tests/gpu/test_gpu" --gtest_filter='ConfigSweep.*' 2>&1 | tee "$LOGS/sweep.log" |
  grep -E 'SWEEP|SUMMARY|Failure|OK \]|FAILED|PASSED'
exit "${PIPESTATUS[0]}"
