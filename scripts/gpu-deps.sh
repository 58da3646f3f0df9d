#!/usr/bin/env bash
# Run on the build machine (Debian 12, after scripts/setup.sh): copies what the GPU machine lacks into
# .gpu-deps/ (git-ignored), to be sent along with the tree. Today that is PCRE2 (static library + headers),
# which the tokenizer needs and the GPU image does not have. gpu-check.sh picks it up by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.gpu-deps/pcre2
rm -rf "$dest"
mkdir -p "$dest/lib" "$dest/include"
lib=$(dpkg -L libpcre2-dev | grep -E '/libpcre2-8\.a$')
cp "$lib" "$dest/lib/"
cp /usr/include/pcre2.h "$dest/include/"
echo "gpu-deps: $(du -sh .gpu-deps | cut -f1) in .gpu-deps (PCRE2 $(dpkg-query -W -f='${Version}' libpcre2-dev))"
