#!/usr/bin/env bash
# Builds cairn with its tests and runs them all. GPU tests run where a GPU is present and skip,
# saying why, where not.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh -DBUILD_TESTING=ON
ctest --test-dir "${CAIRN_BUILD_DIR:-build}" --output-on-failure --parallel "$(nproc)" "$@"
