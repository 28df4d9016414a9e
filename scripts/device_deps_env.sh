# shellcheck shell=bash
# Sourced, not run: makes the build find the dependencies packed by scripts/pack_device_deps.sh
# wherever the machine lacks them. Used by scripts/gpu_check.sh (the GPU machine: no system
# development packages, no network) and scripts/check_packed_deps.sh (CI: the same folder, with
# the system's copies hidden, so that it cannot rot unseen).
#
#   source scripts/device_deps_env.sh [--force-packed]
#
# 1. Unpacks $CAIRN_DEPS_DIR/debs/*.deb (default .device_deps/) with `dpkg -x` into a private
#    prefix, $CAIRN_DEPS_PREFIX (default build-deps/): never into /. Absolute links inside a
#    package (zlib1g-dev's libz.so -> /lib/...) are re-pointed into the prefix.
# 2. For each dependency, uses the system's copy where the system has one and the packed copy
#    where not (with --force-packed, or CAIRN_DEPS_FORCE_PACKED=1, the packed copy always). A
#    packed copy is handed to CMake through the environment, so that nested configures (the embed
#    test's consumer project, bench/run_all.sh) find it too:
#      OpenBLAS        BLA_VENDOR=OpenBLAS, CMAKE_LIBRARY_PATH and CMAKE_INCLUDE_PATH (Debian keeps
#                      it in an openblas-pthread/ subfolder that no search would guess)
#      nlohmann-json, zlib, Google Benchmark, CLI11
#                      <Package>_ROOT (CMake searches it first: policy CMP0074)
#      GoogleTest      CAIRN_GTEST_SOURCE_DIR (tests/CMakeLists.txt builds it from source)
#    and the loader through LD_LIBRARY_PATH, which gets one folder of links to the packed runtime
#    libraries in use (never the whole prefix: a packed libz must not shadow the system's unless
#    the system has none, or packed copies are forced).
#    CAIRN_FASHION_MNIST_DIR: the system's dataset if installed, else the packed one.
# 3. Sets CAIRN_DEPS_CMAKE_ARGS (an array of -D arguments for the configure) and
#    CAIRN_DEPS_SUMMARY (one line per dependency: system or packed, and where), and prints the
#    summary.
#
# Returns non-zero (and says why) when a dependency is neither on the system nor packed. Changes
# no shell options of the caller.

cairn_deps_main() {
  local force=${CAIRN_DEPS_FORCE_PACKED:-0}
  [[ ${1:-} == --force-packed ]] && force=1
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  local deps_dir=${CAIRN_DEPS_DIR:-$root/.device_deps}
  local prefix=${CAIRN_DEPS_PREFIX:-$root/build-deps}
  local arch=x86_64-linux-gnu
  CAIRN_DEPS_CMAKE_ARGS=()
  CAIRN_DEPS_SUMMARY=""

  # ---- 1. unpack ----
  local have_debs=0
  if compgen -G "$deps_dir/debs/*.deb" >/dev/null; then
    have_debs=1
    rm -rf "$prefix"
    mkdir -p "$prefix"
    local deb
    for deb in "$deps_dir"/debs/*.deb; do
      if command -v dpkg >/dev/null; then
        dpkg -x "$deb" "$prefix" || { echo "device_deps: dpkg -x $deb failed" >&2; return 1; }
      else
        # No dpkg: a .deb is an ar archive around data.tar.{xz,zst,gz}.
        local scratch
        scratch=$(mktemp -d)
        (cd "$scratch" && ar x "$deb" && tar -xf data.tar.* -C "$prefix") ||
          { echo "device_deps: unpacking $deb failed" >&2; rm -rf "$scratch"; return 1; }
        rm -rf "$scratch"
      fi
    done
    local link target
    while IFS= read -r link; do
      target=$(readlink "$link")
      [[ -e $prefix$target ]] && ln -sfn "$prefix$target" "$link"
    done < <(find "$prefix" -type l -lname '/*')
  fi
  local usr=$prefix/usr
  local runtime=$prefix/runtime-lib
  mkdir -p "$runtime"

  # ---- 2. decide, dependency by dependency ----
  _cairn_any() {  # true when any of the arguments (globs already expanded) exists
    local path
    for path in "$@"; do [[ -e $path ]] && return 0; done
    return 1
  }
  _cairn_system_lib() {  # true when the loader finds <soname> on the system
    if command -v ldconfig >/dev/null; then
      ldconfig -p 2>/dev/null | grep -q "^[[:space:]]*$1 " && return 0
    fi
    _cairn_any {/lib,/usr/lib,/lib64,/usr/lib64}{,/$arch}/"$1"
  }
  _cairn_runtime() {  # _cairn_runtime <library file in the prefix>...: link it into $runtime
    local library
    for library in "$@"; do
      [[ -e $library ]] || { echo "device_deps: $library is not in the packed folder" >&2; return 1; }
      ln -sfn "$library" "$runtime/$(basename "$library")"
    done
  }
  _cairn_record() {  # _cairn_record <name> <system|packed> <where>
    CAIRN_DEPS_SUMMARY+="$(printf '%-16s %-7s %s' "$1" "$2" "$3")"$'\n'
  }
  _cairn_use() {  # _cairn_use <name> <system test status> <packed file that must exist>
    if ((!force)) && (($2 == 0)); then
      _cairn_record "$1" system "(found on this machine)"
      return 1
    fi
    if ((!have_debs)) || [[ ! -e $3 ]]; then
      echo "device_deps: $1 is neither on this machine nor in $deps_dir" \
        "(run scripts/pack_device_deps.sh on the development machine)" >&2
      return 2
    fi
    return 0
  }
  local status lib_dirs=({/usr,/usr/local}/lib{,64,/$arch})
  local failed=0

  # OpenBLAS: cblas.h and a BLAS library.
  _cairn_any /usr/include/cblas.h /usr/include/$arch/cblas.h /usr/include/{,$arch/}openblas*/cblas.h \
    /usr/local/include/cblas.h && _cairn_any "${lib_dirs[@]/%//libopenblas.so}"
  status=$?
  local blas_dir=$usr/lib/$arch/openblas-pthread
  _cairn_use openblas $status "$blas_dir/libopenblas.so"
  case $? in
    0)
      export BLA_VENDOR=OpenBLAS
      export CMAKE_LIBRARY_PATH="$blas_dir${CMAKE_LIBRARY_PATH:+:$CMAKE_LIBRARY_PATH}"
      export CMAKE_INCLUDE_PATH="$usr/include/$arch/openblas-pthread${CMAKE_INCLUDE_PATH:+:$CMAKE_INCLUDE_PATH}"
      CAIRN_DEPS_CMAKE_ARGS+=("-DCAIRN_CBLAS_INCLUDE_DIR=$usr/include/$arch/openblas-pthread")
      _cairn_runtime "$blas_dir/libopenblas.so.0" || failed=1
      # OpenBLAS's Fortran runtime, where the system has none (or packed copies are forced).
      local soname
      for soname in libgfortran.so.5 libquadmath.so.0; do
        if ((force)) || ! _cairn_system_lib $soname; then
          _cairn_runtime "$usr/lib/$arch/$soname" || failed=1
        fi
      done
      _cairn_record openblas packed "$blas_dir"
      ;;
    2) failed=1 ;;
  esac

  # nlohmann-json (header-only, with a CMake package file).
  _cairn_any {/usr,/usr/local}/include/nlohmann/json.hpp &&
    _cairn_any {/usr,/usr/local}/{share,lib,lib/$arch}/cmake/nlohmann_json/nlohmann_jsonConfig.cmake
  status=$?
  _cairn_use nlohmann_json $status "$usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake"
  case $? in
    0) export nlohmann_json_ROOT=$usr; _cairn_record nlohmann_json packed "$usr" ;;
    2) failed=1 ;;
  esac

  # zlib: the header and the link-time library; the runtime libz.so.1 is on every system.
  _cairn_any {/usr,/usr/local}/include/zlib.h && _cairn_any "${lib_dirs[@]/%//libz.so}"
  status=$?
  _cairn_use zlib $status "$usr/include/zlib.h"
  case $? in
    0)
      export ZLIB_ROOT=$usr
      if ((force)) || ! _cairn_system_lib libz.so.1; then
        _cairn_runtime "$prefix/lib/$arch/libz.so.1" || failed=1
      fi
      _cairn_record zlib packed "$usr"
      ;;
    2) failed=1 ;;
  esac

  # Google Benchmark (bench/, built with -DCAIRN_BUILD_BENCHMARKS=ON).
  _cairn_any {/usr,/usr/local}/lib{,64,/$arch}/cmake/benchmark/benchmarkConfig.cmake
  status=$?
  _cairn_use benchmark $status "$usr/lib/$arch/cmake/benchmark/benchmarkConfig.cmake"
  case $? in
    0)
      export benchmark_ROOT=$usr
      _cairn_runtime "$usr/lib/$arch/libbenchmark.so.1debian" || failed=1
      _cairn_record benchmark packed "$usr"
      ;;
    2) failed=1 ;;
  esac

  # CLI11 (header-only, with a CMake package file).
  _cairn_any {/usr,/usr/local}/{share,lib,lib/$arch}/cmake/CLI11/CLI11Config.cmake
  status=$?
  _cairn_use CLI11 $status "$usr/share/cmake/CLI11/CLI11Config.cmake"
  case $? in
    0) export CLI11_ROOT=$usr; _cairn_record CLI11 packed "$usr" ;;
    2) failed=1 ;;
  esac

  # GoogleTest: installed headers and libraries, else Debian's source tree, built with the tests.
  _cairn_any {/usr,/usr/local}/include/gtest/gtest.h &&
    _cairn_any "${lib_dirs[@]/%//libgtest.a}" "${lib_dirs[@]/%//libgtest.so}"
  status=$?
  _cairn_use googletest $status "$usr/src/googletest/CMakeLists.txt"
  case $? in
    0)
      export CAIRN_GTEST_SOURCE_DIR=$usr/src/googletest
      CAIRN_DEPS_CMAKE_ARGS+=("-DCAIRN_GTEST_SOURCE_DIR=$CAIRN_GTEST_SOURCE_DIR")
      _cairn_record googletest packed "$CAIRN_GTEST_SOURCE_DIR (built from source)"
      ;;
    2) failed=1 ;;
  esac

  # Fashion-MNIST (the sample's one-epoch run; not a build dependency, so never a failure here).
  local system_data=/usr/share/datasets/fashion-mnist
  if ((!force)) && [[ -f $system_data/train-images-idx3-ubyte.gz ]]; then
    export CAIRN_FASHION_MNIST_DIR=$system_data
    _cairn_record fashion-mnist system "$system_data"
  elif [[ -f $deps_dir/fashion-mnist/train-images-idx3-ubyte.gz ]]; then
    export CAIRN_FASHION_MNIST_DIR=$deps_dir/fashion-mnist
    _cairn_record fashion-mnist packed "$CAIRN_FASHION_MNIST_DIR"
  else
    unset CAIRN_FASHION_MNIST_DIR
    _cairn_record fashion-mnist absent "(neither installed nor packed)"
  fi

  if compgen -G "$runtime/*" >/dev/null; then
    export LD_LIBRARY_PATH="$runtime${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  export CAIRN_DEPS_PREFIX_IN_USE=$prefix
  unset -f _cairn_any _cairn_system_lib _cairn_runtime _cairn_record _cairn_use
  echo "device_deps: $( ((force)) && echo "packed copies forced" || echo "system first, packed where missing"); prefix $prefix"
  printf '%s' "$CAIRN_DEPS_SUMMARY" | sed 's/^/  /'
  return $failed
}

cairn_deps_main "$@"
