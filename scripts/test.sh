#!/usr/bin/env bash
# Builds everything (Release, build/) and runs the CPU test suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${DEEPSERVE_CMAKE_ARGS:-} >/dev/null
cmake --build build
# Independent JavaScript check of the tokenizer (Tokenizers.js); its test skips itself without node_modules.
if command -v npm >/dev/null; then
  npm ci --prefix tests/e2e/tokenizer_js --no-audit --no-fund --loglevel=error >/dev/null
else
  echo "test: npm not found; the Tokenizers.js cross-check will be skipped"
fi
ctest --test-dir build --output-on-failure -j "$(nproc)" -LE gpu "$@"
