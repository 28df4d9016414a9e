#!/usr/bin/env bash
# Holds the CPU path's results to a reference commit's, bit for bit (issue 13: the CPU path is the
# GPU's oracle, so a speed-up must not move a bit, or the difference must be explained).
#
#   bash bench/check_bit_identity.sh <reference-commit> [build-dir-of-this-tree]
#
# Builds the reference commit in a detached worktree (build-bitcheck/ref: library and
# cpu_bit_digest only; bench/cpu_bit_digest.cpp and bench/CMakeLists.txt are copied in when the
# reference predates them), builds cpu_bit_digest here (default build dir: build-bench), runs
# both on this machine and diffs their digests; it also runs this tree's digest with
# CAIRN_CPU_BASELINE=1 (the kernels' baseline x86-64 versions instead of their AVX2 versions) and
# diffs that too. Since small_gemm (kernels/cpu/small_gemm.h) the tiny-network (W2) lines differ
# from a reference older than it by design: this tree's digest is also run with
# CAIRN_CPU_SMALL_GEMM=0 (OpenBLAS for every GEMM), which must match the reference on every line,
# and with small_gemm on, which may differ on the W2 lines only (bench_small_gemm measures by how
# much). Likewise, since cpu::gemm splits large GEMMs across threads itself (kernels/cpu/gemm.cpp),
# the two-thread lines of the book's MLP ("t2 W1") differ by design: CAIRN_CPU_SPLIT_GEMM=0 goes
# with CAIRN_CPU_SMALL_GEMM=0 in the run that must match every line, and bench_gemm_split
# measures the difference. Exit status 0 when all of that holds.
# Run it on one machine: OpenBLAS picks its kernels by CPU, so digests differ between machines.
# CAIRN_BITCHECK_REF_BUILD=<dir>: use that existing build of the reference (with cpu_bit_digest
# built) instead of making one.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ref="${1:?usage: check_bit_identity.sh <reference-commit> [build-dir]}"
here_build="${2:-$root/build-bench}"
work="$root/build-bitcheck"
export PATH="/usr/local/cuda/bin:$PATH"
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
configure=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DCAIRN_BUILD_BENCHMARKS=ON
           -DCAIRN_BUILD_SAMPLES=OFF -DBUILD_TESTING=OFF "${launcher[@]}")

mkdir -p "$work"
ref_build="${CAIRN_BITCHECK_REF_BUILD:-}"
if [ -z "$ref_build" ]; then
  ref_build="$work/ref-build"
  if [ ! -d "$work/ref" ]; then
    git -C "$root" worktree add --detach "$work/ref" "$ref" >/dev/null
  else
    git -C "$work/ref" checkout --detach --quiet "$ref"
  fi
  if [ ! -f "$work/ref/bench/cpu_bit_digest.cpp" ]; then
    cp "$root/bench/cpu_bit_digest.cpp" "$root/bench/CMakeLists.txt" "$work/ref/bench/"
  fi
  cmake -S "$work/ref" -B "$ref_build" "${configure[@]}" >/dev/null
  cmake --build "$ref_build" --target cpu_bit_digest
fi
# An existing build directory keeps its own configuration (tests, samples): only the target is built.
if [ ! -f "$here_build/CMakeCache.txt" ]; then
  cmake -S "$root" -B "$here_build" "${configure[@]}" >/dev/null
fi
cmake --build "$here_build" --target cpu_bit_digest

"$ref_build/bench/cpu_bit_digest" 2>/dev/null >"$work/reference.txt"
"$here_build/bench/cpu_bit_digest" 2>/dev/null >"$work/this-tree.txt"
# The kernels' baseline x86-64 versions, where this CPU would otherwise run their AVX2 versions.
CAIRN_CPU_BASELINE=1 "$here_build/bench/cpu_bit_digest" 2>/dev/null >"$work/this-tree-baseline.txt"
if ! diff "$work/this-tree.txt" "$work/this-tree-baseline.txt"; then
  echo "check_bit_identity: the AVX2 and baseline kernels differ (< AVX2, > baseline)" >&2
  exit 1
fi
CAIRN_CPU_SMALL_GEMM=0 CAIRN_CPU_SPLIT_GEMM=0 "$here_build/bench/cpu_bit_digest" 2>/dev/null \
  >"$work/this-tree-blas-only.txt"
if ! diff "$work/reference.txt" "$work/this-tree-blas-only.txt"; then
  echo "check_bit_identity: with CAIRN_CPU_SMALL_GEMM=0 CAIRN_CPU_SPLIT_GEMM=0, results differ" \
    "from $ref (lines above: < reference, > this tree)" >&2
  exit 1
fi
# With small_gemm and the split: only the W2 network's lines and the MLP's two-thread lines may
# differ.
changed="$(diff <(cat "$work/reference.txt") "$work/this-tree.txt" | grep '^>' || true)"
unexpected="$(printf '%s\n' "$changed" | grep -v -e '^$' -e ' W2 ' -e '^> t2 W1 ' || true)"
if [ -n "$unexpected" ]; then
  printf '%s\n' "$unexpected" >&2
  echo "check_bit_identity: results other than W2's and two-thread W1's differ from $ref" >&2
  exit 1
fi
echo "check_bit_identity: all $(wc -l <"$work/this-tree.txt") digests match $ref with" \
  "CAIRN_CPU_SMALL_GEMM=0 CAIRN_CPU_SPLIT_GEMM=0; by design, small_gemm changes" \
  "$(printf '%s\n' "$changed" | grep -c ' W2 ' || true) W2 lines and the split" \
  "$(printf '%s\n' "$changed" | grep -c '^> t2 W1 ' || true) two-thread W1 lines" \
  "(and this tree's AVX2 and baseline kernels agree)"
