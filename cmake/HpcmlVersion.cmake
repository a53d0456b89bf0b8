# Records `git describe` of the source tree at configure time, for `hpcml info`
# and `hpcml --version`. Outside a git checkout the revision is "unknown".
find_package(Git QUIET)
set(HPCML_GIT_REVISION "unknown")
if(GIT_FOUND AND EXISTS ${PROJECT_SOURCE_DIR}/.git)
  execute_process(
    COMMAND ${GIT_EXECUTABLE} describe --always --dirty --abbrev=12
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    OUTPUT_VARIABLE _rev OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _rc ERROR_QUIET)
  if(_rc EQUAL 0 AND _rev)
    set(HPCML_GIT_REVISION "${_rev}")
  endif()
  # Re-run configure when HEAD moves so the revision stays current.
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/.git/HEAD)
  if(EXISTS ${PROJECT_SOURCE_DIR}/.git/index)
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/.git/index)
  endif()
endif()
message(STATUS "hpcml ${PROJECT_VERSION} (${HPCML_GIT_REVISION})")
