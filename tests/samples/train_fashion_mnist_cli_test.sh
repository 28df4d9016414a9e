#!/usr/bin/env bash
# The sample's command line, table-driven: every bad line must exit with status 2 and a message
# naming the flag, before any data is loaded (so no data set is needed: --data points at an empty
# directory, which would fail later and differently). Then, on a tiny generated data set, the
# checkpoint checks that need a real run: resuming past --epochs, and a checkpoint whose "epoch"
# entry is missing or not a number.
#
#   train_fashion_mnist_cli_test.sh <path to train_fashion_mnist>
set -uo pipefail
binary=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/nodata"
failures=0

# expect <status> <text the output must contain> <arguments...>
expect() {
  local status=$1 text=$2
  shift 2
  local output got
  output=$("$binary" "$@" 2>&1)
  got=$?
  if [[ $got -ne $status || "$output" != *"$text"* ]]; then
    echo "FAIL: train_fashion_mnist $* -> exit $got (want $status), output:"
    echo "$output" | head -5 | sed 's/^/    /'
    echo "    (wanted it to contain: $text)"
    failures=$((failures + 1))
  fi
}

# Bad values: <flag the message must name> <arguments...>. Each runs with --data pointing at an
# empty directory and --out inside the scratch directory.
bad_lines=(
  "--lr|--lr -1"
  "--lr|--lr 0"
  "--lr|--lr nan"
  "--lr|--lr inf"
  "--lr|--lr 1e-60"
  "--lr|--lr 0.1x"
  "--lr|--lr ''"
  "--batch-size|--batch-size 1e3"
  "--batch-size|--batch-size 0"
  "--batch-size|--batch-size -4"
  "--batch-size|--batch-size 0x10"
  "--batch-size|--batch-size 99999999999999999999"
  "--epochs|--epochs 3x"
  "--epochs|--epochs 0"
  "--epochs|--epochs 2.5"
  "--epochs|--epochs ' 3'"
  "--limit|--limit -5"
  "--limit|--limit 0"
  "--seed|--seed -1"
  "--seed|--seed 18446744073709551616"
  "--seed|--seed +3"
  "--depth|--depth -1"
  "--depth|--depth 65"
  "--width|--width 0"
  "--width|--width 1000000000000"
  "--device|--device cuda9"
  "--device|--device cuda:abc"
  "--device|--device cuda:"
  "--device|--device cuda:-1"
  "--device|--device cuda:99"
  "--device|--device gpu"
  "--optimizer|--optimizer rmsprop"
  "--init|--init zeros"
  "--lr-schedule|--lr-schedule linear"
  "--resume|--resume $work/does-not-exist.safetensors"
  "--data|--data $work/does-not-exist"
  "--epochs|--epochs"
  "--epochs|--epochs 1 --epochs 2"
  "--bogus|--bogus"
  "stray|stray"
)
for line in "${bad_lines[@]}"; do
  flag=${line%%|*}
  eval "arguments=(${line#*|})"
  expect 2 "$flag" --data "$work/nodata" --out "$work/out" "${arguments[@]}"
done

# --help lists every option and exits 0.
for flag in --epochs --batch-size --optimizer --lr --depth --width --device --seed --data --out \
    --resume --limit --init --no-standardize --lr-schedule; do
  expect 0 "$flag" --help
done

# A good line gets past parsing and fails only where the data should be, with status 1.
expect 1 "load_fashion_mnist" --data "$work/nodata" --out "$work/out" --device cpu --epochs 1

# ---- A tiny data set (12 training and 4 test images of 28x28), for the checkpoint checks. ----
be32() { printf "\\x$(printf %02x $(($1 >> 24 & 255)))\\x$(printf %02x $(($1 >> 16 & 255)))\\x$(printf %02x $(($1 >> 8 & 255)))\\x$(printf %02x $(($1 & 255)))"; }
images() {  # images <count>: an IDX file of <count> 28x28 images
  printf '\x00\x00\x08\x03'; be32 "$1"; be32 28; be32 28
  head -c $(($1 * 784)) /dev/urandom
}
labels() {  # labels <count>: an IDX file of <count> labels in [0, 10)
  printf '\x00\x00\x08\x01'; be32 "$1"
  for ((i = 0; i < $1; ++i)); do printf "\\x0$((i % 10))"; done
}
mkdir -p "$work/data"
images 12 >"$work/data/train-images-idx3-ubyte"
labels 12 >"$work/data/train-labels-idx1-ubyte"
images 4 >"$work/data/t10k-images-idx3-ubyte"
labels 4 >"$work/data/t10k-labels-idx1-ubyte"
run=(--data "$work/data" --out "$work/run" --device cpu --batch-size 4 --width 8)
expect 0 "wrote" "${run[@]}" --epochs 1
checkpoint="$work/run/checkpoint.safetensors"
if [[ -f "$checkpoint" ]]; then
  expect 2 "nothing is left to train" "${run[@]}" --epochs 1 --resume "$checkpoint"
  expect 0 "resumed from" "${run[@]}" --epochs 2 --resume "$checkpoint"
  # The same checkpoint with its "epoch" entry made unreadable (same length, so the header stays
  # valid), and with the entry renamed away.
  sed 's/"epoch":"2"/"epoch":"x"/' "$checkpoint" >"$work/bad_epoch.safetensors"
  sed 's/"epoch":"2"/"epoxh":"2"/' "$checkpoint" >"$work/no_epoch.safetensors"
  expect 1 "is not an epoch number" "${run[@]}" --epochs 3 --resume "$work/bad_epoch.safetensors"
  expect 1 "has no \"epoch\" entry" "${run[@]}" --epochs 3 --resume "$work/no_epoch.safetensors"
else
  echo "FAIL: the tiny run wrote no checkpoint"
  failures=$((failures + 1))
fi

if ((failures > 0)); then
  echo "$failures command-line checks failed"
  exit 1
fi
echo "all command-line checks passed"
