#!/usr/bin/env bash
# Makes gpu-bundle/ (git-ignored), what scripts/gpu-check.sh needs on a GPU machine
# that has a CUDA PyTorch 2.11 but no MPI, HDF5, yaml-cpp, spdlog or fmt:
#
#   bin/       hpcml, gpu_test and device_test, built here against PyPI's torch
#              2.11.0+cu130 (scripts/build.sh --libtorch upstream), stripped
#   lib/       the shared libraries they need that are neither glibc/libstdc++
#              nor LibTorch/CUDA/NCCL (those come from the GPU machine's own torch)
#   ompi/      Open MPI's launcher, daemon, plugins and help files, laid out under
#              one prefix so OPAL_PREFIX relocates them, plus the plugins' libraries
#   anchors/   copies of ../shared/anchors (../shared does not travel)
#
# The bundle must stay under 64 MiB with the repository; the size is printed.
#   scripts/gpu-bundle.sh        # builds build-upstream/ first when needed
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD_DIR:-build-upstream}
HPCML_LIBTORCH=upstream BUILD_DIR="$build" scripts/build.sh
torch_lib=$(sed -n 's/^Torch_DIR:PATH=\(.*\)\/share\/cmake\/Torch$/\1\/lib/p' "$build/CMakeCache.txt")
[[ -d "$torch_lib" ]] || { echo "gpu-bundle: cannot find the LibTorch of $build (Torch_DIR)" >&2; exit 1; }

out=gpu-bundle
rm -rf "$out.partial"
mkdir -p "$out.partial"/{bin,lib,anchors}

# Provided on the GPU machine (its torch wheel and the nvidia wheels beside it), or
# part of every Linux: never copied.
provided='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|librt\.so|libpthread\.so|libstdc\+\+|libgcc_s|libutil\.so|libresolv\.so|libtorch|libc10|libcaffe2|libgomp|libcu|libnccl|libnv|libcudnn|libcufile|libcusparseLt|libshm)'

copy_needs() {  # copies what $1 needs (per ldd, torch's folder on the path) into lib/
  LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}" ldd "$1" | while read -r name arrow path _; do
    [[ "$arrow" == "=>" && -f "$path" ]] || continue
    [[ "$name" =~ $provided ]] && continue
    [[ -f "$out.partial/lib/$name" ]] || cp -L "$path" "$out.partial/lib/$name"
  done
}

for exe in hpcml gpu_test device_test; do
  [[ -x "$build/bin/$exe" ]] || { echo "gpu-bundle: $build/bin/$exe was not built" >&2; exit 1; }
  cp "$build/bin/$exe" "$out.partial/bin/"
  strip --strip-unneeded "$out.partial/bin/$exe"
  copy_needs "$build/bin/$exe"
done

# Open MPI under one prefix: OPAL_PREFIX=<bundle>/ompi makes it look for its plugins,
# help files and daemon there (ompi_info --path all gives the layout).
ompi=$out.partial/ompi
plugin_dir=$(ompi_info --path pkglibdir --parsable | sed 's/^path:pkglibdir://')
prefix=$(ompi_info --path prefix --parsable | sed 's/^path:prefix://')
pkgdata=$(ompi_info --path pkgdatadir --parsable | sed 's/^path:pkgdatadir://')
bindir=$(ompi_info --path bindir --parsable | sed 's/^path:bindir://')
mkdir -p "$ompi/bin" "$ompi/${plugin_dir#"$prefix"/}" "$ompi/${pkgdata#"$prefix"/}"
cp "$bindir/orterun" "$bindir/orted" "$ompi/bin/"
ln -s orterun "$ompi/bin/mpirun"
cp "$pkgdata"/* "$ompi/${pkgdata#"$prefix"/}/" 2>/dev/null || true
# The plugins a single node needs (shared memory, TCP, the launchers and the
# collectives), not the InfiniBand/UCX/OFI ones, whose libraries are large.
for p in "$plugin_dir"/mca_*.so; do
  case "$(basename "$p")" in
    *ucx*|*ofi*|*verbs*|*openib*|*psm*|*portals*|*usnic*|*uct*|*libfabric*|*cuda*|*java*) continue ;;
  esac
  cp "$p" "$ompi/${plugin_dir#"$prefix"/}/"
  copy_needs "$p"
done
copy_needs "$bindir/orterun"
copy_needs "$bindir/orted"

cp ../shared/anchors/*.py "$out.partial/anchors/" 2>/dev/null || echo "gpu-bundle: ../shared/anchors missing: no reference scripts"
git rev-parse HEAD > "$out.partial/REVISION"
rm -rf "$out"
mv "$out.partial" "$out"
size=$(du -sb "$out" | cut -f1)
echo "gpu-bundle: $out is $((size / 1048576)) MiB ($size bytes): $(ls "$out/lib" | wc -l) libraries, $(find "$out/ompi" -name 'mca_*.so' | wc -l) Open MPI plugins"
if ((size > 56 * 1048576)); then
  echo "gpu-bundle: over 56 MiB: with the repository it would not fit the 64 MiB a GPU run carries" >&2
  exit 1
fi
