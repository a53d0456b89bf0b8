#include "io/journal.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.hpp"

namespace hpcml::io {

namespace {

std::string reason() { return std::strerror(errno); }

void fsync_directory_of(const std::string& path) {
  const auto dir = std::filesystem::path(path).parent_path();
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

JournalContents read_journal(const std::string& path) {
  JournalContents out;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    HPCML_CHECK_AS(IoError, !std::filesystem::exists(path), "journal '", path, "': cannot be read: ", reason());
    return out;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  size_t start = 0;
  int line = 0;
  while (start < text.size()) {
    ++line;
    const size_t end = text.find('\n', start);
    const bool last = end == std::string::npos || end + 1 == text.size();
    const std::string body = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    start = end == std::string::npos ? text.size() : end + 1;
    auto record = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
    const bool good = record.is_object() && end != std::string::npos;
    if (good) {
      out.records.push_back(std::move(record));
      continue;
    }
    HPCML_CHECK_AS(IoError, last, "journal '", path, "' line ", line,
                   ": not a JSON object (the journal was edited, or two jobs wrote it at once); "
                   "expected one record per line");
    out.torn_tail = true;
  }
  return out;
}

JournalWriter::JournalWriter(std::string path) : path_(std::move(path)) {
  const bool existed = std::filesystem::exists(path_);
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  HPCML_CHECK_AS(IoError, fd_ >= 0, "journal '", path_, "': cannot be opened for appending: ", reason());
  // Cut a torn tail: everything after the last newline.
  const off_t size = ::lseek(fd_, 0, SEEK_END);
  off_t keep = size;
  char c = '\n';
  while (keep > 0) {
    if (::pread(fd_, &c, 1, keep - 1) != 1 || c == '\n') break;
    --keep;
  }
  if (keep != size) {
    HPCML_CHECK_AS(IoError, ::ftruncate(fd_, keep) == 0 && ::fsync(fd_) == 0, "journal '", path_,
                   "': cannot cut its torn last line: ", reason());
  }
  ::lseek(fd_, 0, SEEK_END);
  if (!existed) fsync_directory_of(path_);
}

JournalWriter::~JournalWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void JournalWriter::append(const nlohmann::json& record) {
  const std::string line = record.dump() + "\n";
  size_t written = 0;
  while (written < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + written, line.size() - written);
    if (n < 0 && errno == EINTR) continue;
    HPCML_CHECK_AS(IoError, n > 0, "journal '", path_, "': write failed after ", written, " of ", line.size(),
                   " bytes: ", reason());
    written += static_cast<size_t>(n);
  }
  HPCML_CHECK_AS(IoError, ::fsync(fd_) == 0, "journal '", path_, "': fsync failed: ", reason());
}

}  // namespace hpcml::io
