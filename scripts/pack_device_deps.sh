#!/usr/bin/env bash
# Run on the development machine (Debian, network): gathers into .device_deps/ (git-ignored)
# everything scripts/gpu_check.sh needs on the GPU machine beyond its CUDA toolkit, CMake, Ninja and
# Python. That machine has no system development packages, no network and no package registry.
#
#   bash scripts/pack_device_deps.sh [--no-dataset]
#
# What lands in $CAIRN_DEPS_DIR (default .device_deps/):
#   debs/*.deb       Debian's packages, fetched with `apt-get download` (no root needed): OpenBLAS
#                    (pthread build) with its Fortran runtime, nlohmann-json, zlib's headers,
#                    Google Benchmark, CLI11, GoogleTest's source. One is slimmed (see SLIM
#                    below) so that the folder fits the device tool's 64 MiB tree limit.
#   fashion-mnist/   the four Fashion-MNIST IDX files (Debian's dataset-fashion-mnist, copied from
#                    /usr/share/datasets when installed, else extracted from its downloaded .deb).
#   MANIFEST         package versions, the slimming, each file's size, the total.
#
# scripts/device_deps_env.sh unpacks the .debs with `dpkg -x` into a private prefix (never into /)
# and points CMake and the loader at it for what the machine lacks. --no-dataset (or
# CAIRN_PACK_DATASET=0) leaves the dataset out, for CI, which tests the packages only.
# Fails if the folder exceeds CAIRN_DEPS_MAX_MIB (default 40).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
deps_dir="${CAIRN_DEPS_DIR:-$root/.device_deps}"
max_mib="${CAIRN_DEPS_MAX_MIB:-40}"
with_dataset="${CAIRN_PACK_DATASET:-1}"
[[ ${1:-} == --no-dataset ]] && with_dataset=0

# The packages, runtime dependencies included, as the GPU machine needs them. libgcc-s1, libc6 and
# libstdc++6 are left out: every machine that runs a C++ compiler has them.
packages=(
  libopenblas0-pthread libopenblas-pthread-dev libgfortran5 libquadmath0 # cblas_sgemm
  nlohmann-json3-dev                                                     # safetensors header
  zlib1g-dev zlib1g                                                      # gzip IDX files
  libbenchmark-dev libbenchmark1debian                                   # bench/
  libcli11-dev                                                           # the samples' options
  googletest                                                             # /usr/src/googletest
)
# SLIM: files dropped from a package before it is packed, as `dpkg-deb -R` tree paths (its
# documentation goes too). cairn needs libopenblas.so and cblas.h, not OpenBLAS's 58 MB static
# archive (5 MB of the .deb), nor zlib's 0.7 MB CRC paper. Every other package is packed as Debian ships it. (Dropping
# liblapack.so.3 from libopenblas0-pthread would save 2.4 MiB more, but recompressing its 36 MB
# library costs minutes on a busy machine; the folder fits without that.)
declare -A slim=(
  [libopenblas-pthread-dev]="usr/lib/x86_64-linux-gnu/openblas-pthread/*.a"
  [zlib1g-dev]="usr/share/doc"
)

work=$(mktemp -d "${TMPDIR:-/tmp}/cairn-pack.XXXXXX")
trap 'rm -rf "$work"' EXIT

apt_download() {  # apt_download <dir> <package>...: apt-get download, refreshing the lists once
  local dir=$1
  shift
  if ! (cd "$dir" && apt-get download -qq "$@" 2>"$work/apt.err"); then
    if grep -q "Unable to locate\|Can't select\|has no installation candidate" "$work/apt.err"; then
      echo "pack_device_deps: refreshing apt's lists (a clean machine has none)"
      local sudo_cmd=()
      [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
      "${sudo_cmd[@]}" apt-get update -qq
      (cd "$dir" && apt-get download -qq "$@")
    else
      cat "$work/apt.err" >&2
      return 1
    fi
  fi
}

rm -rf "$deps_dir/debs"
mkdir -p "$deps_dir/debs" "$work/debs"
echo "pack_device_deps: apt-get download ${packages[*]}"
apt_download "$work/debs" "${packages[@]}"

manifest=$deps_dir/MANIFEST
{
  echo "# .device_deps/ made by scripts/pack_device_deps.sh on $(date -u +%FT%TZ)"
  echo "# from $(sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '"'), glibc $(ldd --version | head -1 | awk '{print $NF}')"
} >"$manifest"

for deb in "$work"/debs/*.deb; do
  package=$(dpkg-deb -f "$deb" Package)
  version=$(dpkg-deb -f "$deb" Version)
  out="$deps_dir/debs/$(basename "$deb")"
  note=""
  if [[ -n ${slim[$package]:-} ]]; then
    tree=$work/tree-$package
    dpkg-deb -R "$deb" "$tree"
    # shellcheck disable=SC2206  # the patterns are globs on purpose
    doomed=($tree/${slim[$package]} $tree/usr/share/doc $tree/usr/share/man $tree/usr/share/lintian)
    removed=""
    for path in "${doomed[@]}"; do
      [[ -e $path || -L $path ]] || continue
      removed+="$(basename "$path")"$'\n'
      rm -rf "$path"
    done
    # Links to what was removed go too, transitively (libblas.a -> libopenblas.a ->
    # libopenblasp-r0.3.21.a); links into the package's runtime twin (libopenblas.so) stay.
    while [[ -n $removed ]]; do
      next=""
      while IFS= read -r link; do
        if grep -qxF "$(basename "$(readlink "$link")")" <<<"$removed"; then
          next+="$(basename "$link")"$'\n'
          rm -f "$link"
        fi
      done < <(find "$tree" -type l)
      removed=$next
    done
    rm -f "$tree/DEBIAN/md5sums"  # stale after slimming; dpkg -x does not read it
    dpkg-deb -Zxz --root-owner-group -b "$tree" "$out" >/dev/null
    rm -rf "$tree"
    note=" (slimmed: ${slim[$package]} and docs removed)"
  else
    cp "$deb" "$out"
  fi
  echo "$package $version: $(du -k "$out" | cut -f1) KiB$note" >>"$manifest"
done

# The newest glibc symbol the packed libraries ask for: the GPU machine's glibc must be at least
# this (gpu_check.sh's env stage prints that machine's).
if command -v objdump >/dev/null; then
  mkdir -p "$work/libs"
  for deb in "$deps_dir"/debs/*.deb; do dpkg-deb -x "$deb" "$work/libs"; done
  symbols=$(find "$work/libs" -name '*.so*' -type f -exec objdump -T {} + 2>/dev/null)
  glibc=$(grep -o 'GLIBC_[0-9.]*' <<<"$symbols" | sort -uV | tail -1)
  glibcxx=$(grep -o 'GLIBCXX_[0-9.]*' <<<"$symbols" | sort -uV | tail -1)
  echo "needs: ${glibc:-GLIBC_?} and ${glibcxx:-GLIBCXX_?} (libstdc++) or newer" >>"$manifest"
fi

if ((with_dataset)); then
  mkdir -p "$deps_dir/fashion-mnist"
  files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz
         t10k-labels-idx1-ubyte.gz)
  source_dir=/usr/share/datasets/fashion-mnist
  if [[ ! -f $source_dir/${files[0]} ]]; then
    echo "pack_device_deps: dataset-fashion-mnist is not installed: downloading its .deb"
    mkdir -p "$work/data"
    apt_download "$work/data" dataset-fashion-mnist
    dpkg-deb -x "$work"/data/dataset-fashion-mnist_*.deb "$work/data/root"
    source_dir=$work/data/root/usr/share/datasets/fashion-mnist
  fi
  for file in "${files[@]}"; do
    cp "$source_dir/$file" "$deps_dir/fashion-mnist/$file"
  done
  echo "fashion-mnist: ${files[*]} from $source_dir" >>"$manifest"
else
  rm -rf "$deps_dir/fashion-mnist"
  echo "fashion-mnist: left out (--no-dataset)" >>"$manifest"
fi

total_kib=$(du -sk "$deps_dir" | cut -f1)
total_mib=$(awk -v k="$total_kib" 'BEGIN { printf "%.1f", k / 1024 }')
echo "total: $total_mib MiB" >>"$manifest"
cat "$manifest"
if ((total_kib > max_mib * 1024)); then
  echo "pack_device_deps: $deps_dir is $total_mib MiB, over the $max_mib MiB budget" >&2
  exit 1
fi
echo "pack_device_deps: $deps_dir: $total_mib MiB (budget $max_mib MiB)"
