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

set(HPCML_HAS_NCCL OFF)
if(HPCML_ENABLE_NCCL)
  if(NOT TORCH_CUDA_LIBRARIES AND NOT CUDA_FOUND)
    message(FATAL_ERROR "HPCML_ENABLE_NCCL=ON needs a CUDA-enabled LibTorch; the one found "
                        "(${Torch_DIR}) is CPU-only")
  endif()
  find_package(NCCL REQUIRED)
  message(FATAL_ERROR "HPCML_ENABLE_NCCL: the NCCL backend is not implemented yet")
endif()
