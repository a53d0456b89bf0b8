#!/usr/bin/env bash
# Installs the dependencies (idempotent), configures and builds hpcml.
#
#   scripts/build.sh [--libtorch debian|upstream|PREFIX] [extra cmake args...]
#
# Which LibTorch (also from the environment: HPCML_LIBTORCH):
#   debian    Debian's libtorch-dev 1.13, CPU only (the default), into build/
#   upstream  PyPI's torch 2.11.0+cu130, fetched and unpacked by
#             scripts/install-deps.sh --libtorch upstream, with the CUDA code paths
#             (sm_90), into build-upstream/
#   PREFIX    your own PyTorch: the folder that
#             `python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'`
#             prints, into build-torch/
# BUILD_DIR overrides the folder, BUILD_TYPE (default: Release) the build type.
# Builds with 2 jobs by default (JOBS=N to change): each LibTorch translation unit
# needs 1-1.5 GiB of memory and 15-25 s.
set -euo pipefail
cd "$(dirname "$0")/.."

libtorch=${HPCML_LIBTORCH:-debian}
if [[ "${1:-}" == --libtorch ]]; then
  libtorch=${2:?"build.sh: --libtorch needs debian, upstream or a PyTorch cmake prefix"}
  shift 2
elif [[ "${1:-}" == --libtorch=* ]]; then
  libtorch=${1#--libtorch=}
  shift
fi

# The root of a PyTorch installation (the folder holding lib/ and share/cmake/Torch) from
# either that root or what `torch.utils.cmake_prefix_path` prints (<root>/share/cmake).
# CMake gets the root: TorchConfig's find_library calls search the prefix path before their
# own hints, so with only <root>/share/cmake a system libtorch (Debian's) would be linked.
torch_root() {
  if [[ -f "$1/Torch/TorchConfig.cmake" ]]; then
    (cd "$1/../.." && pwd)
  elif [[ -f "$1/share/cmake/Torch/TorchConfig.cmake" ]]; then
    (cd "$1" && pwd)
  else
    return 1
  fi
}

torch_args=()
case "$libtorch" in
  debian)
    scripts/install-deps.sh
    build_dir=${BUILD_DIR:-build}
    ;;
  upstream)
    scripts/install-deps.sh --libtorch upstream
    # The unpacked wheel is a PyTorch installation like a user's: go through the same
    # torch_root as --libtorch PREFIX, from what torch.utils.cmake_prefix_path gives for it.
    prefix=$(torch_root "${HPCML_CACHE:-$HOME/.cache/hpcml}/libtorch-${HPCML_TORCH_VERSION:-2.11.0}/torch/share/cmake")
    [[ -d /usr/local/cuda/bin ]] && export PATH=/usr/local/cuda/bin:$PATH
    torch_args=(-DCMAKE_PREFIX_PATH="$prefix" -DTORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
                -DHPCML_ENABLE_CUDA=ON)
    build_dir=${BUILD_DIR:-build-upstream}
    ;;
  *)
    if ! prefix=$(torch_root "$libtorch"); then
      echo "build.sh: --libtorch: expected debian, upstream or a folder holding Torch/TorchConfig.cmake" \
           "(torch.utils.cmake_prefix_path), found '$libtorch'" >&2
      exit 2
    fi
    scripts/install-deps.sh
    [[ -d /usr/local/cuda/bin ]] && export PATH=/usr/local/cuda/bin:$PATH
    torch_args=(-DCMAKE_PREFIX_PATH="$prefix")
    build_dir=${BUILD_DIR:-build-torch}
    ;;
esac

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "${torch_args[@]}" "$@"
elif (($# > 0)); then
  cmake -S . -B "$build_dir" "$@"
fi
cmake --build "$build_dir" -j "${JOBS:-2}"
