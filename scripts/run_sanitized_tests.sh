#!/usr/bin/env bash
# Builds cairn and its tests with AddressSanitizer + UndefinedBehaviorSanitizer (host code; the CUDA
# kernels are compiled by nvcc as usual) into build-asan/ and runs every test under them.
#
#   bash scripts/run_sanitized_tests.sh [extra ctest arguments]
#
# CAIRN_JOBS sets the build's parallelism (default: all cores). The embed test (label "embed")
# installs cairn and builds a separate project against it: it checks packaging, not memory, and
# its consumer does not link the sanitizer runtimes, so it is left out.
#
# Exits non-zero when a test fails or any sanitizer report appears in the log (an ASan error, a
# UBSan "runtime error", a LeakSanitizer leak), and prints the report.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/install_deps.sh
export PATH="/usr/local/cuda/bin:$PATH"
build_dir="${CAIRN_ASAN_BUILD_DIR:-build-asan}"
jobs="${CAIRN_JOBS:-$(nproc)}"

# protect_shadow_gap=0: the CUDA runtime maps memory where ASan's shadow gap would be.
# allocator_may_return_null=1: the out-of-memory tests ask for 4 TiB and more on purpose and expect
# a cairn::Error; ASan's default is to abort on a request that large.
export ASAN_OPTIONS="protect_shadow_gap=0:detect_leaks=1:allocator_may_return_null=1:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# Only the per-device state cairn leaks on purpose, if any is reported (see the file).
if [[ -f "$root/scripts/lsan.supp" ]]; then
  export LSAN_OPTIONS="suppressions=$root/scripts/lsan.supp:print_suppressions=0"
fi

start=$(date +%s)
# Samples on: the sample's command-line test runs under the sanitizers too.
# ccache, paths relative to the checkout: a clean clone anywhere reuses an earlier run's objects
# (this build is the slowest part of CI on two cores).
launcher=()
if command -v ccache >/dev/null; then
  export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCAIRN_SANITIZE=ON \
  -DCAIRN_BUILD_SAMPLES=ON -DBUILD_TESTING=ON -DCMAKE_CUDA_ARCHITECTURES=90-real \
  "${launcher[@]}" >/dev/null
cmake --build "$build_dir" --parallel "$jobs"
built=$(date +%s)
echo "cairn: sanitized build took $((built - start)) s"

log="$build_dir/sanitized-tests.log"
set +e
ctest --test-dir "$build_dir" --output-on-failure -LE embed --timeout 1800 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo "cairn: sanitized tests took $(($(date +%s) - built)) s"

# A report in a test that still passed (a UBSan message from code that carried on) counts too.
pattern='ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|WARNING: AddressSanitizer'
if grep -Eq "$pattern" "$log"; then
  echo "cairn: sanitizer reports found (full log: $log):" >&2
  grep -E -A25 "$pattern" "$log" | head -120 >&2
  status=1
fi
if ((status != 0)); then
  echo "cairn: sanitized tests FAILED" >&2
  tail -40 "$log" >&2
  exit 1
fi
echo "cairn: sanitized tests passed, no sanitizer reports"
