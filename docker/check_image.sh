#!/usr/bin/env bash
# Builds docker/Dockerfile and runs the test suite in the container, on a machine with neither a
# GPU nor an image registry (CI): the proof that the image still builds and its suite still passes
# as dependencies and tests change. docker/README.md says what this proves and what it cannot.
#
#   1. A stand-in for NVIDIA's base image (nvidia/cuda:13.0.0-devel-ubuntu24.04, which cannot be
#      pulled here): a minimal Debian root file system from Debian's packages (debootstrap) with the
#      parts of this machine's CUDA toolkit that building cairn needs, imported as
#      cairn-cuda-standin:<hash of its inputs>. It is made once and kept between runs.
#   2. docker build on it (--build-arg BASE_IMAGE; nothing else in the Dockerfile differs), for
#      sm_90 only to save time (--build-arg CUDA_ARCHITECTURES=90-real).
#   3. In the container, with --network none:
#      a. the suite with CAIRN_REQUIRE_GPU=0 (GPU tests skip, saying why): must pass;
#      b. the image's default command: must fail at once, saying that no GPU is visible;
#      c. the fake CUDA device (tests/fake_cuda): a second build, then the whole suite with
#         CAIRN_REQUIRE_GPU=1, the GPU tests included: must pass.
#
# It runs its own dockerd (config {"bridge": "none", "iptables": false, "ip6tables": false}, its own
# socket, data root under the cache folder), stops it by its process id at the end, and removes
# every container and image it made; only the stand-in base stays. Needs root; installs docker.io
# and debootstrap from Debian's packages when missing.
#
# Environment:
#   CAIRN_DOCKER_CACHE         cache folder (default /var/cache/cairn-docker); rm -rf it for a cold run
#   CAIRN_DEBIAN_MIRROR        Debian mirror for the stand-in (default: this machine's apt sources)
#   CAIRN_CUDA_HOME            the toolkit to copy in (default /usr/local/cuda)
#   CAIRN_DOCKER_ARCHITECTURES CUDA architectures to build in the image (default 90-real;
#                              empty: CMakeLists.txt's default, as a user's build)
#   CAIRN_DOCKER_SKIP_FAKE=1   skip step 3c
set -euo pipefail
if [[ $(id -u) -ne 0 ]]; then
  exec sudo -E bash "$0" "$@"
fi
cd "$(dirname "$0")/.."

cache=${CAIRN_DOCKER_CACHE:-/var/cache/cairn-docker}
cuda_home=$(readlink -f "${CAIRN_CUDA_HOME:-/usr/local/cuda}")
architectures=${CAIRN_DOCKER_ARCHITECTURES-90-real}
suite=bookworm
start=$(date +%s)
# CPU seconds the containers have used so far (cgroup v1 or v2, cgroupfs driver; 0 if unknown): a
# measure of the stage's cost that does not depend on what else the machine is doing.
container_cpu() {
  if [[ -r /sys/fs/cgroup/cpuacct/docker/cpuacct.usage ]]; then
    awk '{ printf "%d", $1 / 1e9 }' /sys/fs/cgroup/cpuacct/docker/cpuacct.usage
  elif [[ -r /sys/fs/cgroup/docker/cpu.stat ]]; then
    awk '$1 == "usage_usec" { printf "%d", $2 / 1e6 }' /sys/fs/cgroup/docker/cpu.stat
  else
    echo 0
  fi
}
cpu0=$(container_cpu)
say() { echo "docker-check: $* [$(($(date +%s) - start)) s; containers: $(($(container_cpu) - cpu0)) CPU-s]"; }
die() { echo "docker-check: FAILED: $*" >&2; exit 1; }

# --- Tools -------------------------------------------------------------------------------------
packages=()
[[ -x /usr/sbin/dockerd && -x /usr/bin/docker ]] || packages+=(docker.io)
command -v debootstrap >/dev/null || packages+=(debootstrap)
if ((${#packages[@]})); then
  say "installing ${packages[*]}"
  # Installing docker.io must not start a system daemon (ours runs with its own configuration).
  made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${packages[@]}" >/dev/null
  if ((made_policy)); then rm -f /usr/sbin/policy-rc.d; fi
fi
# docker.io's own client, whatever else is on PATH: it matches the daemon and its legacy builder.
docker=/usr/bin/docker
[[ -x $cuda_home/bin/nvcc ]] || die "no CUDA toolkit at $cuda_home (set CAIRN_CUDA_HOME)"

mkdir -p "$cache"
exec 9>"$cache/lock"
flock -n 9 || { say "waiting for another run's lock on $cache"; flock 9; }

work=$(mktemp -d /tmp/cairn-docker-check.XXXXXX)
dockerd_pid=
cleanup() {
  local rc=$?
  set +e
  if [[ -n $dockerd_pid ]] && kill -0 "$dockerd_pid" 2>/dev/null; then
    # This daemon is ours alone: every container and every image but the cached base is this
    # run's.
    containers=$($docker ps -aq)
    [[ -n $containers ]] && $docker rm -f $containers >/dev/null
    keep=$($docker image inspect -f '{{.Id}}' "${base_tag:-none}" 2>/dev/null)
    for image in $($docker images -aq --no-trunc | sort -u); do
      [[ $image == "$keep" ]] || $docker rmi -f "$image" >/dev/null 2>&1
    done
    $docker builder prune -af >/dev/null 2>&1
    kill "$dockerd_pid"
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$dockerd_pid" 2>/dev/null && kill -9 "$dockerd_pid"
    wait "$dockerd_pid" 2>/dev/null
    # dockerd leaves its network namespace's mount in the exec root.
    awk -v w="$work/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r umount -l
    echo "docker-check: dockerd (pid $dockerd_pid) stopped; this run's containers and images removed"
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- dockerd -------------------------------------------------------------------------------------
# No bridge and no iptables: the machine's network is left alone. The image build uses the host's
# network (apt-get), the tests none.
cat >"$work/daemon.json" <<'EOF'
{"bridge": "none", "iptables": false, "ip6tables": false}
EOF
export DOCKER_HOST="unix://$work/docker.sock"
# nice: the builds and tests in the containers inherit it, and leave the machine's other work alone.
nice -n 10 /usr/sbin/dockerd --config-file "$work/daemon.json" --data-root "$cache/docker" \
  --exec-root "$work/exec" --pidfile "$work/dockerd.pid" -H "$DOCKER_HOST" \
  >"$work/dockerd.log" 2>&1 9>&- &
dockerd_pid=$!
for _ in $(seq 120); do
  [[ -S $work/docker.sock ]] && $docker version >/dev/null 2>&1 && break
  kill -0 "$dockerd_pid" 2>/dev/null || { cat "$work/dockerd.log" >&2; die "dockerd exited"; }
  sleep 0.5
done
$docker version >/dev/null 2>&1 || { tail -n 30 "$work/dockerd.log" >&2; die "dockerd did not answer"; }
say "dockerd $($docker version -f '{{.Server.Version}}') up (pid $dockerd_pid)"

# --- The stand-in base ---------------------------------------------------------------------------
# Debian's mirror from this machine's apt sources (deb822 .sources or one-line .list); the first
# that serves $suite, and the security archive if one is listed.
apt_uri() {  # apt_uri <suite>
  local lists=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] && lists+=("$f")
  done
  ((${#lists[@]})) || return 0
  awk -v want="$1" '
    function flush() {
      if (uri != "" && index(" " suites " ", " " want " ") && !found) { print uri; found = 1 }
      uri = ""; suites = ""
    }
    FNR == 1 { flush() }
    FILENAME ~ /\.sources$/ {
      if ($0 ~ /^[[:space:]]*$/) flush()
      else if (tolower($1) == "uris:") uri = $2
      else if (tolower($1) == "suites:") { $1 = ""; suites = $0 }
      next
    }
    $1 == "deb" && !found {
      i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) == want) { print $i; found = 1 }
    }
    END { flush() }
  ' "${lists[@]}" |
    head -n 1
}
mirror=${CAIRN_DEBIAN_MIRROR:-$(apt_uri "$suite")}
mirror=${mirror:-http://deb.debian.org/debian}
security=$(apt_uri "$suite-security")

# What building cairn needs from the toolkit, relative to its root: the compiler driver and its
# tools (bin, nvvm), the headers, and from the library folder only the runtime, cuBLAS, cuBLASLt,
# cuRAND and NCCL (about 1.1 GiB of the toolkit's 2.7). The links that name the include and library
# folders (include, lib64, targets/<arch>/...) travel as links.
cuda_files() {
  local incdir libdir link
  incdir=$(realpath --relative-to="$cuda_home" "$cuda_home/include")
  libdir=$(realpath --relative-to="$cuda_home" "$cuda_home/lib64")
  (
    cd "$cuda_home"
    shopt -s nullglob
    for link in include lib64 targets/*/include targets/*/lib targets/*/lib64; do
      if [[ -L $link ]]; then echo "$link"; fi
    done
    echo bin; echo nvvm; echo "$incdir"
    if [[ -e version.json ]]; then echo version.json; fi
    for f in "$libdir"/{libcudart.so*,libcudart_static.a,libcudadevrt.a,libculibos.a} \
             "$libdir"/{libcublas.so*,libcublasLt.so*,libcurand.so*,libnccl.so*,stubs,cmake}; do
      echo "$f"
    done
  ) | sort -u
}
cuda_dir=/usr/local/$(basename "$cuda_home")  # cuda-13.0, as in NVIDIA's images
[[ $cuda_dir == /usr/local/cuda ]] && cuda_dir=/usr/local/cuda-$($cuda_home/bin/nvcc --version |
  sed -n 's/.*release \([0-9.]*\),.*/\1/p')
cuda_version=${cuda_dir#/usr/local/cuda-}

make_base() {  # make_base <root>: the stand-in's root file system
  local root=$1
  say "making the stand-in base: debootstrap $suite from $mirror, $cuda_home copied in"
  debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap"; }
  {
    echo "deb $mirror $suite main"
    echo "deb $mirror $suite-updates main"
    if [[ -n $security ]]; then echo "deb $security $suite-security main"; fi
  } >"$root/etc/apt/sources.list"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc \
    "$root"/usr/share/man "$root"/usr/share/locale
  mkdir -p "$root$cuda_dir"
  cuda_files | tar -C "$cuda_home" -c --files-from=- | tar -C "$root$cuda_dir" -x
  ln -s "$(basename "$cuda_dir")" "$root/usr/local/cuda"
  # As NVIDIA's images: the toolkit's libraries registered with the loader, the driver's folders
  # (mounted by the NVIDIA Container Toolkit at run time) on LD_LIBRARY_PATH.
  echo "$cuda_dir/targets/x86_64-linux/lib" >"$root/etc/ld.so.conf.d/988_cuda.conf"
  printf '/usr/local/nvidia/lib\n/usr/local/nvidia/lib64\n' >"$root/etc/ld.so.conf.d/nvidia.conf"
  ldconfig -r "$root"
}
base_env=(
  "PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  "LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64"
  "LIBRARY_PATH=/usr/local/cuda/lib64/stubs"
  "CUDA_VERSION=$cuda_version"
  "NVIDIA_VISIBLE_DEVICES=all"
  "NVIDIA_DRIVER_CAPABILITIES=compute,utility"
  "NVIDIA_REQUIRE_CUDA=cuda>=${cuda_version%.*}"
)
# The cache key: the recipe (this function and the environment above), the suite and mirror, and
# the toolkit's files (names, sizes, times).
key=$({
  declare -f make_base cuda_files
  printf '%s\n' "${base_env[@]}" "$suite" "$mirror" "$security" "$cuda_dir"
  cuda_files | (cd "$cuda_home" && xargs find) | sort | (cd "$cuda_home" && xargs stat -c '%n %s %Y')
} | sha256sum | cut -c1-16)
base_tag=cairn-cuda-standin:$cuda_version-$suite-$key

if $docker image inspect "$base_tag" >/dev/null 2>&1; then
  say "stand-in base $base_tag cached"
else
  # Older stand-ins (other inputs) go; one is kept.
  for old in $($docker images --format '{{.Repository}}:{{.Tag}}' cairn-cuda-standin); do
    $docker rmi "$old" >/dev/null
  done
  make_base "$work/root"
  import_changes=()
  for e in "${base_env[@]}"; do import_changes+=(-c "ENV $e"); done
  tar -C "$work/root" --numeric-owner -c . |
    $docker import "${import_changes[@]}" -c 'CMD ["bash"]' \
      -m "stand-in for nvidia/cuda:$cuda_version-devel (docker/check_image.sh)" - "$base_tag" >/dev/null
  rm -rf "$work/root"
  say "stand-in base $base_tag made ($($docker image inspect -f '{{.Size}}' "$base_tag" |
    awk '{printf "%.2f GB", $1 / 1e9}'))"
fi

# --- The image -----------------------------------------------------------------------------------
image=cairn-check:$$
build_args=(--build-arg "BASE_IMAGE=$base_tag" --build-arg "CUDA_ARCHITECTURES=$architectures")
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  if [[ -n ${!v:-} ]]; then build_args+=(--build-arg "$v"); fi
done
say "docker build -f docker/Dockerfile (CUDA architectures: ${architectures:-the default})"
DOCKER_BUILDKIT=0 $docker build --network host "${build_args[@]}" -f docker/Dockerfile \
  -t "$image" . >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; die "docker build"; }
grep -m1 'Sending build context' "$work/build.log" | sed 's/^/  /'
say "image built: $($docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.2f GB", $1 / 1e9}')"

# --- In the container, without a network ---------------------------------------------------------
run() { $docker run --rm --network none "$@"; }

say "the suite with CAIRN_REQUIRE_GPU=0"
run -e CAIRN_REQUIRE_GPU=0 "$image" \
  bash -c 'ctest --test-dir build --output-on-failure --parallel "$(nproc)"' >"$work/suite.log" 2>&1 ||
  { cat "$work/suite.log" >&2; die "the suite in the container"; }
grep -E 'tests passed|tests failed|Total Test time' "$work/suite.log" | sed 's/^/  /' 
echo "  skipped (no GPU): $(grep -c '\*\*\*Skipped' "$work/suite.log" || true)"

say "the default command, without a GPU"
t0=$(date +%s)
if timeout 120 $docker run --rm --network none "$image" >"$work/default.log" 2>&1; then
  cat "$work/default.log" >&2; die "the default command passed without a GPU"
fi
grep -q 'no GPU visible' "$work/default.log" ||
  { cat "$work/default.log" >&2; die "the default command failed without saying why"; }
(($(date +%s) - t0 <= 30)) || die "the default command took $(($(date +%s) - t0)) s to fail"
sed 's/^/  /' "$work/default.log"

if [[ ${CAIRN_DOCKER_SKIP_FAKE:-0} != 1 ]]; then
  say "the fake CUDA device: build, then the suite with CAIRN_REQUIRE_GPU=1"
  run "$image" bash -c '
    set -e
    cmake -S . -B build-fake -G Ninja -DCAIRN_FAKE_CUDA=ON -DBUILD_TESTING=ON
    cmake --build build-fake --parallel "$(nproc)"
    CAIRN_REQUIRE_GPU=1 ctest --test-dir build-fake --output-on-failure --parallel "$(nproc)"' \
    >"$work/fake.log" 2>&1 || { cat "$work/fake.log" >&2; die "the fake-device suite in the container"; }
  grep -E 'tests passed|tests failed|Total Test time' "$work/fake.log" | sed 's/^/  /' 
fi
say "passed"
