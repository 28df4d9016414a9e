#!/usr/bin/env bash
# The sample's command line, table-driven: every bad line must exit with status 2 and a message
# naming the flag, before any data is loaded (so no data set is needed: --data points at an empty
# directory, which would fail later and differently). Then, on a tiny generated data set, the
# checkpoint checks that need a real run: a run stopped and resumed ends bit for bit where the
# uninterrupted run ends (cosine and constant schedules, and a constant one resumed with a longer
# --epochs); every setting that changes what training computes, given on resume with another
# value, is refused naming its flag (a cosine schedule's --epochs among them, unless
# --restart-schedule); resuming past --epochs; a checkpoint whose entries are missing or garbled.
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
  "--model|--model vgg"
  "--model|--model ''"
  "--weight-decay|--weight-decay -0.1"
  "--weight-decay|--weight-decay nan"
  "--init|--init zeros"
  "--lr-schedule|--lr-schedule linear"
  "--warmup-steps|--warmup-steps -1"
  "--warmup-steps|--warmup-steps 1.5"
  "--stop-after|--stop-after 0"
  "--stop-after|--stop-after 3 --epochs 2"
  "--restart-schedule|--restart-schedule"
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
for flag in --model --weight-decay adamw --epochs --batch-size --optimizer --lr --depth --width --device --seed --data --out \
    --resume --limit --init --no-standardize --lr-schedule --warmup-steps --stop-after \
    --restart-schedule "What --resume keeps" CAIRN_COLLECTIVE_TIMEOUT_S; do
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
checkpoint="$work/run/checkpoint.safetensors"
# same_checkpoint <a> <b> <what>: the two runs ended with the same bytes (parameters, optimizer
# state, counts, schedule and settings).
same_checkpoint() {
  if ! cmp -s "$1" "$2"; then
    echo "FAIL: $3: the checkpoints differ"
    failures=$((failures + 1))
  fi
}
# Uninterrupted references, 4 epochs each.
expect 0 "wrote" "${run[@]}" --epochs 4
cp "$checkpoint" "$work/cosine4.safetensors"
expect 0 "wrote" "${run[@]}" --epochs 4 --lr-schedule constant
cp "$checkpoint" "$work/constant4.safetensors"

# Cosine over 4 epochs, stopped after 2, resumed without repeating the settings: exact.
expect 0 "wrote" "${run[@]}" --epochs 4 --stop-after 2
cp "$checkpoint" "$work/cosine2of4.safetensors"
expect 0 "continuing its cosine" --data "$work/data" --out "$work/run" --device cpu \
  --resume "$work/cosine2of4.safetensors"
same_checkpoint "$checkpoint" "$work/cosine4.safetensors" "cosine 2 of 4 epochs, resumed"
# The same with every setting repeated on the command line: exact too.
expect 0 "continuing its cosine" "${run[@]}" --epochs 4 --lr 0.1 --lr-schedule cosine \
  --optimizer sgd --seed 0 --depth 1 --resume "$work/cosine2of4.safetensors"
same_checkpoint "$checkpoint" "$work/cosine4.safetensors" "cosine resumed, settings repeated"

# The case: a finished 2-epoch cosine run resumed with --epochs 4 is refused, naming
# --epochs and the flag that accepts it; --restart-schedule then trains a new schedule.
expect 0 "wrote" "${run[@]}" --epochs 2
cp "$checkpoint" "$work/cosine2.safetensors"
expect 2 "--restart-schedule" "${run[@]}" --epochs 4 --resume "$work/cosine2.safetensors"
expect 2 "--epochs" "${run[@]}" --epochs 4 --resume "$work/cosine2.safetensors"
expect 2 "--epochs: 3 epochs" "${run[@]}" --epochs 3 --resume "$work/cosine2of4.safetensors"
expect 2 "nothing is left to train" "${run[@]}" --resume "$work/cosine2.safetensors"
expect 0 "with a new schedule: cosine from 0.1 to 0 over 6 steps (steps 6 to 11)" "${run[@]}" \
  --epochs 4 --restart-schedule --resume "$work/cosine2.safetensors"
cp "$checkpoint" "$work/restarted.safetensors"
if cmp -s "$work/restarted.safetensors" "$work/cosine4.safetensors"; then
  echo "FAIL: the restarted schedule trained exactly the uninterrupted 4-epoch cosine run"
  failures=$((failures + 1))
fi
# A restarted schedule is recorded: stopped and resumed, it too ends exactly.
expect 0 "wrote" "${run[@]}" --epochs 4 --stop-after 3 --restart-schedule \
  --resume "$work/cosine2.safetensors"
expect 0 "continuing its cosine from 0.1 to 0 over 6 steps (steps 6 to 11)" "${run[@]}" \
  --resume "$checkpoint"
same_checkpoint "$checkpoint" "$work/restarted.safetensors" "restarted schedule, resumed"

# Constant: a longer --epochs is the same schedule, so it is taken, and exact.
expect 0 "wrote" "${run[@]}" --epochs 2 --lr-schedule constant
cp "$checkpoint" "$work/constant2.safetensors"
expect 0 "continuing its constant" "${run[@]}" --epochs 4 --resume "$work/constant2.safetensors"
same_checkpoint "$checkpoint" "$work/constant4.safetensors" "constant 2 epochs, resumed to 4"

# The convolutional networks, stopped and resumed: exact too (BatchNorm's running statistics and
# num_batches_tracked are in the checkpoint), and the prediction-mode evaluation leaves them alone.
for model in lenet resnet; do
  cnn=(--data "$work/data" --out "$work/$model" --device cpu --batch-size 4 --model "$model"
       --optimizer adamw)
  expect 0 "wrote" "${cnn[@]}" --epochs 2
  cp "$work/$model/checkpoint.safetensors" "$work/${model}2.safetensors"
  expect 0 "wrote" "${cnn[@]}" --epochs 2 --stop-after 1
  expect 0 "continuing its cosine" --data "$work/data" --out "$work/$model" --device cpu \
    --resume "$work/$model/checkpoint.safetensors"
  same_checkpoint "$work/$model/checkpoint.safetensors" "$work/${model}2.safetensors" \
    "$model 1 of 2 epochs, resumed"
done

# A convolutional network's new run takes its recipe (AdamW at lr 0.002) where the command line
# leaves it out; an optimizer given is kept, with its own default rate.
expect 0 "learning rate: cosine from 0.002 to 0" --data "$work/data" --out "$work/recipe" \
  --device cpu --batch-size 4 --model lenet --epochs 1
expect 0 "learning rate: cosine from 0.1 to 0" --data "$work/data" --out "$work/recipe" \
  --device cpu --batch-size 4 --model lenet --epochs 1 --optimizer sgd

# Every setting that changes what training computes, given with another value: refused.
two_of_four="$work/cosine2of4.safetensors"
base=(--data "$work/data" --out "$work/run" --device cpu)
expect 2 "--batch-size: '2' differs from the '4'" "${base[@]}" --batch-size 2 --resume "$two_of_four"
expect 2 "--width" "${base[@]}" --width 16 --resume "$two_of_four"
expect 2 "--depth" "${base[@]}" --depth 2 --resume "$two_of_four"
expect 2 "--optimizer" "${base[@]}" --optimizer adam --resume "$two_of_four"
expect 2 "--model: 'lenet' differs from the 'mlp'" "${base[@]}" --model lenet --resume "$two_of_four"
expect 2 "--weight-decay" "${base[@]}" --weight-decay 0.001 --resume "$two_of_four"
expect 2 "--no-standardize" "${base[@]}" --no-standardize --resume "$two_of_four"
expect 2 "--no-standardize" "${base[@]}" --book --resume "$two_of_four"
expect 2 "--seed" "${base[@]}" --seed 1 --resume "$two_of_four"
expect 2 "--limit" "${base[@]}" --limit 8 --resume "$two_of_four"
expect 2 "--lr: '0.05' differs" "${base[@]}" --lr 0.05 --resume "$two_of_four"
expect 2 "--lr-schedule" "${base[@]}" --lr-schedule constant --resume "$two_of_four"
expect 2 "--warmup-steps" "${base[@]}" --warmup-steps 2 --resume "$two_of_four"
expect 2 "--stop-after" "${base[@]}" --stop-after 1 --resume "$two_of_four"
# Other data of another size.
mkdir -p "$work/data16"
images 16 >"$work/data16/train-images-idx3-ubyte"
labels 16 >"$work/data16/train-labels-idx1-ubyte"
cp "$work/data/t10k-"* "$work/data16/"
expect 2 "--data" --data "$work/data16" --out "$work/run" --device cpu --resume "$two_of_four"

# Warm-up: recorded, and a warm-up as long as the run is refused.
expect 0 "wrote" "${run[@]}" --epochs 2 --warmup-steps 2
expect 0 "learning rate: cosine from 0.1 to 0 over 6 steps (steps 0 to 5), warm-up 2 steps" \
  "${run[@]}" --epochs 2 --stop-after 1 --warmup-steps 2
expect 0 "continuing its cosine from 0.1 to 0 over 6 steps (steps 0 to 5), warm-up 2 steps" \
  "${run[@]}" --resume "$checkpoint"
expect 2 "--warmup-steps" "${run[@]}" --epochs 1 --warmup-steps 3

# Garbled checkpoints (same lengths, so the header stays valid): the "epoch" entry unreadable or
# renamed away, a setting renamed away (a checkpoint of an older train_fashion_mnist).
sed 's/"epoch":"2"/"epoch":"x"/' "$two_of_four" >"$work/bad_epoch.safetensors"
sed 's/"epoch":"2"/"epoxh":"2"/' "$two_of_four" >"$work/no_epoch.safetensors"
sed 's/"run.batch_size"/"run.batch_sizx"/' "$two_of_four" >"$work/old.safetensors"
sed 's/"lr_schedule.kind":"cosine"/"lr_schedule.kind":"cosinx"/' "$two_of_four" \
  >"$work/bad_kind.safetensors"
expect 1 "is not an epoch number" "${run[@]}" --resume "$work/bad_epoch.safetensors"
expect 1 "has no \"epoch\" entry" "${run[@]}" --resume "$work/no_epoch.safetensors"
expect 1 "written by an older train_fashion_mnist" "${run[@]}" --resume "$work/old.safetensors"
expect 1 "lr_schedule.kind" "${run[@]}" --resume "$work/bad_kind.safetensors"

if ((failures > 0)); then
  echo "$failures command-line checks failed"
  exit 1
fi
echo "all command-line checks passed"
