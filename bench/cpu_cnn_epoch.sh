#!/usr/bin/env bash
# One epoch of the sample's LeNet and ResNet on the CPU: cairn against its BLAS bound (the
# convolution and dense GEMMs alone on OpenBLAS, bench_cnn_epoch --what blas) and against
# PyTorch on the same shapes, data size, loop and thread count (torch_cnn_epoch.py), at 1 and 2
# threads. Each program runs a warm-up epoch and then --repeats timed ones; the table takes each
# one's minimum, and the rounds alternate cairn, BLAS, PyTorch so that load from other processes
# falls on all three alike. Writes a markdown table on stdout.
#
#   bench/cpu_cnn_epoch.sh <build dir with bench_cnn_epoch> [python with torch] \
#       [--repeats R] [--rounds N] [--samples N] [--models "lenet resnet"] [--threads "1 2"]
set -euo pipefail
build=$1
python=${2:-python3}
shift $(( $# >= 2 ? 2 : 1 ))
repeats=2 rounds=1 samples=60000 models="lenet resnet" threads="1 2"
while (($#)); do
  case $1 in
    --repeats) repeats=$2 ;;
    --rounds) rounds=$2 ;;
    --samples) samples=$2 ;;
    --models) models=$2 ;;
    --threads) threads=$2 ;;
    *) echo "cpu_cnn_epoch.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
here=$(cd "$(dirname "$0")" && pwd)
bench=$build/bench/bench_cnn_epoch
[[ -x $bench ]] || { echo "cpu_cnn_epoch.sh: no $bench (configure with -DCAIRN_BUILD_BENCHMARKS=ON)" >&2; exit 2; }
"$python" -c "import torch" 2>/dev/null || { echo "cpu_cnn_epoch.sh: $python has no torch" >&2; exit 2; }

min_of() { "$python" -c "import json,sys; print(min(t for l in sys.stdin for t in json.loads(l)['epoch_s']))"; }
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores; torch $("$python" -c 'import torch; print(torch.__version__)'); $samples samples, batch 256, AdamW; min of $((repeats * rounds)) epochs each"
echo
echo "| model | threads | cairn s | BLAS bound s | PyTorch s | cairn / BLAS | cairn / PyTorch |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for model in $models; do
  for n in $threads; do
    cairn_runs="" blas_runs="" torch_runs=""
    for ((round = 0; round < rounds; ++round)); do
      cairn_runs+=$(OMP_NUM_THREADS=$n "$bench" --model "$model" --threads "$n" --repeats "$repeats" --samples "$samples")$'\n'
      blas_runs+=$(OMP_NUM_THREADS=$n "$bench" --model "$model" --threads "$n" --repeats "$repeats" --samples "$samples" --what blas)$'\n'
      torch_runs+=$(OMP_NUM_THREADS=$n "$python" "$here/torch_cnn_epoch.py" --model "$model" --threads "$n" --repeats "$repeats" --samples "$samples")$'\n'
    done
    c=$(printf %s "$cairn_runs" | min_of)
    b=$(printf %s "$blas_runs" | min_of)
    t=$(printf %s "$torch_runs" | min_of)
    "$python" -c "print('| $model | $n | %.2f | %.2f | %.2f | %.2f | %.2f |' % ($c, $b, $t, $c / $b, $c / $t))"
  done
done
