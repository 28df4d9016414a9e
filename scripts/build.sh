#!/usr/bin/env bash
# Configures and builds cairn into build/ (or $CAIRN_BUILD_DIR). Extra arguments go to CMake.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
export PATH="/usr/local/cuda/bin:$PATH"
build_dir="${CAIRN_BUILD_DIR:-build}"
# ccache, where installed, makes rebuilds in other checkouts of the tree (CI's clean clone, a
# second worktree) cheap: nvcc with CUB is most of a build on two cores.
launcher=()
if command -v ccache >/dev/null; then
  # Paths relative to the tree in the cache keys, so that build dirs and clones share objects.
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$(pwd)}" CCACHE_NOHASHDIR="${CCACHE_NOHASHDIR:-1}"
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" "$@" >/dev/null
cmake --build "$build_dir" --parallel "$(nproc)"
