#!/usr/bin/env bash
# CI's proof that the folder the GPU machine gets (scripts/pack_device_deps.sh) is enough: packs
# it, unpacks it the way scripts/gpu_check.sh does (scripts/device_deps_env.sh, packed copies
# forced), then configures and builds the test suite and the benchmarks with the system's /usr
# hidden from CMake, so that only the packed folder can satisfy OpenBLAS, nlohmann-json, zlib,
# GoogleTest (from source, as on the GPU machine) and Google Benchmark, and runs the CPU tests
# against the unpacked libraries. The CUDA toolkit (/usr/local/cuda) and the compilers stay visible.
#
#   bash scripts/check_packed_deps.sh [extra ctest arguments]
#
# It fails unless it can show the packed folder was used: every dependency CMake resolved, every
# header the compiler read for them (ninja's dependency log), every library on a link line and
# every library the loader maps into the test binaries lies in the unpacked prefix, never in /usr.
#
# Environment: CAIRN_PACKED_BUILD_DIR (default build-packed; the packed folder and its unpacked
# prefix go to <it>-deps/), CAIRN_JOBS (default: all cores), CAIRN_PACK_DATASET (default 0 here: the dataset is no build dependency; gpu_check.sh needs it and
# `bash scripts/pack_device_deps.sh` packs it by default).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PATH="/usr/local/cuda/bin:$PATH"
build_dir="${CAIRN_PACKED_BUILD_DIR:-build-packed}"
jobs="${CAIRN_JOBS:-$(nproc)}"
start=$(date +%s)

bash scripts/install_deps.sh
# A folder of its own, so that the developer's .device_deps/ (with the dataset) stays as it is.
export CAIRN_DEPS_DIR="${CAIRN_DEPS_DIR:-$root/$build_dir-deps/packed}"
export CAIRN_DEPS_PREFIX="${CAIRN_DEPS_PREFIX:-$root/$build_dir-deps/prefix}"
CAIRN_PACK_DATASET="${CAIRN_PACK_DATASET:-0}" bash scripts/pack_device_deps.sh
# shellcheck source=scripts/device_deps_env.sh
source scripts/device_deps_env.sh --force-packed
prefix=$CAIRN_DEPS_PREFIX_IN_USE
echo "check_packed_deps: packed and unpacked after $(($(date +%s) - start)) s"

# /usr hidden: as a prefix of every search (find_package, find_library, find_path, and the
# prefixes CMake derives from PATH), and its library and include folders as folders (FindBLAS
# also searches the compiler's implicit link folders by name).
hidden_dirs="/usr/include;/usr/include/x86_64-linux-gnu;/usr/lib;/usr/lib/x86_64-linux-gnu"
hidden_dirs+=";/lib;/lib/x86_64-linux-gnu;/usr/lib64;/lib64;/usr/share"
launcher=()
if command -v ccache >/dev/null; then
  # Relative paths in the cache keys, so that objects the other build dirs made are reused.
  export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
mkdir -p "$build_dir"
# The compilers are named, not searched for: their search would be hidden too.
cmake --fresh -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON \
  -DCAIRN_BUILD_BENCHMARKS=ON -DCMAKE_CXX_COMPILER="$(command -v c++)" \
  -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" \
  "-DCMAKE_IGNORE_PREFIX_PATH=/usr;/" "-DCMAKE_SYSTEM_IGNORE_PREFIX_PATH=/usr;/" \
  "-DCMAKE_IGNORE_PATH=$hidden_dirs" "${launcher[@]}" "${CAIRN_DEPS_CMAKE_ARGS[@]}" \
  >"$build_dir/packed-configure.log" 2>&1 || {
  cat "$build_dir/packed-configure.log"
  echo "check_packed_deps: configure FAILED with /usr hidden" >&2
  exit 1
}

failures=0
fail() {
  echo "check_packed_deps: FAIL: $*" >&2
  failures=$((failures + 1))
}

# 1. What CMake resolved: each must lie in the prefix.
echo "== what CMake resolved (must lie under $prefix)"
cache_value() { sed -n "s/^$1:[A-Z]*=//p" "$build_dir/CMakeCache.txt" | head -n 1; }
for variable in BLAS_openblas_LIBRARY CAIRN_CBLAS_INCLUDE_DIR nlohmann_json_DIR ZLIB_INCLUDE_DIR \
    ZLIB_LIBRARY_RELEASE benchmark_DIR CAIRN_GTEST_SOURCE_DIR; do
  value=$(cache_value "$variable")
  printf '  %-24s %s\n' "$variable" "${value:-(unset)}"
  [[ $value == "$prefix"/* ]] || fail "$variable resolved to '${value:-nothing}', not into $prefix"
done
for variable in GTest_DIR CLI11_DIR; do  # set only when something found a copy: must be ours
  value=$(cache_value "$variable")
  [[ -z $value || $value == *-NOTFOUND || $value == "$prefix"/* ]] ||
    fail "$variable resolved to '$value', outside $prefix"
done

cmake --build "$build_dir" --parallel "$jobs"
echo "check_packed_deps: built after $(($(date +%s) - start)) s"

# 2. What the compiler read: no header of these packages may come from /usr.
echo "== headers the compiler read"
ninja -C "$build_dir" -t deps >"$build_dir/packed-header-deps.txt"
pattern='/(nlohmann/|zlib\.h|zconf\.h|cblas\.h|openblas_config\.h|gtest/|gmock/|benchmark/benchmark\.h|CLI/)'
# ninja records paths as the compiler got them: relative to the build dir where ccache's base_dir
# rewrote them. Made absolute (links kept) before they are judged.
used=$(grep -E "$pattern" "$build_dir/packed-header-deps.txt" | sed 's/^ *//' | sort -u |
  (cd "$build_dir" && xargs -r realpath -m -s) | sort -u)
from_usr=$(grep -E '^/usr/' <<<"$used" || true)
[[ -z $from_usr ]] || fail "headers read from /usr: $(head -5 <<<"$from_usr" | tr '\n' ' ')"
for header in nlohmann/json.hpp zlib.h cblas.h gtest/gtest.h benchmark/benchmark.h; do
  hit=$(grep -F "/$header" <<<"$used" | head -n 1)
  printf '  %-24s %s\n' "$header" "${hit:-(not read)}"
  [[ $hit == "$prefix"/* ]] || fail "$header was not read from $prefix"
done

# 3. What the linker was given: no library of these packages from /usr.
echo "== link lines"
if grep -Eo '(^|[ ;:=])/(usr/)?lib[^ ]*/lib(openblas|blas|z|benchmark|gtest|gmock)[.a-z0-9]*' \
    "$build_dir/build.ninja" | sort -u | grep .; then
  fail "the link lines above name libraries in /usr"
fi

# 4. What the loader maps: the unpacked libraries.
echo "== what the loader maps (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
for binary in tests/formats_test tests/cpu_kernels_test bench/bench_kernels; do
  for library in libopenblas.so.0 libgfortran.so.5 libz.so.1 libbenchmark.so.1debian; do
    resolved=$(ldd "$build_dir/$binary" | awk -v lib="$library" '$1 == lib { print $3 }')
    [[ -n $resolved ]] || continue
    printf '  %-22s %-24s %s\n' "$binary" "$library" "$resolved"
    [[ $resolved == "$prefix"/* ]] || fail "$binary maps $library from $resolved"
  done
done
"$build_dir/bench/bench_kernels" --benchmark_list_tests >/dev/null ||
  fail "bench_kernels does not start against the packed libbenchmark"

# 5. The CPU tests, against the unpacked libraries (GPU tests skip without a GPU, as always).
echo "== ctest (CPU tests) against the unpacked libraries"
ctest --test-dir "$build_dir" --output-on-failure --parallel "$jobs" -LE embed "$@" ||
  fail "ctest failed against the unpacked libraries"

if ((failures)); then
  echo "check_packed_deps: $failures check(s) FAILED after $(($(date +%s) - start)) s" >&2
  exit 1
fi
echo "check_packed_deps: the packed folder alone builds and passes the CPU suite" \
  "($(($(date +%s) - start)) s)"
