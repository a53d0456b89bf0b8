#include "core/h5.hpp"

namespace hpcml {

namespace {
herr_t collect(unsigned, const H5E_error2_t* error, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (!out->empty()) *out += "; ";
  *out += std::string(error->func_name ? error->func_name : "?") + ": " + (error->desc ? error->desc : "");
  return 0;
}
}  // namespace

std::string h5_error_stack() {
  std::string text;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, &collect, &text);
  H5Eclear2(H5E_DEFAULT);
  return text.empty() ? "no HDF5 error recorded" : text;
}

void h5_silence_auto_print() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

std::string h5_version() {
  unsigned major = 0, minor = 0, release = 0;
  H5get_libversion(&major, &minor, &release);
  std::string v = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release);
#ifdef H5_HAVE_PARALLEL
  v += " (parallel)";
#endif
  return v;
}

}  // namespace hpcml
