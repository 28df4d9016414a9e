#!/usr/bin/env bash
# Installs what building cairn needs and is missing: Debian packages only. The CUDA Toolkit itself
# (nvcc, cuBLAS, cuRAND, CUB) must already be present, in /usr/local/cuda or on PATH.
set -euo pipefail

packages=()
need() {  # need <package> <file that proves it is installed>
  [[ -e "$2" ]] || packages+=("$1")
}
command -v cmake >/dev/null || packages+=(cmake)
command -v ninja >/dev/null || packages+=(ninja-build)
command -v g++ >/dev/null || packages+=(g++)
# ccache: CI builds the tree three times (sanitized, packed dependencies, plain); the plain build
# reuses the packed one's objects.
command -v ccache >/dev/null || packages+=(ccache)
need libopenblas-dev /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h
need nlohmann-json3-dev /usr/include/nlohmann/json.hpp
need zlib1g-dev /usr/include/zlib.h
need libgtest-dev /usr/include/gtest/gtest.h
need libgmock-dev /usr/include/gmock/gmock.h
# Data-parallel training and its tests (optional for cairn itself, which builds without MPI).
need libopenmpi-dev /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h
command -v mpirun >/dev/null || packages+=(openmpi-bin)
if [[ "${CAIRN_WITH_DATA:-0}" == 1 ]]; then
  need dataset-fashion-mnist /usr/share/datasets/fashion-mnist
fi

if ((${#packages[@]})); then
  echo "cairn: installing ${packages[*]}"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >/dev/null
fi

if ! command -v nvcc >/dev/null && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "cairn: the CUDA Toolkit (nvcc) was not found; install it from NVIDIA and retry" >&2
  exit 1
fi
