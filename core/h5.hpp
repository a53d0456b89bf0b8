/// @file
/// The checked wrapper for HDF5 C API calls.
#pragma once

#include <hdf5.h>

#include <string>

#include "core/error.hpp"

namespace hpcml {

/// HDF5's error stack of this thread as one line ("H5Fopen: unable to open file: ..."),
/// innermost cause last; cleared afterwards.
std::string h5_error_stack();

/// Silences HDF5's automatic stack printing: errors are reported through
/// HPCML_H5_CHECK instead. Call once per process (idempotent).
void h5_silence_auto_print();

/// "1.10.8", with " (parallel)" when built with MPI-IO.
std::string h5_version();

}  // namespace hpcml

namespace hpcml::detail {
/// "H5Dread" from the text "H5Dread(dataset, ...)".
inline std::string h5_function(const char* call) {
  const std::string text(call);
  return text.substr(0, text.find('('));
}
}  // namespace hpcml::detail

/// Evaluates an HDF5 call once; a negative result throws hpcml::IoError naming
/// `what` (file, dataset...), the HDF5 function and HDF5's own error stack:
/// "file 'a.h5' dataset 'x': H5Dread failed: H5Dread: can't read data; ...".
#define HPCML_H5_CHECK(call, what)                                                                        \
  ([&]() {                                                                                                \
    const auto hpcml_h5_rc_ = (call);                                                                     \
    if (hpcml_h5_rc_ < 0)                                                                                 \
      HPCML_THROW(::hpcml::IoError, what, ": ", ::hpcml::detail::h5_function(#call), " failed: ",         \
                  ::hpcml::h5_error_stack());                                                             \
    return hpcml_h5_rc_;                                                                                  \
  }())
