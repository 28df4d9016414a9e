#!/usr/bin/env bash
# Installs cairn from a build tree into a scratch prefix and uses it the way an application would:
#   1. every installed header compiles on its own, from the prefix alone;
#   2. samples/embed (a separate CMake project) configures with find_package(cairn), builds and
#      runs: its CPU part always, its GPU part where a GPU is usable (it says why when skipped;
#      with CAIRN_REQUIRE_GPU=1 a skipped GPU part fails the test).
#
#   embed_test.sh CAIRN_BUILD_DIR CAIRN_SOURCE_DIR [CUDA_ARCHITECTURES]
#
# The consumer uses cairn's compilers (read from its CMakeCache.txt) and, when given, cairn's
# CUDA architectures, so that it neither probes for a GPU nor compiles for architectures cairn
# was not built for.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 CAIRN_BUILD_DIR CAIRN_SOURCE_DIR [CUDA_ARCHITECTURES]" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd)
source_dir=$(cd "$2" && pwd)
architectures=${3:-}

cache_value() {  # the value of a CMakeCache.txt entry of cairn's build, or ""
  sed -n "s/^$1:[A-Z]*=//p" "$build_dir/CMakeCache.txt" | head -n 1
}
cxx_compiler=$(cache_value CMAKE_CXX_COMPILER)
cuda_compiler=$(cache_value CMAKE_CUDA_COMPILER)
build_type=$(cache_value CMAKE_BUILD_TYPE)

scratch=$(mktemp -d "${TMPDIR:-/tmp}/cairn-embed.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
prefix=$scratch/prefix

echo "== cmake --install $build_dir --prefix $prefix"
cmake --install "$build_dir" --prefix "$prefix" >"$scratch/install.log" || {
  cat "$scratch/install.log"; exit 1; }

consumer_args=(-G Ninja "-DCMAKE_PREFIX_PATH=$prefix" "-DCMAKE_BUILD_TYPE=${build_type:-Release}")
[[ -n $cxx_compiler ]] && consumer_args+=("-DCMAKE_CXX_COMPILER=$cxx_compiler")
[[ -n $cuda_compiler ]] && consumer_args+=("-DCMAKE_CUDA_COMPILER=$cuda_compiler")
[[ -n $architectures ]] && consumer_args+=("-DCMAKE_CUDA_ARCHITECTURES=$architectures")

# A consumer must find the cairn it was given, not some other installed one.
check_found_in_prefix() {
  local found
  found=$(sed -n 's/^cairn_DIR:PATH=//p' "$1/CMakeCache.txt")
  if [[ $found != "$prefix"/* ]]; then
    echo "embed_test: find_package(cairn) found '$found', not the copy in $prefix" >&2
    exit 1
  fi
  echo "found cairn in $found"
}

# 1. Each installed header, alone in a translation unit, against cairn::cairn's usage
#    requirements only (the prefix's include directory and the CUDA toolkit's).
echo "== installed headers compile on their own"
headers_dir=$scratch/headers
mkdir -p "$headers_dir/src"
mapfile -t headers < <(cd "$prefix/include" && find cairn -name '*.h' | LC_ALL=C sort)
if [[ ${#headers[@]} -eq 0 ]]; then
  echo "embed_test: no headers under $prefix/include/cairn" >&2
  exit 1
fi
sources=()
for header in "${headers[@]}"; do
  source_file=src/$(echo "$header" | tr '/.' '__').cpp
  # Twice: the second include proves the guard.
  printf '#include <%s>\n#include <%s>\n' "$header" "$header" >"$headers_dir/$source_file"
  sources+=("$source_file")
done
cat >"$headers_dir/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.24)
project(cairn_headers LANGUAGES CXX CUDA)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
find_package(cairn REQUIRED CONFIG)
add_library(cairn_headers OBJECT ${sources[*]})
target_link_libraries(cairn_headers PRIVATE cairn::cairn)
EOF
cmake -S "$headers_dir" -B "$headers_dir/build" "${consumer_args[@]}" >"$scratch/headers.log" || {
  cat "$scratch/headers.log"; exit 1; }
check_found_in_prefix "$headers_dir/build"
cmake --build "$headers_dir/build" >>"$scratch/headers.log" 2>&1 || {
  cat "$scratch/headers.log"; exit 1; }
echo "${#headers[@]} headers compile from the prefix alone"

# 2. The embedding sample, configured, built and run against the prefix.
echo "== samples/embed against the installed cairn"
app_dir=$scratch/embed
cmake -S "$source_dir/samples/embed" -B "$app_dir" "${consumer_args[@]}"
check_found_in_prefix "$app_dir"
cmake --build "$app_dir"
"$app_dir/embed" | tee "$scratch/embed.out"
# As the GoogleTest fixtures do: where a GPU was promised (the Docker image), skipping is failing.
if [[ ${CAIRN_REQUIRE_GPU:-0} == 1 ]] && grep -q "GPU part skipped" "$scratch/embed.out"; then
  echo "embed_test: CAIRN_REQUIRE_GPU=1 but the GPU part was skipped" >&2
  exit 1
fi
