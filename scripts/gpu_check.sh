#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: builds cairn with its tests, runs the whole suite (GPU tests
# included, none may skip), runs the GPU test binaries under compute-sanitizer (memcheck; with
# CAIRN_SANITIZERS="memcheck racecheck initcheck" the other tools too), and writes a short report.
#
#   scripts/gpu_check.sh [report.md]        default report: bench/results/gpu_check-<gpu>.md
#
# GoogleTest: the system's if installed, else the source tree in $CAIRN_GTEST_SOURCE_DIR (or
# ./.gtest/googletest, where a machine without network access can carry Debian's
# /usr/src/googletest).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/cuda/bin:$PATH"

if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU visible (nvidia-smi -L failed)" >&2
  exit 1
fi
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
gpu_slug=$(echo "$gpu_name" | tr -cs 'A-Za-z0-9' '-' | sed 's/-$//')
report="${1:-bench/results/gpu_check-${gpu_slug}.md}"
build_dir="${CAIRN_BUILD_DIR:-build-gpu}"
log_dir="${CAIRN_LOG_DIR:-$build_dir/logs}"
mkdir -p "$(dirname "$report")" "$log_dir"

gtest_args=()
if [[ -n "${CAIRN_GTEST_SOURCE_DIR:-}" ]]; then
  gtest_args=(-DCAIRN_GTEST_SOURCE_DIR="$CAIRN_GTEST_SOURCE_DIR")
elif [[ ! -f /usr/include/gtest/gtest.h && -d .gtest/googletest ]]; then
  gtest_args=(-DCAIRN_GTEST_SOURCE_DIR="$PWD/.gtest")
fi

started=$(date -u +%FT%TZ)
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CUDA_ARCHITECTURES="${CAIRN_CUDA_ARCHITECTURES:-90-real}" "${gtest_args[@]}" \
  >"$log_dir/configure.log" 2>&1 &&
  cmake --build "$build_dir" --parallel "$(nproc)" >"$log_dir/build.log" 2>&1
build_status=$?

ctest_status=1
skipped="n/a"
if ((build_status == 0)); then
  # On a GPU machine nothing may skip: CAIRN_REQUIRE_GPU=1 turns a GPU test's skip into a failure.
  CAIRN_REQUIRE_GPU=1 ctest --test-dir "$build_dir" --output-on-failure --parallel 4 \
    >"$log_dir/ctest.log" 2>&1
  ctest_status=$?
  skipped=$(grep -c "\*\*\*Skipped" "$log_dir/ctest.log" || true)
fi

sanitizer_rows=""
sanitizer_failed=0
for tool in ${CAIRN_SANITIZERS:-memcheck}; do
  for binary in ${CAIRN_SANITIZER_BINARIES:-ops_gpu_test core_test training_test blocks_test hardening_test}; do
    exe="$build_dir/tests/$binary"
    [[ -x "$exe" ]] || continue
    log="$log_dir/sanitizer-$tool-$binary.log"
    extra=()
    [[ $tool == memcheck ]] && extra=(--leak-check full)
    # The tests that exhaust device memory on purpose would count as API errors here.
    compute-sanitizer --tool "$tool" "${extra[@]}" --error-exitcode 99 "$exe" \
      --gtest_brief=1 --gtest_filter='-*Absurd*:*OutOfMemory*' >"$log" 2>&1
    status=$?
    summary=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY" "$log" | tail -1)
    [[ $status -ne 0 ]] && sanitizer_failed=1
    sanitizer_rows+="| $tool | $binary | $status | ${summary:-no summary line} |"$'\n'
  done
done

{
  echo "# cairn GPU check"
  echo
  echo "- GPU: $gpu_name ($(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1) driver)"
  echo "- CUDA: $(nvcc --version | grep release | sed 's/.*release //')"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "- started: $started"
  echo
  echo "## Build and tests"
  echo
  echo "- build: $([[ $build_status == 0 ]] && echo ok || echo FAILED, see $log_dir/build.log)"
  echo "- ctest: $([[ $ctest_status == 0 ]] && echo passed || echo FAILED) ($skipped skipped; must be 0 here)"
  echo
  echo '```'
  grep -E "tests passed|tests failed|Total Test time" "$log_dir/ctest.log" 2>/dev/null
  echo '```'
  echo
  echo "## compute-sanitizer"
  echo
  echo "| tool | binary | exit | summary |"
  echo "| --- | --- | --- | --- |"
  printf "%s" "$sanitizer_rows"
} >"$report"
cat "$report"
((build_status == 0 && ctest_status == 0 && sanitizer_failed == 0))
