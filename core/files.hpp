/// @file
/// Writing files so that a crash never leaves half of one.
#pragma once

#include <string>
#include <vector>

namespace hpcml {

/// Writes `text` to "<path>.tmp", flushes it to disk, and renames it to `path`:
/// readers see the old file or the whole new one. Throws hpcml::IoError naming the file.
void write_file_atomically(const std::string& path, const std::string& text);

/// Flushes a file's data to disk (fsync); a missing file is ignored.
void fsync_file(const std::string& path);

/// A file written under a temporary name beside its destination ("<path>.tmp", in
/// the same directory, so the rename is atomic) and renamed over it by commit().
/// Destroyed without commit() (an error on the way), the temporary file is removed.
class PendingFile {
 public:
  explicit PendingFile(std::string path);
  ~PendingFile();
  PendingFile(const PendingFile&) = delete;
  PendingFile& operator=(const PendingFile&) = delete;
  /// Where to write.
  const std::string& temp_path() const { return tmp_; }
  /// fsync, then rename to the destination. Throws IoError naming both paths and
  /// the reason (strerror); the temporary file is removed then.
  void commit();

 private:
  std::string path_, tmp_;
  bool committed_ = false;
};

/// Refuses (hpcml::ConfigError) an output path `option` ("-o/--output") that is an
/// existing directory, lies in a directory that does not exist, or is the same file
/// as one of `inputs` (the command's data files,
/// checkpoint, config; empty entries and missing files are skipped), so an output
/// never replaces what the command reads.
void check_output_path(const std::string& path, const std::vector<std::string>& inputs, const std::string& option);

}  // namespace hpcml
