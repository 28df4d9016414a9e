#!/usr/bin/env bash
# Builds cairn and trains the book's MLP on Fashion-MNIST (on the GPU when there is one, else on
# the CPU, saying so). Arguments go to train_fashion_mnist, e.g. --epochs 3 --optimizer adam.
set -euo pipefail
cd "$(dirname "$0")/.."
CAIRN_WITH_DATA=1 bash scripts/build.sh -DBUILD_TESTING=OFF
"${CAIRN_BUILD_DIR:-build}/samples/train_fashion_mnist" "$@"
