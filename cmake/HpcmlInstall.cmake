# Install and export: `find_package(hpcml)` from an install prefix gives the
# targets hpcml::core, hpcml::collectives, ... with their dependencies found.
include(CMakePackageConfigHelpers)
install(FILES ${PROJECT_BINARY_DIR}/generated/hpcml/build_config.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hpcml/hpcml)
install(TARGETS hpcml_torch hpcml_hdf5 EXPORT hpcmlTargets)
install(EXPORT hpcmlTargets NAMESPACE hpcml:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hpcml)
configure_package_config_file(cmake/hpcmlConfig.cmake.in
  ${PROJECT_BINARY_DIR}/hpcmlConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hpcml)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/hpcmlConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/hpcmlConfig.cmake ${PROJECT_BINARY_DIR}/hpcmlConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/hpcml)
