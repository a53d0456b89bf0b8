# hpcml_add_layer(<layer> SOURCES ... [PUBLIC_DEPS ...] [PRIVATE_DEPS ...])
#
# Defines the static library hpcml_<layer> with the alias hpcml::<layer>.
# Headers are included by their path from the repository root
# ("collectives/backend.hpp"), and the generated "hpcml/config.hpp" sits in the
# build tree; both are exported for install under include/hpcml/.
function(hpcml_add_layer layer)
  cmake_parse_arguments(ARG "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  set(target hpcml_${layer})
  add_library(${target} STATIC ${ARG_SOURCES})
  add_library(hpcml::${layer} ALIAS ${target})
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${layer} OUTPUT_NAME hpcml_${layer})
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
    $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/generated>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/hpcml>)
  target_compile_features(${target} PUBLIC cxx_std_17)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  target_link_libraries(${target} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  install(TARGETS ${target} EXPORT hpcmlTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/hpcml/${layer}
          FILES_MATCHING PATTERN "*.hpp")
endfunction()

# hpcml_add_interface_layer(<layer> [PUBLIC_DEPS ...])
#
# A layer that has no compiled sources yet: the target exists so the layer
# graph (and find_package(hpcml)) is complete from the start.
function(hpcml_add_interface_layer layer)
  cmake_parse_arguments(ARG "" "" "PUBLIC_DEPS" ${ARGN})
  set(target hpcml_${layer})
  add_library(${target} INTERFACE)
  add_library(hpcml::${layer} ALIAS ${target})
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${layer})
  target_link_libraries(${target} INTERFACE ${ARG_PUBLIC_DEPS})
  install(TARGETS ${target} EXPORT hpcmlTargets)
endfunction()
