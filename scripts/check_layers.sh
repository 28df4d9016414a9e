#!/usr/bin/env bash
# The layers' include arrows run one way (docs/DESIGN.md, "Layers"):
#   samples/bench -> blocks -> dist -> core -> kernels -> base
# Each directory's sources may include cairn headers from itself and the layers below it only.
# Prints every include that points up or sideways and exits 1 if there is any. Run by ctest
# (layers.include_arrows_run_one_way) and cheap enough for every build.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A allowed=(
  [base]="base"
  [kernels]="kernels base"
  [core]="core kernels base"
  [dist]="dist core kernels base"
  [blocks]="blocks dist core kernels base"
)
status=0
for layer in base kernels core dist blocks; do
  [[ -d $layer ]] || continue
  while IFS= read -r line; do
    file=${line%%:*}
    target=$(sed -E 's/.*#include [<"]cairn\/([a-z_]+)\/.*/\1/' <<<"$line")
    if [[ " ${allowed[$layer]} " != *" $target "* ]]; then
      echo "layers: $file includes cairn/$target/ (${layer}/ may include only: ${allowed[$layer]})"
      status=1
    fi
  done < <(grep -rnE '#include [<"]cairn/[a-z_]+/' "$layer" --include='*.h' --include='*.cpp' \
             --include='*.cu' --include='*.cuh' || true)
done
((status == 0)) && echo "layers: every include runs one way (blocks -> dist -> core -> kernels -> base)"
exit $status
