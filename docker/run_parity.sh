#!/usr/bin/env bash
# The container's default command: the full suite, with GPU tests required to run.
set -euo pipefail
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "run_parity: no GPU visible in the container; start it with 'docker run --gpus all'" >&2
  exit 1
fi
nvidia-smi -L
ctest --test-dir build --output-on-failure --parallel "$(nproc)"
