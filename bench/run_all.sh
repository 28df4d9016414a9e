#!/usr/bin/env bash
# One command for the issue "Speed": build the benchmarks, run them, run the PyTorch reference,
# and write bench/results/<gpu-name>-<git-short-sha>.md (ratios against the targets).
#
#   bash bench/run_all.sh
#
# Without a GPU (nvidia-smi absent or failing) it still builds and runs everything: the GPU
# benchmarks skip, saying why, and the report is a clearly labelled CPU-only one.
#
# Environment (all optional):
#   CAIRN_BENCH_BUILD_DIR     build directory (default: build-bench at the repository root)
#   CAIRN_CUDA_ARCHITECTURES  CMAKE_CUDA_ARCHITECTURES (default: the project's; 90-real builds
#                             fastest for an H100)
#   CAIRN_BENCH_JOBS          ninja -j (default: ninja's own choice)
#   CAIRN_BENCH_PREBUILT      1: do not configure or build; run the programs already built in
#                             CAIRN_BENCH_BUILD_DIR (scripts/gpu_check.sh's single build)
#   CAIRN_BENCH_REPETITIONS   Google Benchmark repetitions on a GPU (default 3; medians reported)
#   CAIRN_BENCH_MIN_TIME      seconds per benchmark run (default 0.2)
#   CAIRN_BENCH_FILTER        --benchmark_filter for all three programs (default: all)
#   CAIRN_BENCH_CPU_REPEATS   interleaved repeats of bench_cpu_epoch (default 5; minimum reported)
#   PYTHON                    interpreter for torch_reference.py and compare.py (default python3)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${CAIRN_BENCH_BUILD_DIR:-$root/build-bench}"
results="$root/bench/results"
raw="$results/raw"
python="${PYTHON:-python3}"
export PATH="/usr/local/cuda/bin:$PATH"

# ---- the machine ----
gpu_name=""
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu_name="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)"
fi
# CAIRN_COMMIT: given by the caller where the tree travels without .git (the GPU machine).
commit="${CAIRN_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
dirty=()
# Reports written into bench/results/ are outputs, not a change to what is measured.
if [ -n "$(git -C "$root" status --porcelain -- . ':!bench/results' 2>/dev/null)" ]; then
  dirty=(--dirty)
fi
if [ -n "$gpu_name" ]; then
  cpu_only=()
  slug="$(echo "$gpu_name" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')"
  repetitions="${CAIRN_BENCH_REPETITIONS:-3}"
  echo "run_all: GPU: $gpu_name; commit $commit"
else
  cpu_only=(--cpu-only)
  slug="cpu-only"
  repetitions=1
  echo "run_all: no GPU visible (nvidia-smi absent or failing): CPU-only run; commit $commit"
fi
report="$results/$slug-$commit.md"

# ---- build ----
cmake_args=(-S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
            -DCAIRN_BUILD_BENCHMARKS=ON -DCAIRN_BUILD_SAMPLES=OFF -DBUILD_TESTING=OFF)
if [ -n "${CAIRN_CUDA_ARCHITECTURES:-}" ]; then
  cmake_args+=("-DCMAKE_CUDA_ARCHITECTURES=$CAIRN_CUDA_ARCHITECTURES")
fi
if [ "${CAIRN_BENCH_PREBUILT:-0}" = 1 ]; then
  # scripts/gpu_check.sh builds everything once (tests, samples, benchmarks) and runs them here.
  for program in kernels gemm train_step; do
    if [ ! -x "$build/bench/bench_$program" ]; then
      echo "run_all: CAIRN_BENCH_PREBUILT=1 but $build/bench/bench_$program is not built" >&2
      exit 1
    fi
  done
else
  cmake "${cmake_args[@]}"
  ninja_args=(-C "$build")
  if [ -n "${CAIRN_BENCH_JOBS:-}" ]; then ninja_args+=(-j "$CAIRN_BENCH_JOBS"); fi
  ninja "${ninja_args[@]}" bench_kernels bench_gemm bench_train_step bench_cpu_epoch
fi

# ---- run ----
mkdir -p "$raw"
rm -f "$raw"/*.json
bench_args=(--benchmark_format=json "--benchmark_min_time=${CAIRN_BENCH_MIN_TIME:-0.2}")
if [ "$repetitions" -gt 1 ]; then
  bench_args+=("--benchmark_repetitions=$repetitions")
fi
if [ -n "${CAIRN_BENCH_FILTER:-}" ]; then bench_args+=("--benchmark_filter=$CAIRN_BENCH_FILTER"); fi
status=0
for program in kernels gemm train_step; do
  echo "run_all: bench_$program ..."
  # stdout is the JSON; progress and cairn's one-line device notice go to stderr / the log.
  if ! "$build/bench/bench_$program" "${bench_args[@]}" >"$raw/$program.json" \
      2>"$raw/$program.log"; then
    echo "run_all: bench_$program failed (see $raw/$program.log)" >&2
    status=1
  fi
done

# The CPU path against its BLAS bound (docs/performance.md, issue 13): a markdown table of its own.
if [ -x "$build/bench/bench_cpu_epoch" ]; then
  echo "run_all: bench_cpu_epoch ..."
  if ! "$build/bench/bench_cpu_epoch" --repeats "${CAIRN_BENCH_CPU_REPEATS:-5}" \
      >"$raw/cpu_epoch.md" 2>"$raw/cpu_epoch.log"; then
    echo "run_all: bench_cpu_epoch failed (see $raw/cpu_epoch.log)" >&2
    status=1
  fi
else
  echo "run_all: bench_cpu_epoch is not built: the CPU epoch table is skipped"
fi

echo "run_all: PyTorch reference ..."
if "$python" -c "import torch" >/dev/null 2>&1; then
  "$python" "$root/bench/torch_reference.py" >"$raw/torch.json" 2>"$raw/torch.log" || {
    echo "run_all: torch_reference.py failed (see $raw/torch.log)" >&2
    status=1
  }
else
  # The script itself says it skipped (and why) when torch does not import.
  "$python" "$root/bench/torch_reference.py" >"$raw/torch.json" 2>"$raw/torch.log" || status=1
  echo "run_all: torch does not import here: the PyTorch columns stay empty"
fi

# ---- report ----
"$python" "$root/bench/compare.py" --raw "$raw" --out "$report" --device "${gpu_name:-none}" \
  --commit "$commit" "${dirty[@]}" "${cpu_only[@]}" >/dev/null
echo "run_all: report written to $report"
exit "$status"
