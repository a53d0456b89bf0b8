#include "core/files.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <utility>

#include "core/error.hpp"

namespace hpcml {

void fsync_file(const std::string& path) {
  if (FILE* f = std::fopen(path.c_str(), "rb")) {
    fsync(fileno(f));
    std::fclose(f);
  }
}

PendingFile::PendingFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {}

PendingFile::~PendingFile() {
  if (!committed_) std::remove(tmp_.c_str());
}

void PendingFile::commit() {
  fsync_file(tmp_);
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int error = errno;
    std::remove(tmp_.c_str());
    committed_ = true;  // nothing left to remove
    HPCML_THROW(IoError, "cannot write '", path_, "': renaming the finished '", tmp_, "' over it failed: ",
                std::strerror(error), error == EISDIR || error == ENOTEMPTY || error == EEXIST ? " (it is a directory)" : "");
  }
  committed_ = true;
}

void write_file_atomically(const std::string& path, const std::string& text) {
  PendingFile pending(path);
  {
    std::ofstream out(pending.temp_path(), std::ios::trunc);
    HPCML_CHECK_AS(IoError, out.good(), "cannot write '", pending.temp_path(), "': ", std::strerror(errno));
    out << text;
    out.flush();
    HPCML_CHECK_AS(IoError, out.good(), "write to '", pending.temp_path(), "' failed (disk full?)");
  }
  pending.commit();
}

void check_output_path(const std::string& path, const std::vector<std::string>& inputs, const std::string& option) {
  namespace fs = std::filesystem;
  std::error_code ec;
  HPCML_CHECK_AS(ConfigError, !fs::is_directory(path, ec), "config error: ", option, " '", path,
                 "' is a directory; give the path of a file to write");
  const fs::path parent = fs::path(path).parent_path();
  HPCML_CHECK_AS(ConfigError, parent.empty() || fs::is_directory(parent, ec), "config error: ", option, " '", path,
                 "': directory '", parent.string(), "' does not exist");
  if (!fs::exists(path, ec)) return;
  for (const auto& input : inputs) {
    if (input.empty() || !fs::exists(input, ec)) continue;
    HPCML_CHECK_AS(ConfigError, !fs::equivalent(path, input, ec), "config error: ", option, " '", path,
                   "' is the same file as the input '", input, "'; write the output elsewhere");
  }
}

}  // namespace hpcml
