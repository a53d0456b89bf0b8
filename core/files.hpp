/// @file
/// Writing files so that a crash never leaves half of one.
#pragma once

#include <string>

namespace hpcml {

/// Writes `text` to "<path>.tmp", flushes it to disk, and renames it to `path`:
/// readers see the old file or the whole new one. Throws hpcml::IoError naming the file.
void write_file_atomically(const std::string& path, const std::string& text);

/// Flushes a file's data to disk (fsync); a missing file is ignored.
void fsync_file(const std::string& path);

}  // namespace hpcml
