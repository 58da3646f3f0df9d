#!/usr/bin/env bash
# Run on the build machine (Debian 12, after scripts/setup.sh): copies what the GPU machine lacks into git-ignored
# folders, to be sent along with the tree: .gpu-deps/ holds PCRE2 (static library + headers, ~1 MB), which the
# tokenizer needs and the GPU image does not have; .gpu-node/ holds Node.js and the `openai` package of
# tests/e2e/openai_client (xz packed, ~25 MB), so the openai-client e2e test runs against `serve --device cuda`
# there. gpu-check.sh picks both up by itself; without node or `npm ci` here, only PCRE2 is prepared (and
# gpu-check skips that test).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.gpu-deps/pcre2
rm -rf "$dest"
mkdir -p "$dest/lib" "$dest/include"
lib=$(dpkg -L libpcre2-dev | grep -E '/libpcre2-8\.a$')
cp "$lib" "$dest/lib/"
cp /usr/include/pcre2.h "$dest/include/"
# Node: the binary (linked against libc and libstdc++ only) and the e2e client's node_modules, unpacked by
# gpu-check.sh with Python's lzma and tarfile (the GPU image may lack xz).
rm -rf .gpu-node
node_bin=$(command -v node || true)
modules=tests/e2e/openai_client/node_modules
if [ -n "$node_bin" ] && [ -d "$modules/openai" ]; then
  mkdir -p .gpu-node
  xz -T0 -6 -c "$(readlink -f "$node_bin")" >.gpu-node/node.xz
  tar -C tests/e2e/openai_client -cJf .gpu-node/openai_client_node_modules.tar.xz node_modules
  echo "gpu-deps: node $("$node_bin" --version) and the openai client's node_modules in .gpu-node"
else
  echo "gpu-deps: no node or no $modules (run scripts/setup.sh): the openai-client test will be skipped on the GPU"
fi
echo "gpu-deps: $(du -sh .gpu-deps | cut -f1) in .gpu-deps, $(du -sh .gpu-node 2>/dev/null | cut -f1) in .gpu-node (PCRE2 $(dpkg-query -W -f='${Version}' libpcre2-dev))"
