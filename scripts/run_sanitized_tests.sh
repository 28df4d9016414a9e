#!/usr/bin/env bash
# The whole test suite, GPU tests included, on the fake CUDA device (tests/fake_cuda/), under
# sanitizers:
#   asan (default): AddressSanitizer + UndefinedBehaviorSanitizer, every test, with
#                   CAIRN_REQUIRE_GPU=1 (a GPU test that skips fails), then `blocks_tour
#                   --check-parity` and a short `train_fashion_mnist --device cuda` on the fake;
#   tsan:           ThreadSanitizer, the tests of the code that crosses threads and streams
#                   (streams, allocator, graphs, loader, dist, the fake itself).
#
#   bash scripts/run_sanitized_tests.sh [asan|tsan] [extra ctest arguments]
#
# The fake device compiles the same host sources as the CUDA build, with the kernels' launchers
# running the CPU twins on the fake streams' worker threads: it proves the code around the
# kernels, not the kernels' bodies or their speed (the real GPU run, scripts/gpu_check.sh, stays
# owed for those). No nvcc is involved, so this build is host code only.
#
# CAIRN_JOBS sets the build's parallelism (default: all cores). Exits non-zero when a test fails
# or any sanitizer report appears in the log, and prints the report.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mode="asan"
if [[ $# -gt 0 && ( $1 == asan || $1 == tsan ) ]]; then mode=$1; shift; fi
CAIRN_WITH_DATA=$([[ $mode == asan ]] && echo 1 || echo 0) bash scripts/install_deps.sh
jobs="${CAIRN_JOBS:-$(nproc)}"
export CAIRN_REQUIRE_GPU=1

if [[ $mode == asan ]]; then
  build_dir="${CAIRN_ASAN_BUILD_DIR:-build-asan}"
  sanitizer=(-DCAIRN_SANITIZE=ON)
  # allocator_may_return_null=1: the out-of-memory tests ask for 4 TiB and more on purpose and
  # expect a cairn::Error; ASan's default is to abort on a request that large.
  export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1:abort_on_error=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  if [[ -f "$root/scripts/lsan.supp" ]]; then
    export LSAN_OPTIONS="suppressions=$root/scripts/lsan.supp:print_suppressions=0"
  fi
  pattern='ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|WARNING: AddressSanitizer'
  targets=()
  selection=()
else
  build_dir="${CAIRN_TSAN_BUILD_DIR:-build-tsan}"
  sanitizer=(-DCAIRN_TSAN=ON)
  # allocator_may_return_null=1: as for ASan, the out-of-memory tests ask for absurd sizes.
  export TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1:allocator_may_return_null=1:suppressions=$root/scripts/tsan.supp"
  pattern='WARNING: ThreadSanitizer|ThreadSanitizer: reported'
  targets=(--target core_test speed_test training_test dist_local_test fake_cuda_test
           cpu_kernels_test)
  suites='FakeRuntime|FakeBlas|FakeLaunchers|FakeNccl|LauncherRefusals|StreamsTest|CachingAllocator'
  suites+='|CudaAllocatorTest|HostAllocator|CudaTensorTest|HybridizeGpu|HybridizeCpu|DataLoader'
  suites+='|DataLoaderCudaTest|Shards|TrainingGpu|GradientReducer|GradReadyHook|Communicator'
  suites+='|DataParallelSingleProcess|ParallelFor|ParallelKernels|ParallelBlasParts'
  selection=(-R "^($suites)[.]")
fi

start=$(date +%s)
launcher=()
if command -v ccache >/dev/null; then
  # Paths relative to the checkout: a clean clone anywhere reuses an earlier run's objects.
  export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCAIRN_FAKE_CUDA=ON \
  "${sanitizer[@]}" -DCAIRN_BUILD_SAMPLES=ON -DBUILD_TESTING=ON "${launcher[@]}" >/dev/null
cmake --build "$build_dir" --parallel "$jobs" "${targets[@]}"
built=$(date +%s)
echo "cairn: $mode build on the fake CUDA device took $((built - start)) s"

log="$build_dir/sanitized-tests.log"
set +e
ctest --test-dir "$build_dir" --output-on-failure --parallel "$jobs" --timeout 1800 \
  "${selection[@]}" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [[ $mode == asan && $status == 0 && $# == 0 ]]; then
  # The samples on the fake GPU: the lecture's networks against the CPU, and a short training.
  {
    "$build_dir/samples/blocks_tour" --check-parity &&
      "$build_dir/samples/train_fashion_mnist" --device cuda --epochs 1 --limit 2048 \
        --out "$build_dir/sample-run"
  } 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
fi
set -e
echo "cairn: $mode tests on the fake CUDA device took $(($(date +%s) - built)) s"

# A report in a test that still passed (a UBSan message from code that carried on) counts too.
if grep -Eq "$pattern" "$log"; then
  echo "cairn: sanitizer reports found (full log: $log):" >&2
  grep -E -A30 "$pattern" "$log" | head -150 >&2
  status=1
fi
if ((status != 0)); then
  echo "cairn: $mode tests on the fake CUDA device FAILED" >&2
  tail -40 "$log" >&2
  exit 1
fi
echo "cairn: $mode tests on the fake CUDA device passed, no sanitizer reports"
