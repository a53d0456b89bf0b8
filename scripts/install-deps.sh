#!/usr/bin/env bash
# Installs every Debian package that hpcml's build, tests and benchmarks need.
#
# Idempotent: packages already installed are skipped, and apt-get (including its
# index update) runs only when something is missing, so a second run takes about
# a second. Needs root (or sudo) on Debian 12 (bookworm).
set -euo pipefail

packages=(
  # toolchain (a bare Debian base image has none of these)
  build-essential cmake ninja-build git pkg-config ca-certificates procps
  # SHA-256 digests of parameters (summary.json, checkpoints)
  libssl-dev
  # LibTorch (CPU) and the BLAS it must use; without OpenBLAS LibTorch falls
  # back to reference BLAS and trains ~24x slower.
  libtorch-dev libopenblas0-pthread
  # MPI and parallel HDF5
  libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools
  # configs, command line, JSON, logging
  libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  # Kokkos 3.4 (Serial backend) for the tracking kernels (models/tracking/, docs/tracking.md)
  libtrilinos-kokkos-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # the layout fuzzer (tests/fuzz): clang++ and libFuzzer (only recommended by clang-14)
  clang libclang-rt-14-dev
  # a real local Slurm cluster for the job-script tests (jobs/local-cluster.sh)
  slurm-wlm munge
  # Python-side references and fixtures (always run with /usr/bin/python3)
  python3 python3-torch python3-h5py python3-numpy python3-yaml python3-matplotlib
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi

echo "install-deps: installing ${#missing[@]} package(s): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
