#include "core/files.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "core/error.hpp"

namespace hpcml {

void fsync_file(const std::string& path) {
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    fsync(fileno(f));
    std::fclose(f);
  }
}

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    HPCML_CHECK_AS(IoError, out.good(), "cannot write '", tmp, "'");
    out << text;
    out.flush();
    HPCML_CHECK_AS(IoError, out.good(), "write to '", tmp, "' failed (disk full?)");
  }
  fsync_file(tmp);
  HPCML_CHECK_AS(IoError, std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename '", tmp, "' to '", path,
                 "': ", std::strerror(errno));
}

}  // namespace hpcml
