#!/usr/bin/env bash
# The README's accuracy table: 10 epochs of the book's MLP (784-256-10, batch 256) on the full
# Fashion-MNIST, SGD (lr 0.1) and Adam (lr 0.001), seeds 0, 1 and 2, with a constant learning rate
# and with cosine decay from the same rate, on the default device.
# Extra arguments go to every run (e.g. --device cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
exe="${CAIRN_BUILD_DIR:-build}/samples/train_fashion_mnist"
mkdir -p out/accuracy
printf "%-9s %-9s %4s %14s %14s %12s\n" optimizer schedule seed "final test acc" "best test acc" \
  "samples/s"
for schedule in constant cosine; do
  for optimizer in "sgd --lr 0.1" "adam --lr 0.001"; do
    for seed in 0 1 2; do
      out="out/accuracy/${optimizer%% *}-$schedule-$seed"
      "$exe" --epochs 10 --batch-size 256 --optimizer $optimizer --lr-schedule "$schedule" \
        --seed "$seed" --out "$out" "$@" >"$out.log" 2>&1 || { echo "run failed: see $out.log"; exit 1; }
      awk -F, -v name="${optimizer%% *}" -v schedule="$schedule" -v seed="$seed" 'NR > 1 {
          if ($4 > best) best = $4; last = $4; speed += $6; n++ }
        END { printf "%-9s %-9s %4d %14.4f %14.4f %12.0f\n", name, schedule, seed, last, best,
              speed / n }' "$out/curves.csv"
    done
  done
done
