#!/usr/bin/env bash
# Installs every Debian package that hpcml's build, tests and benchmarks need and,
# when asked, an upstream CUDA LibTorch from PyPI.
#
#   scripts/install-deps.sh                      # Debian packages (LibTorch 1.13, CPU)
#   scripts/install-deps.sh --libtorch upstream  # and PyPI's torch 2.11.0+cu130 beside them
#
# Idempotent: packages already installed are skipped, and apt-get (including its
# index update) runs only when something is missing, so a second run takes about
# a second. Needs root (or sudo) on Debian 12 (bookworm).
#
# The upstream LibTorch: `pip download --no-deps` of the torch wheel and the
# three NVIDIA wheels the CUDA 13.0 toolkit does not provide, into
# $HPCML_CACHE/wheels (default ~/.cache/hpcml), unpacked side by side as in
# site-packages into $HPCML_CACHE/libtorch-<version> (torch/ beside nvidia/), so
# torch's RUNPATH ($ORIGIN/../../nvidia/...) finds them. The unpacked folder is
# complete once it holds .complete; a second run reuses it. Prints the folder
# to pass as CMAKE_PREFIX_PATH (scripts/build.sh does that). docs/environment.md
# says how to use another version.
set -euo pipefail

libtorch=debian
while (($# > 0)); do
  case "$1" in
    --libtorch) libtorch=${2:-}; shift 2 || { echo "install-deps: --libtorch needs debian or upstream" >&2; exit 2; } ;;
    --libtorch=*) libtorch=${1#--libtorch=}; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-deps: unknown argument '$1' (expected --libtorch debian|upstream)" >&2; exit 2 ;;
  esac
done
case "$libtorch" in
  debian|upstream) ;;
  *) echo "install-deps: --libtorch: expected debian or upstream, found '$libtorch'" >&2; exit 2 ;;
esac

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
  python3 python3-torch python3-h5py python3-numpy python3-yaml python3-matplotlib python3-sklearn
  # the HPO benchmark's reference (../shared/anchors/optuna_reference.py, bench/hpo_vs_optuna.py)
  python3-optuna
)
# pip (download only) and unzip for the upstream LibTorch wheels
[[ "$libtorch" == upstream ]] && packages+=(python3-pip unzip)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

install_upstream_libtorch() {
  # torch 2.11.0 is the +cu130 build: CUDA 13.0, cuDNN 9.19 and NCCL 2.28.9 come
  # from the toolkit under /usr/local/cuda; these three come as wheels.
  local version=${HPCML_TORCH_VERSION:-2.11.0}
  local cache=${HPCML_CACHE:-$HOME/.cache/hpcml}
  local wheels=(torch==$version nvidia-cusparselt-cu13==0.8.0 nvidia-nvshmem-cu13==3.4.5
                nvidia-cufile==1.15.1.6)
  local dest=$cache/libtorch-$version
  # CUDA 13.0, cuDNN and NCCL come from the toolkit, which no Debian package provides.
  if [[ ! -x /usr/local/cuda/bin/nvcc || ! -f /usr/local/cuda/include/nccl.h ]]; then
    echo "install-deps: --libtorch upstream needs the CUDA 13.0 toolkit with NCCL and cuDNN under" \
         "/usr/local/cuda (found no nvcc or nccl.h there); docs/building.md" >&2
    exit 1
  fi
  if [[ -f $dest/.complete ]]; then
    echo "install-deps: upstream LibTorch $version already unpacked in $dest"
    return
  fi
  mkdir -p "$cache/wheels"
  echo "install-deps: downloading ${wheels[*]} into $cache/wheels (about 0.8 GB, once)"
  /usr/bin/python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$cache/wheels" "${wheels[@]}"
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  local w name
  for w in "${wheels[@]}"; do
    name=${w%%==*}
    # wheel files spell the name with underscores; torch's pattern must not match torchvision
    for f in "$cache/wheels/${name//-/_}-${w#*==}"-*.whl; do
      [[ -f $f ]] || { echo "install-deps: expected the wheel of $w in $cache/wheels, found none" >&2; exit 1; }
      unzip -q -o "$f" -d "$dest.partial"
    done
  done
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
  touch "$dest/.complete"
  echo "install-deps: upstream LibTorch $version unpacked in $dest (CMAKE_PREFIX_PATH=$dest/torch)"
}

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages already installed"
  [[ "$libtorch" == upstream ]] && install_upstream_libtorch
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
[[ "$libtorch" == upstream ]] && install_upstream_libtorch
exit 0
