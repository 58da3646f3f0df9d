#!/usr/bin/env bash
# Installs the system packages deepserve builds with (Debian 12, as root; idempotent), then builds Release
# into build/ (binary: build/deepserve).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build pkg-config git ca-certificates
          libboost1.81-dev nlohmann-json3-dev libspdlog-dev libfmt-dev libcli11-dev libpcre2-dev libssl-dev
          libgtest-dev libgmock-dev libbenchmark-dev
          openssl)  # the CLI: the TLS tests make their certificates with it
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: all system packages present"
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release ${DEEPSERVE_CMAKE_ARGS:-} >/dev/null
cmake --build build --target deepserve
echo "setup: built $(pwd)/build/deepserve"
