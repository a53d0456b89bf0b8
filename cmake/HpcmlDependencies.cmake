# Every third-party dependency, found once. All come from Debian packages
# installed by scripts/install-deps.sh.
find_package(Threads REQUIRED)
find_package(MPI REQUIRED COMPONENTS C CXX)
find_package(Torch REQUIRED)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(yaml-cpp REQUIRED)
find_package(CLI11 REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)

if(HPCML_ENABLE_HDF5_PARALLEL AND NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR "HPCML_ENABLE_HDF5_PARALLEL is ON but the HDF5 found (${HDF5_C_LIBRARIES}) "
                      "is serial; install libhdf5-openmpi-dev or pass -DHPCML_ENABLE_HDF5_PARALLEL=OFF")
endif()
set(HPCML_HAS_HDF5_PARALLEL ${HDF5_IS_PARALLEL})

# PyTorch 2.x wheels ship their own fmt headers (fmt 12) in torch/include, which
# would shadow Debian's fmt 9 that spdlog is built against. A folder holding only a
# link to Debian's fmt goes first on every target's include path, so <fmt/...> is
# Debian's everywhere (no LibTorch header hpcml includes needs torch's fmt).
if(EXISTS "${TORCH_INSTALL_PREFIX}/include/fmt")
  find_path(HPCML_SYSTEM_FMT_DIR fmt/format.h PATHS /usr/include NO_DEFAULT_PATH)
  if(HPCML_SYSTEM_FMT_DIR)
    set(_shim "${PROJECT_BINARY_DIR}/generated/system-fmt")
    file(MAKE_DIRECTORY "${_shim}")
    file(CREATE_LINK "${HPCML_SYSTEM_FMT_DIR}/fmt" "${_shim}/fmt" SYMBOLIC)
    include_directories(BEFORE SYSTEM "${_shim}")
    message(STATUS "hpcml: ${TORCH_INSTALL_PREFIX}/include/fmt shadowed by ${HPCML_SYSTEM_FMT_DIR}/fmt")
  endif()
endif()

# PyPI's libtorch.so exports its own copy of std::filesystem (64 symbols), and it
# comes before libstdc++ among an executable's libraries, so `fs::remove_all` bound
# to it and crashed (seen with 2.11). libstdc++ first on every link line keeps the
# C++ library's own definitions in front; harmless with Debian's LibTorch.
add_link_options("LINKER:--push-state,--no-as-needed" "-lstdc++" "LINKER:--pop-state")

# LibTorch's imported target carries its compile flags (e.g. the C++11 ABI
# define); we apply them per target through `hpcml_torch`, never globally.
add_library(hpcml_torch INTERFACE)
target_link_libraries(hpcml_torch INTERFACE ${TORCH_LIBRARIES})
separate_arguments(_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
target_compile_options(hpcml_torch INTERFACE ${_torch_flags})
set(HPCML_TORCH_VERSION "${Torch_VERSION}")

# HDF5's variables, as one interface target.
add_library(hpcml_hdf5 INTERFACE)
target_include_directories(hpcml_hdf5 SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS})
target_link_libraries(hpcml_hdf5 INTERFACE ${HDF5_C_LIBRARIES})
target_compile_definitions(hpcml_hdf5 INTERFACE ${HDF5_C_DEFINITIONS})

# The CUDA code paths (NCCL backend, CUDA streams and events): only against a
# CUDA LibTorch (scripts/build.sh --libtorch upstream). Debian's 1.13 is CPU-only;
# device placement itself goes through LibTorch's API and builds either way.
set(HPCML_HAS_CUDA OFF)
set(HPCML_HAS_NCCL OFF)
if(HPCML_ENABLE_CUDA)
  if(NOT TORCH_CUDA_LIBRARIES)
    message(FATAL_ERROR "HPCML_ENABLE_CUDA=ON needs a CUDA-enabled LibTorch; the one found "
                        "(${Torch_DIR}, ${Torch_VERSION}) is CPU-only. Use scripts/build.sh --libtorch upstream")
  endif()
  # The CUDA runtime comes with Torch's targets (torch::cudart); NCCL by path, so the
  # installed package (find_package(hpcml)) needs no NCCL target of its own.
  find_package(NCCL REQUIRED)
  target_include_directories(hpcml_torch SYSTEM INTERFACE ${NCCL_INCLUDE_DIR})
  target_link_libraries(hpcml_torch INTERFACE ${NCCL_LIBRARY})
  set(HPCML_HAS_CUDA ON)
  set(HPCML_HAS_NCCL ON)
  message(STATUS "hpcml: CUDA ${CUDAToolkit_VERSION}, NCCL ${NCCL_VERSION} (${NCCL_LIBRARY})")
endif()
