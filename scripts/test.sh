#!/usr/bin/env bash
# Builds everything (Release, build/) and runs the CPU test suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${DEEPSERVE_CMAKE_ARGS:-} >/dev/null
cmake --build build
# The JavaScript parts: the Tokenizers.js cross-check of the tokenizer and the official `openai` client against
# `deepserve serve`. Their ctest entries skip themselves without node_modules.
if command -v npm >/dev/null; then
  for dir in tests/e2e/tokenizer_js tests/e2e/openai_client; do
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
  done
else
  echo "test: npm not found; the Tokenizers.js and openai-client tests will be skipped"
fi
# Everything but the GPU tests, the soak included (label soak: 1,000 concurrent streams against `deepserve
# serve`, about a minute, run alone); `-LE 'gpu|soak'` leaves it out.
ctest --test-dir build --output-on-failure -j "$(nproc)" -LE gpu "$@"
