#include "core/error.hpp"

#include <cstring>

namespace hpcml {

namespace {
// Paths in messages are relative to the repository, not the build machine.
const char* short_path(const char* file) {
  for (const char* layer : {"/core/", "/collectives/", "/io/", "/hpo/", "/models/", "/launch/", "/tests/", "/examples/"}) {
    if (const char* p = std::strstr(file, layer)) return p + 1;
  }
  return file;
}
}  // namespace

Error::Error(const std::string& message, const char* file, int line, const char* condition)
    : std::runtime_error(message + (condition ? std::string(" [check failed: ") + condition + "]" : std::string()) +
                         " (" + short_path(file) + ":" + std::to_string(line) + ")"),
      message_(message),
      file_(short_path(file)),
      line_(line) {}

}  // namespace hpcml
