#!/usr/bin/env bash
# The sample under mpirun with 2 ranks (MPMD: each rank its own command line), on a tiny
# generated data set: ranks given different --limit (so different steps per epoch) or
# --batch-size must end the job in seconds, naming the quantity and each rank's value, instead
# of hanging after the table header; ranks that agree train and write a checkpoint.
#
#   train_fashion_mnist_mpi_test.sh <train_fashion_mnist> MPIEXEC_COMMAND...
set -uo pipefail
binary=$1
shift
launcher=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

be32() { printf "\\x$(printf %02x $(($1 >> 24 & 255)))\\x$(printf %02x $(($1 >> 16 & 255)))\\x$(printf %02x $(($1 >> 8 & 255)))\\x$(printf %02x $(($1 & 255)))"; }
images() { printf '\x00\x00\x08\x03'; be32 "$1"; be32 28; be32 28; head -c $(($1 * 784)) /dev/urandom; }
labels() { printf '\x00\x00\x08\x01'; be32 "$1"; for ((i = 0; i < $1; ++i)); do printf "\\x0$((i % 10))"; done; }
mkdir -p "$work/data"
images 48 >"$work/data/train-images-idx3-ubyte"
labels 48 >"$work/data/train-labels-idx1-ubyte"
images 8 >"$work/data/t10k-images-idx3-ubyte"
labels 8 >"$work/data/t10k-labels-idx1-ubyte"
common=(--distributed --device cpu --data "$work/data" --out "$work/out" --width 8)

# job <want: ok|fail> <texts the log must hold, separated by |> -- <rank 0 args> -- <rank 1 args>
job() {
  local want=$1 texts=$2
  shift 3
  local zero=() one=()
  while [[ $1 != -- ]]; do zero+=("$1"); shift; done
  shift
  one=("$@")
  [[ " ${zero[*]} " == *" --epochs "* ]] || zero+=(--epochs 2)
  [[ " ${one[*]} " == *" --epochs "* ]] || one+=(--epochs 2)
  local log="$work/log" start status elapsed
  start=$(date +%s)
  timeout 60 "${launcher[@]}" -np 1 "$binary" "${common[@]}" "${zero[@]}" : \
    -np 1 "$binary" "${common[@]}" "${one[@]}" >"$log" 2>&1
  status=$?
  elapsed=$(($(date +%s) - start))
  local ok=1
  if [[ $want == ok ]]; then ((status == 0)) || ok=0; else ((status != 0 && status != 124)) || ok=0; fi
  ((elapsed < 30)) || ok=0
  IFS='|' read -ra wanted <<<"$texts"
  for text in "${wanted[@]}"; do grep -qF -- "$text" "$log" || ok=0; done
  if ((ok == 0)); then
    echo "FAIL: ranks (${zero[*]}) and (${one[*]}): exit $status after ${elapsed} s (want $want), log:"
    sed 's/^/    /' "$log" | grep -v '^    \[' | head -20
    echo "    (wanted: $texts)"
    failures=$((failures + 1))
  fi
}

job fail "the ranks disagree|steps per epoch: '3' on rank 0; '2' on rank 1|training samples: '48' on rank 0; '32' on rank 1" \
  -- --batch-size 8 -- --batch-size 8 --limit 32
job fail "batch size (per rank): '8' on rank 0; '6' on rank 1" -- --batch-size 8 -- --batch-size 6
job fail "learning-rate schedule: horizon (steps): '6' on rank 0; '9' on rank 1" \
  -- --batch-size 8 --epochs 2 -- --batch-size 8 --epochs 3
job fail "optimizer and hyperparameters: 'sgd(learning_rate=0.100000001, momentum=0, weight_decay=0)' on rank 0; 'sgd(learning_rate=0.0500000007, momentum=0, weight_decay=0)' on rank 1" \
  -- --batch-size 8 -- --batch-size 8 --lr 0.05
job fail "normalisation (mean, stddev)" -- --batch-size 8 -- --batch-size 8 --no-standardize
job ok "wrote" -- --batch-size 8 -- --batch-size 8

if ((failures > 0)); then
  echo "$failures data-parallel checks of the sample failed"
  exit 1
fi
echo "all data-parallel checks of the sample passed"
