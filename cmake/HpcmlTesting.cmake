# Test registration helpers. Three tiers, told apart by CTest label:
#   unit  - serial GoogleTest binaries (<unit>_test.cpp)
#   mpi   - GoogleTest binaries under mpiexec (<unit>_mpi_test.cpp), at 2 and 3 ranks
#   cli   - the hpcml executable driven by Python (exit codes, messages, JSON)
# Later tiers (slurm, model) follow the same pattern.
find_package(GTest REQUIRED)

# mpiexec flags: oversubscription (3 ranks on 2 cores) and, as root, the flag
# Open MPI demands. Binding is left to mpirun's defaults except where a test says.
set(HPCML_MPIEXEC_PREFLAGS --oversubscribe)
execute_process(COMMAND id -u OUTPUT_VARIABLE _uid OUTPUT_STRIP_TRAILING_WHITESPACE)
if(_uid STREQUAL "0")
  list(APPEND HPCML_MPIEXEC_PREFLAGS --allow-run-as-root)
endif()
set(HPCML_MPIEXEC_TCP_FLAGS --mca btl self,tcp)
set(HPCML_PYTHON /usr/bin/python3 CACHE FILEPATH "Debian's python3 (has torch, h5py, numpy)")

# hpcml_add_unit_test(<name> SOURCES ... [LIBS ...] [TIMEOUT s] [NO_TORCH])
# NO_TORCH: a test of a layer without LibTorch (hpo): links GoogleTest and LIBS only, not the
# tensor test support (and its precompiled ATen header), so it builds in seconds.
function(hpcml_add_unit_test name)
  cmake_parse_arguments(ARG "NO_TORCH" "TIMEOUT" "SOURCES;LIBS" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  if(ARG_NO_TORCH)
    target_link_libraries(${name} PRIVATE GTest::gtest_main ${ARG_LIBS})
  else()
    target_link_libraries(${name} PRIVATE hpcml_test_support GTest::gtest_main ${ARG_LIBS})
    target_precompile_headers(${name} REUSE_FROM hpcml_test_support)
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS unit TIMEOUT ${ARG_TIMEOUT})
endfunction()

# hpcml_add_mpi_test(<name> SOURCES ... [NP n ...] [TCP] [LIBS ...] [TIMEOUT s])
# Registers <name>_np<N> for each N, and with TCP also <name>_np<N>_tcp, which
# forces Open MPI's TCP transport so the network path is exercised on one host.
function(hpcml_add_mpi_test name)
  cmake_parse_arguments(ARG "TCP" "TIMEOUT" "SOURCES;LIBS;NP" ${ARGN})
  if(NOT ARG_NP)
    set(ARG_NP 2 3)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE hpcml_test_support_mpi ${ARG_LIBS})
  target_precompile_headers(${name} REUSE_FROM hpcml_test_support)
  set(transports shm)
  if(ARG_TCP)
    list(APPEND transports tcp)
  endif()
  foreach(np IN LISTS ARG_NP)
    foreach(transport IN LISTS transports)
      set(test_name ${name}_np${np})
      set(extra "")
      if(transport STREQUAL "tcp")
        set(test_name ${test_name}_tcp)
        set(extra ${HPCML_MPIEXEC_TCP_FLAGS})
      endif()
      add_test(NAME ${test_name}
               COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${HPCML_MPIEXEC_PREFLAGS} ${extra}
                       $<TARGET_FILE:${name}> ${MPIEXEC_POSTFLAGS})
      set_tests_properties(${test_name} PROPERTIES LABELS mpi PROCESSORS ${np} TIMEOUT ${ARG_TIMEOUT})
    endforeach()
  endforeach()
endfunction()

# hpcml_add_python_test(<name> SCRIPT file [LABEL l] [TIMEOUT s])
# Runs a Python unittest file with Debian's interpreter; the environment tells it
# where the hpcml binary, mpiexec and the source tree are. tests/support/python_gate.py
# first checks the modules the tests need: missing, the test skips with one line
# (exit 77), or fails with it when CI=true.
function(hpcml_add_python_test name)
  cmake_parse_arguments(ARG "" "SCRIPT;LABEL;TIMEOUT" "" ${ARGN})
  if(NOT ARG_LABEL)
    set(ARG_LABEL cli)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  list(JOIN HPCML_MPIEXEC_PREFLAGS " " preflags)
  add_test(NAME ${name} COMMAND ${HPCML_PYTHON} ${PROJECT_SOURCE_DIR}/tests/support/python_gate.py ${ARG_SCRIPT})
  set_tests_properties(${name} PROPERTIES LABELS ${ARG_LABEL} TIMEOUT ${ARG_TIMEOUT} SKIP_RETURN_CODE 77
    ENVIRONMENT "HPCML_BIN=$<TARGET_FILE:hpcml>;HPCML_BUILD_DIR=${PROJECT_BINARY_DIR};HPCML_SOURCE_DIR=${PROJECT_SOURCE_DIR};MPIEXEC=${MPIEXEC_EXECUTABLE};MPIEXEC_PREFLAGS=${preflags}"
    WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
endfunction()
