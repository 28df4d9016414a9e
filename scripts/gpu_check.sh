#!/usr/bin/env bash
# The whole GPU check in one command, sized for one `run` call on the device machine (one NVIDIA
# H200, 16 cores, no network, no system development packages; docs/gpu_session.md):
#
#   bash scripts/gpu_check.sh                         on the GPU machine
#   CAIRN_GPU_CHECK_NO_GPU=1 bash scripts/gpu_check.sh    dry run anywhere: the stages that need no
#                                                     GPU run, the others are listed as skipped
#
# Stages, in this order (most valuable first; each has its own time limit, see the table below):
#   env         the machine: GPU, driver, toolkit, compilers, PyTorch, compute-sanitizer
#   deps        unpack .device_deps/ (scripts/pack_device_deps.sh) for what the machine lacks
#   configure   CMake: tests, samples, benchmarks; CMAKE_CUDA_ARCHITECTURES=90-real; -lineinfo
#   build       all cores, ninja -k 0 (one broken target does not stop the others)
#   ctest       the whole suite, CAIRN_REQUIRE_GPU=1 (a GPU test that skips fails)
#   parity      samples/blocks_tour --check-parity
#   fashion     one epoch of samples/train_fashion_mnist on cuda, on the packed Fashion-MNIST
#   bench       bench/run_all.sh on the programs built here (short runs), PyTorch and cuBLAS
#   memcheck:*  compute-sanitizer memcheck on each GPU test binary       } run side by side:
#   racecheck:*, initcheck:*  on each kernel test binary                 } one GPU, 16 cores
#
# The script never stops at a failure: every stage runs unless what it needs is missing (no GPU,
# its executable not built, the time budget spent), and says so. Each stage's log is kept, and as
# soon as a stage ends the report, the summary and an archive of all logs so far are rewritten in
# the output folder, so a run cut short still returns everything it did.
#
# Output ($OUT when set, as on the device machine; else build-gpu/gpu_check/out), at most 8 files:
#   gpu_check.md   the report: the machine, the dependencies, the stage table, each stage's result
#   summary.tsv    stage, result, exit code, seconds, limit
#   logs.tar.gz    every stage's full log, and the benchmark's raw JSON
#   ctest.log      the suite's log, for a quick look
#   bench.md       bench/run_all.sh's report (ratios against the targets)
# The report also goes to bench/results/gpu_check-<gpu>-<commit>.md, the benchmark report to
# bench/results/<gpu>-<commit>.md.
#
# Environment (all optional):
#   CAIRN_GPU_CHECK_BUDGET   seconds for the whole script (default 510: under 9 minutes)
#   CAIRN_GPU_CHECK_ONLY     run only these stages (space-separated names or name prefixes, e.g.
#                            "configure build memcheck"; deps always runs); the rest are skipped
#   CAIRN_GPU_CHECK_LIMITS   per-stage limits replaced, e.g. "build=1200" (a dry run on two cores)
#   CAIRN_GPU_CHECK_NO_GPU=1 the dry run above
#   CAIRN_COMMIT             the commit to name in the reports (the device's copy has no .git)
#   CAIRN_BUILD_DIR          build directory (default build-gpu)
#   CAIRN_CUDA_ARCHITECTURES default 90-real (the H200 only)
#   CAIRN_GPU_CHECK_CUDA_FLAGS  default -lineinfo (source lines in the sanitizers' reports)
#   CAIRN_MEMCHECK_FLAGS     extra memcheck flags (default --leak-check full)
#   CAIRN_SANITIZER_EXCLUDE  gtest filter of tests kept out of the sanitizers (see below)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
export PATH="/usr/local/cuda/bin:$PATH"
# A CMake 4 (the device's comes from pip) refuses policy versions under 3.5 unless told a floor;
# older ones ignore this.
export CMAKE_POLICY_VERSION_MINIMUM=3.5
start_epoch=$(date +%s)

# ---- What runs. Adding a GPU test binary is one line in gpu_test_binaries (memcheck); adding it
# ---- to kernel_test_binaries as well gets it racecheck and initcheck.
gpu_test_binaries=(
  ops_gpu_test
  core_test
  training_test
  blocks_test
  hardening_test
  speed_test
)
kernel_test_binaries=(
  ops_gpu_test
)
# Kept out of the sanitizers: the tests that exhaust device memory on purpose (they count as API
# errors there) and those over 2^31 elements (name them *Huge*: minutes under a sanitizer).
sanitizer_exclude="${CAIRN_SANITIZER_EXCLUDE:-*Absurd*:*OutOfMemory*:*Huge*}"
# racecheck and initcheck slow a kernel down by 100x and more: they run on the kernel tests that
# use shared memory or warp shuffles (reductions, softmax, losses, the bias gradient), a subset
# that fits the time left; memcheck runs every GPU test.
racecheck_filter="${CAIRN_RACECHECK_FILTER:-*Reduce*:*Softmax*:*SumColumns*:*Argmax*:*Loss*:*Bias*:*BatchNorm*:*LayerNorm*:*Conv*:*Pool*}"
memcheck_flags="${CAIRN_MEMCHECK_FLAGS:---leak-check full}"

# Per-stage limits in seconds; the budget clamps each to what is left (minus the reserve kept for
# the sanitizers, which run last).
declare -A limit=(
  [env]=40 [configure]=90 [build]=300 [ctest]=150 [parity]=45 [fashion]=75 [cnn]=60 [bench]=120
  [memcheck]=rest [racecheck]=rest [initcheck]=rest
)
# "rest": the sanitizers run last and side by side, each given whatever the budget has left
# (less a margin for the report), rather than a fixed cap racecheck would overrun.
for override in ${CAIRN_GPU_CHECK_LIMITS:-}; do  # e.g. "build=1200 ctest=600" for a slow machine
  limit[${override%%=*}]=${override#*=}
done
budget="${CAIRN_GPU_CHECK_BUDGET:-510}"
sanitizer_reserve=90
deadline=$((start_epoch + budget))

build_dir="${CAIRN_BUILD_DIR:-build-gpu}"
work="$root/$build_dir/gpu_check"
logs="$work/logs"
out="${OUT:-$work/out}"
rm -rf "$logs" "$work/results"
mkdir -p "$logs" "$work/results" "$out" bench/results

# ---- The machine ----
have_gpu=0
if [[ ${CAIRN_GPU_CHECK_NO_GPU:-0} != 1 ]] && timeout 30 nvidia-smi -L >/dev/null 2>&1; then
  have_gpu=1
  gpu_name=$(timeout 30 nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  driver=$(timeout 30 nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
else
  gpu_name="none"
  driver="none"
fi
gpu_slug=$(echo "$gpu_name" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
[[ $have_gpu == 1 ]] || gpu_slug=no-gpu
# CAIRN_COMMIT: given by the caller where the tree travels without .git (the GPU machine).
commit="${CAIRN_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
dirty=""
[[ -n $(git status --porcelain -- . ':!bench/results' 2>/dev/null) ]] &&
  dirty=" (working tree differs from the commit)"
report_copy="bench/results/gpu_check-$gpu_slug-$commit.md"
started=$(date -u +%FT%TZ)

# ---- Bookkeeping: one result file per stage, the report rebuilt from them after each stage ----
stage_counter=0
order=()
selected() {  # selected <stage name>: true unless CAIRN_GPU_CHECK_ONLY leaves it out
  [[ -z ${CAIRN_GPU_CHECK_ONLY:-} ]] && return 0
  local wanted
  for wanted in $CAIRN_GPU_CHECK_ONLY; do
    [[ $1 == "$wanted"* ]] && return 0
  done
  return 1
}
record() {  # record <name> <result> <exit code> <seconds> <limit> <note>
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >"$work/results/$1.tsv.tmp"
  mv "$work/results/$1.tsv.tmp" "$work/results/$1.tsv"
}
log_of() { echo "$logs/$(printf '%02d' "$2")-${1//:/-}.log"; }

write_report() {  # rebuilds gpu_check.md, summary.tsv and logs.tar.gz from what exists now
  local tmp="$work/report.$BASHPID"
  {
    echo "# cairn GPU check"
    echo
    echo "- GPU: $gpu_name (driver $driver)"
    echo "- CUDA: $(nvcc --version 2>/dev/null | sed -n 's/.*release //p' | head -1)"
    echo "- commit: $commit$dirty"
    echo "- started: $started; budget $budget s; written $(($(date +%s) - start_epoch)) s in"
    [[ $have_gpu == 1 ]] || echo "- **no GPU**: $([[ ${CAIRN_GPU_CHECK_NO_GPU:-0} == 1 ]] &&
      echo "dry run (CAIRN_GPU_CHECK_NO_GPU=1)" || echo "nvidia-smi -L failed"): the GPU stages are skipped"
    echo
    if [[ -n ${CAIRN_DEPS_SUMMARY:-} ]]; then
      echo "## Dependencies"
      echo
      echo '```'
      printf '%s' "$CAIRN_DEPS_SUMMARY"
      echo '```'
      echo
    fi
    echo "## Stages"
    echo
    echo "| stage | result | exit | seconds | limit | note |"
    echo "| --- | --- | --- | --- | --- | --- |"
    local name file
    for name in "${order[@]}"; do
      file="$work/results/$name.tsv"
      if [[ -f $file ]]; then
        awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }' "$file"
      else
        echo "| $name | running or not reached | | | | |"
      fi
    done
    echo
    echo "Logs: logs.tar.gz (one file per stage, numbered in order)."
    if [[ -f $logs/ctest-summary.txt ]]; then
      echo
      echo "## ctest"
      echo
      echo '```'
      cat "$logs/ctest-summary.txt"
      echo '```'
    fi
  } >"$tmp"
  mv "$tmp" "$out/gpu_check.md"
  # Into the tree's results only from a GPU run: a dry run's report is no result.
  [[ $have_gpu == 1 ]] && cp "$out/gpu_check.md" "$report_copy" 2>/dev/null
  cat "$work"/results/*.tsv 2>/dev/null >"$tmp" && mv "$tmp" "$out/summary.tsv"
  # An archive that stays under the device tool's 16 MiB per file: huge logs are cut to their ends.
  tar -czf "$tmp" -C "$work" logs 2>/dev/null
  if (($(stat -c %s "$tmp" 2>/dev/null || echo 0) > 15 * 1024 * 1024)); then
    local cut="$work/cut.$BASHPID"
    rm -rf "$cut" && mkdir -p "$cut/logs"
    for file in "$logs"/*; do tail -c 1000000 "$file" >"$cut/logs/$(basename "$file")"; done
    tar -czf "$tmp" -C "$cut" logs
    rm -rf "$cut"
  fi
  mv "$tmp" "$out/logs.tar.gz"
}

# clamp <wanted limit> <reserve>: the limit this stage gets, or 0 when not enough time is left
clamp() {
  local left=$((deadline - $(date +%s) - $2))
  local wanted=$1
  [[ $wanted == rest ]] && wanted=$((left - 15))
  ((left < wanted)) && wanted=$left
  ((wanted < 10)) && wanted=0
  echo "$wanted"
}

# stage <name> <limit kind> <needs> <note function> -- command...
#   needs: comma-separated; "gpu" (a GPU is visible), "file:<path>" (exists, e.g. an executable),
#   "ok:<stage>" (that stage passed), or "-". The command runs under `timeout`, output to its log.
#   With "&" as the last needs item the stage runs in the background (wait_stages collects it).
stage() {
  local name=$1 kind=$2 needs=$3 note_fn=$4
  shift 5
  stage_counter=$((stage_counter + 1))
  order+=("$name")
  local log
  log=$(log_of "$name" "$stage_counter")
  last_log=$log
  local background=0
  [[ $needs == *",&" || $needs == "&" ]] && background=1
  needs=${needs%,&}
  needs=${needs%&}
  local reserve=$sanitizer_reserve
  [[ $kind == memcheck || $kind == racecheck || $kind == initcheck ]] && reserve=0
  local why="" need
  if ! selected "$name"; then
    why="not selected (CAIRN_GPU_CHECK_ONLY)"
  else
    for need in ${needs//,/ }; do
      case $need in
        gpu) [[ $have_gpu == 1 ]] || why="no GPU" ;;
        file:*) [[ -e ${need#file:} ]] || why="${need#file:} was not built" ;;
        ok:*) [[ $(cut -f2 "$work/results/${need#ok:}.tsv" 2>/dev/null) == passed ]] ||
          why="stage ${need#ok:} did not pass" ;;
      esac
      [[ -n $why ]] && break
    done
  fi
  local seconds
  seconds=$(clamp "${limit[$kind]}" "$reserve")
  if [[ -z $why && $seconds == 0 ]]; then why="time budget spent"; fi
  if [[ -n $why ]]; then
    printf 'skipped: %s\ncommand: %s\n' "$why" "$*" >"$log"
    record "$name" skipped "" 0 "${limit[$kind]}" "$why"
    echo "gpu_check: $name skipped ($why)"
    write_report
    return 0
  fi
  echo "gpu_check: $name (limit ${seconds} s) ..."
  if ((background)); then
    run_stage "$name" "$seconds" "$log" "$note_fn" "$@" &
  else
    run_stage "$name" "$seconds" "$log" "$note_fn" "$@"
  fi
}
run_stage() {  # the body of a stage; records its result and rewrites the report
  local name=$1 seconds=$2 log=$3 note_fn=$4
  shift 4
  local began=$SECONDS
  {
    echo "\$ $*"
    echo "(limit $seconds s, started $(date -u +%T))"
  } >"$log"
  timeout -k 10 "$seconds" "$@" >>"$log" 2>&1
  local status=$?
  local took=$((SECONDS - began))
  local result=passed
  if ((status == 124 || status == 137)); then
    result=TIMEOUT
  elif ((status != 0)); then
    result=FAILED
  fi
  echo "(exit $status after $took s)" >>"$log"
  local note=""
  [[ $note_fn != - ]] && note=$("$note_fn" "$log" 2>/dev/null | tr '\n|' ' /' | cut -c1-160)
  record "$name" "$result" "$status" "$took" "$seconds" "$note"
  echo "gpu_check: $name $result (exit $status, $took s)${note:+: $note}"
  write_report
}

# ---- Notes: one line from a stage's log ----
note_build() { grep -E '^\[[0-9]+/[0-9]+\]|FAILED:|error' "$1" | tail -1; }
note_ctest() {
  local summary
  summary=$(grep -E 'tests passed|tests failed' "$1" | tail -1)
  # Cut short: what finished so far.
  [[ -n $summary ]] || summary="$(grep -c ' Passed ' "$1") passed, $(grep -Ec '\*\*\*(Failed|Timeout|Exception)' "$1") failed before the limit"
  echo "$summary; skipped: $(grep -c '\*\*\*Skipped' "$1")"
}
note_sanitizer() { grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY|tests ran|FAILED|PASSED' "$1" | tail -2; }
note_tail() { grep -v '^(exit' "$1" | tail -1; }
note_env() { grep -E '^torch |No module' "$1" | tail -1; }
note_fashion() { tail -1 "$work/fashion/curves.csv" 2>/dev/null || note_tail "$1"; }
note_bench() { grep -E 'report written|failed' "$1" | tail -2; }

# ---- The stages ----
# Its status is its own: a missing tool fails the stage (the last line's `tail` used to decide).
stage_env() {
  set -o pipefail
  local status=0
  date -u
  nvidia-smi || echo "nvidia-smi failed (no GPU visible)"
  nvcc --version || status=1
  cmake --version | head -1 || status=1
  ninja --version || status=1
  "$(command -v g++ || echo c++)" --version | head -1 || status=1
  ldd --version | head -1
  grep PRETTY_NAME /etc/os-release
  compute-sanitizer --version 2>&1 | tail -1 || status=1
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' ||
    status=1
  echo "cores: $(nproc)"
  free -g | head -2
  df -h "$root" | tail -1
  return $status
}
export -f stage_env
export root
stage env env - note_env -- bash -c stage_env

# deps runs in this shell, whatever CAIRN_GPU_CHECK_ONLY says: what it exports (the loader's path
# to the packed libraries above all) is for every later stage.
stage_counter=$((stage_counter + 1))
order+=(deps)
deps_log=$(log_of deps "$stage_counter")
deps_began=$SECONDS
# shellcheck source=scripts/device_deps_env.sh
source scripts/device_deps_env.sh >"$deps_log" 2>&1
deps_status=$?
record deps "$([[ $deps_status == 0 ]] && echo passed || echo FAILED)" "$deps_status" \
  "$((SECONDS - deps_began))" - "$(awk '$2 == "packed"' <<<"${CAIRN_DEPS_SUMMARY:-}" | wc -l) packed, $(awk '$2 == "system"' <<<"${CAIRN_DEPS_SUMMARY:-}" | wc -l) from the system"
sed 's/^/  /' "$deps_log"
write_report

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
stage configure configure - note_tail -- cmake --fresh -S . -B "$build_dir" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON -DCAIRN_BUILD_BENCHMARKS=ON \
  -DCAIRN_BUILD_SAMPLES=ON "-DCMAKE_CUDA_ARCHITECTURES=${CAIRN_CUDA_ARCHITECTURES:-90-real}" \
  "-DCMAKE_CUDA_FLAGS=${CAIRN_GPU_CHECK_CUDA_FLAGS--lineinfo}" "${launcher[@]}" "${CAIRN_DEPS_CMAKE_ARGS[@]}"

stage build build ok:configure note_build -- cmake --build "$build_dir" --parallel "$(nproc)" -- -k 0

tests="$build_dir/tests"
stage ctest ctest "gpu,file:$tests/ops_gpu_test" note_ctest -- \
  env CAIRN_REQUIRE_GPU=1 ctest --test-dir "$build_dir" --output-on-failure --timeout 140 \
  --parallel 8
ctest_log=$last_log
if [[ $(cut -f2 "$work/results/ctest.tsv") != skipped ]]; then
  cp "$ctest_log" "$out/ctest.log"
  grep -E 'tests passed|tests failed|Total Test time|\*\*\*(Failed|Skipped|Timeout|Exception)|Not Run' \
    "$ctest_log" >"$logs/ctest-summary.txt"
  write_report
fi

# blocks_tour says "skipped" and exits 0 without a usable GPU: on this machine that is a failure.
# shellcheck disable=SC2016  # expanded by the inner bash
stage parity parity "gpu,file:$build_dir/samples/blocks_tour" note_tail -- bash -c \
  'out=$("$0" --check-parity 2>&1); status=$?; echo "$out"; ((status == 0)) && ! grep -qi skipped <<<"$out"' \
  "$build_dir/samples/blocks_tour"

fashion_needs="gpu,file:$build_dir/samples/train_fashion_mnist"
fashion_needs+=",file:${CAIRN_FASHION_MNIST_DIR:-/nonexistent-fashion-mnist}/train-images-idx3-ubyte.gz"
rm -rf "$work/fashion"
# shellcheck disable=SC2016  # expanded by the inner bash
stage fashion fashion "$fashion_needs" note_fashion -- bash -c '"$0" --epochs 1 --device cuda \
  --data "$1" --out "$2" && echo "curves.csv:" && cat "$2/curves.csv"' \
  "$build_dir/samples/train_fashion_mnist" "${CAIRN_FASHION_MNIST_DIR:-}" "$work/fashion"

# The convolutional networks: one short epoch of LeNet and of the ResNet, cairn against PyTorch
# on the same GPU (12,000 samples, the minimum of two epochs).
stage cnn cnn "gpu,file:$build_dir/bench/bench_cnn_epoch" note_tail -- \
  bash bench/gpu_cnn_epoch.sh "$build_dir" python3 --repeats 2 --samples 12000

# Short runs: one repetition, 0.05 s per benchmark; the PyTorch reference on the same GPU.
stage bench bench "gpu,file:$build_dir/bench/bench_kernels" note_bench -- \
  env CAIRN_BENCH_PREBUILT=1 CAIRN_BENCH_BUILD_DIR="$root/$build_dir" CAIRN_BENCH_REPETITIONS=1 \
  CAIRN_BENCH_MIN_TIME=0.05 bash bench/run_all.sh
bench_report="bench/results/$gpu_slug-$commit.md"
if [[ -f $bench_report && $(cut -f2 "$work/results/bench.tsv" 2>/dev/null) != skipped ]]; then
  cp "$bench_report" "$out/bench.md"
  cp -r bench/results/raw "$logs/bench-raw" 2>/dev/null
  write_report
fi

# The sanitizers, side by side: each is one process on mostly one core.
sanitize() {  # sanitize <tool> <binary> [tool flags]
  local tool=$1 binary=$2 filter="-$sanitizer_exclude"
  shift 2
  [[ $tool != memcheck ]] && filter="$racecheck_filter-$sanitizer_exclude"
  compute-sanitizer --tool "$tool" "$@" --error-exitcode 99 "$root/$tests/$binary" \
    --gtest_brief=1 "--gtest_filter=$filter"
}
export -f sanitize
export sanitizer_exclude racecheck_filter tests
for binary in "${gpu_test_binaries[@]}"; do
  # shellcheck disable=SC2086  # the flags are words
  stage "memcheck:$binary" memcheck "gpu,file:$tests/$binary,&" note_sanitizer -- \
    bash -c 'sanitize memcheck "$@"' _ "$binary" $memcheck_flags
done
for binary in "${kernel_test_binaries[@]}"; do
  stage "racecheck:$binary" racecheck "gpu,file:$tests/$binary,&" note_sanitizer -- \
    bash -c 'sanitize racecheck "$@"' _ "$binary"
  stage "initcheck:$binary" initcheck "gpu,file:$tests/$binary,&" note_sanitizer -- \
    bash -c 'sanitize initcheck "$@"' _ "$binary"
done
wait

write_report
echo
echo "gpu_check: $(($(date +%s) - start_epoch)) s; report $out/gpu_check.md$([[ $have_gpu == 1 ]] && echo " (and $report_copy)")"
echo
sed -n '/^## Stages/,/^Logs:/p' "$out/gpu_check.md"
# Exit status: 0 when every stage passed; a dry run only fails on a stage that failed.
not_passed='^passed$'
[[ ${CAIRN_GPU_CHECK_NO_GPU:-0} == 1 ]] && not_passed='^(passed|skipped)$'
bad=$(cut -f2 "$work"/results/*.tsv | grep -Ecv "$not_passed")
((bad == 0))
