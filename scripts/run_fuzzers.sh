#!/usr/bin/env bash
# Fuzzes cairn's file readers (load_safetensors and read_idx) with libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer.
#
#   bash scripts/run_fuzzers.sh [seconds per target, default 60]
#
# Self-contained: builds the two targets into build-fuzz/ with clang++ straight from the sources
# (cairn's host code plus fuzz/cuda_stubs.cpp in place of the CUDA kernels, not through CMake),
# then runs each on a copy of its seed corpus in fuzz/corpus/ (the committed corpus never grows;
# fuzz/make_seeds.py writes its hand-made seeds: deep nesting, long headers, large declared sizes,
# gzip streams, and the inputs that once crashed cairn) with its dictionary (fuzz/<target>.dict).
# Exits non-zero on any finding (a crash, a sanitizer report, an exception other than
# cairn::Error, a timeout, or memory: more than -rss_limit_mb in all, or one allocation larger
# than -malloc_limit_mb, so that allocating what a header merely claims is a finding), printing
# the end of the log; the reproducer is left in build-fuzz/findings/<target>/. Keep a reproducer
# as a seed (named crash-*) once it is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds="${1:-60}"
build="$root/build-fuzz"
jobs="${CAIRN_JOBS:-$(nproc)}"

# ---- Tools: clang with libFuzzer (Debian: clang, libclang-rt-dev), plus cairn's own deps. ----
bash scripts/install_deps.sh
cxx="${CAIRN_FUZZ_CXX:-}"
if [[ -z "$cxx" ]]; then
  for candidate in clang++ clang++-16 clang++-15 clang++-14; do
    if command -v "$candidate" >/dev/null; then cxx=$candidate; break; fi
  done
fi
probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  >"$probe_dir/probe.cpp"
if [[ -z "$cxx" ]] || ! "$cxx" -fsanitize=fuzzer "$probe_dir/probe.cpp" -o "$probe_dir/probe" \
    >/dev/null 2>&1; then
  echo "cairn: installing clang and libFuzzer (clang, libclang-rt-dev)"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    clang libclang-rt-dev >/dev/null
  cxx=${cxx:-clang++}
  "$cxx" -fsanitize=fuzzer "$probe_dir/probe.cpp" -o "$probe_dir/probe" || {
    echo "cairn: $cxx cannot link libFuzzer even after installing libclang-rt-dev" >&2
    exit 1
  }
fi
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
[[ -d "$cuda_home/include" ]] || { echo "cairn: no CUDA Toolkit at $cuda_home" >&2; exit 1; }
cuda_lib="$cuda_home/lib64"
[[ -d "$cuda_lib" ]] || cuda_lib="$cuda_home/lib"

# ---- Build. ----
mkdir -p "$build/obj" "$build/include"
[[ -e "$build/include/cairn" ]] || ln -s "$root" "$build/include/cairn"
flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fmacro-prefix-map="$root/"= -fsanitize=address,undefined
       -fno-sanitize-recover=undefined -I"$build/include" -I"$root/fuzz" -isystem "$cuda_home/include")
# The reader's dependencies: core (Tensor and what it links to) and the CPU kernels; the CUDA
# kernels are replaced by stubs.
sources=(base/*.cpp core/*.cpp core/ops/*.cpp kernels/gemm_plan.cpp kernels/cpu/*.cpp
         blocks/safetensors.cpp blocks/safetensors_dtypes.cpp blocks/idx.cpp fuzz/cuda_stubs.cpp)
objects=()
# Rebuilt when missing, or older than this script or any file its dependency list names.
stale() {
  local object=$1 deps=${1%.o}.d file
  [[ -f "$object" && -f "$deps" && ! "$root/scripts/run_fuzzers.sh" -nt "$object" ]] || return 0
  for file in $(sed -e 's/^[^:]*://' -e 's/\\$//' "$deps"); do
    [[ "$file" -nt "$object" ]] && return 0
  done
  return 1
}
compile() {  # compile <source> <object> <extra flags...>
  local source=$1 object=$2
  shift 2
  stale "$object" || return 0
  echo "  CXX $source"
  "$cxx" "${flags[@]}" "$@" -MMD -c "$root/$source" -o "$object"
}
pids=()
for source in "${sources[@]}"; do
  object="$build/obj/$(echo "${source%.cpp}" | tr '/' '_').o"
  objects+=("$object")
  extra=(-fsanitize=fuzzer-no-link)
  [[ "$source" == kernels/cpu/random.cpp ]] && extra+=(-ffp-contract=off)
  compile "$source" "$object" "${extra[@]}" &
  pids+=($!)
  if ((${#pids[@]} >= jobs)); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
rm -f "$build/libcairn_fuzz.a"
ar rcs "$build/libcairn_fuzz.a" "${objects[@]}"
libs=(-L"$cuda_lib" -Wl,-rpath,"$cuda_lib" -lcudart -lcublas -lcublasLt -lcurand -lopenblas -lz
      -lpthread)
for target in safetensors idx; do
  echo "  LINK ${target}_fuzz"
  "$cxx" "${flags[@]}" -fsanitize=fuzzer "$root/fuzz/${target}_fuzz.cpp" "$build/libcairn_fuzz.a" \
    "${libs[@]}" -o "$build/${target}_fuzz"
done

# ---- Run. ----
# protect_shadow_gap=0: the CUDA runtime maps memory where ASan's shadow gap would be.
export ASAN_OPTIONS="protect_shadow_gap=0:detect_leaks=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# Inputs up to max_len bytes: long enough for the deep-nesting and long-header seeds. A single
# allocation above malloc_limit_mb is a finding: the IDX target bounds its reads at 64 MiB and a
# safetensors file's tensors are bounded by its size.
declare -A max_len=([safetensors]=262144 [idx]=65536)
status=0
for target in safetensors idx; do
  work="$build/run/$target"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/tmp" "$build/findings/$target"
  cp "$root/fuzz/corpus/$target/"* "$work/corpus/"
  log="$build/${target}_fuzz.log"
  echo "cairn: fuzzing $target for ${seconds} s (log: $log)"
  set +e
  TMPDIR="$work/tmp" "$build/${target}_fuzz" "$work/corpus" -max_total_time="$seconds" \
    -dict="$root/fuzz/$target.dict" -max_len="${max_len[$target]}" \
    -rss_limit_mb=1536 -malloc_limit_mb=160 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$build/findings/$target/" >"$log" 2>&1
  result=$?
  set -e
  if ((result != 0)); then
    echo "cairn: FINDING in $target (exit $result); the last lines of $log:" >&2
    tail -60 "$log" >&2
    status=1
  else
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb)|cov: .*corp:" "$log" | tail -3
    echo "cairn: $target: no findings"
  fi
done
exit $status
