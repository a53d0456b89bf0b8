# Kokkos (Debian's libtrilinos-kokkos-dev: Kokkos 3.4.1, Serial backend only), for the
# tracking kernels in models/tracking/. Provides the imported target Kokkos::kokkos.
#
# Debian's KokkosConfig.cmake computes its include directory from the config file's
# location and lands on /usr/lib/include, which does not exist, so any target linking
# Kokkos::kokkos fails to configure ("includes non-existent path"). The headers live in
# /usr/include/trilinos; we swap the bad entry for the directory holding Kokkos_Core.hpp.
include_guard(GLOBAL)

find_package(Kokkos REQUIRED)

find_path(HPCML_KOKKOS_INCLUDE_DIR Kokkos_Core.hpp
  HINTS ${Kokkos_INCLUDE_DIRS}
  PATHS /usr/include/trilinos /usr/local/include/trilinos
  DOC "Directory holding Kokkos_Core.hpp")
if(NOT HPCML_KOKKOS_INCLUDE_DIR)
  message(FATAL_ERROR "Kokkos: found KokkosConfig.cmake (${Kokkos_DIR}) but not Kokkos_Core.hpp; "
                      "install libtrilinos-kokkos-dev or set HPCML_KOKKOS_INCLUDE_DIR")
endif()

get_target_property(_hpcml_kokkos_includes Kokkos::kokkos INTERFACE_INCLUDE_DIRECTORIES)
set(_hpcml_kokkos_fixed "")
foreach(_dir IN LISTS _hpcml_kokkos_includes)
  # Keep generator expressions and directories that exist; drop the phantom ones.
  if(_dir MATCHES "^\\$<" OR EXISTS "${_dir}")
    list(APPEND _hpcml_kokkos_fixed "${_dir}")
  endif()
endforeach()
list(APPEND _hpcml_kokkos_fixed "${HPCML_KOKKOS_INCLUDE_DIR}")
list(REMOVE_DUPLICATES _hpcml_kokkos_fixed)
set_target_properties(Kokkos::kokkos PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_hpcml_kokkos_fixed}")
if(NOT "${_hpcml_kokkos_includes}" STREQUAL "${_hpcml_kokkos_fixed}")
  message(STATUS "Kokkos ${Kokkos_VERSION}: include directories '${_hpcml_kokkos_includes}' "
                 "replaced by '${_hpcml_kokkos_fixed}'")
endif()
unset(_hpcml_kokkos_includes)
unset(_hpcml_kokkos_fixed)

# Kokkos warns when GNU extensions are on (-std=gnu++17). The top-level CMakeLists
# already turns them off for every target; check instead of overriding it.
if(NOT DEFINED CMAKE_CXX_EXTENSIONS OR CMAKE_CXX_EXTENSIONS)
  message(WARNING "Kokkos: CMAKE_CXX_EXTENSIONS is not OFF; targets linking Kokkos::kokkos "
                  "set CXX_EXTENSIONS OFF themselves (hpcml_kokkos_target)")
endif()

# hpcml_kokkos_target(<target>): CXX_EXTENSIONS OFF on one target, whatever the global setting.
function(hpcml_kokkos_target target)
  set_target_properties(${target} PROPERTIES CXX_EXTENSIONS OFF)
endfunction()

set(HPCML_KOKKOS_VERSION "${Kokkos_VERSION}")
