#!/usr/bin/env bash
# Builds everything (Release, build/) and runs the CPU test suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f build/build.ninja ] || cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${DEEPSERVE_CMAKE_ARGS:-} >/dev/null
cmake --build build
ctest --test-dir build --output-on-failure -j "$(nproc)" -LE gpu "$@"
