#!/usr/bin/env bash
# One epoch of the sample's LeNet and ResNet on the GPU, cairn against PyTorch on the same GPU
# (same shapes, loop, AdamW, batch 256; synthetic data of Fashion-MNIST's shape): a markdown
# table of the minimum epoch over --repeats, and the ratio. scripts/gpu_check.sh runs it short.
#
#   bench/gpu_cnn_epoch.sh <build dir> [python with torch] [--repeats R] [--samples N]
set -euo pipefail
build=$1
python=${2:-python3}
shift $(( $# >= 2 ? 2 : 1 ))
repeats=2 samples=60000
while (($#)); do
  case $1 in
    --repeats) repeats=$2 ;;
    --samples) samples=$2 ;;
    *) echo "gpu_cnn_epoch.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
here=$(cd "$(dirname "$0")" && pwd)
bench=$build/bench/bench_cnn_epoch
min_of() { "$python" -c "import json,sys; print(min(t for l in sys.stdin for t in json.loads(l)['epoch_s']))"; }
echo "| model | samples | cairn s | PyTorch s | cairn / PyTorch |"
echo "| --- | --- | --- | --- | --- |"
for model in lenet resnet; do
  c=$("$bench" --model "$model" --threads 1 --repeats "$repeats" --samples "$samples" --device cuda | min_of)
  t=$("$python" "$here/torch_cnn_epoch.py" --model "$model" --threads 1 --repeats "$repeats" \
      --samples "$samples" --device cuda | min_of)
  "$python" -c "print('| $model | $samples | %.3f | %.3f | %.2f |' % ($c, $t, $c / $t))"
done
