/// @file
/// Append-only JSONL journals: one JSON object per line, each line written with one
/// write() and fsync'ed before append() returns, so a journal survives a kill at any
/// instant with at most its last line torn.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace hpcml::io {

/// The records of a journal file, in order.
struct JournalContents {
  std::vector<nlohmann::json> records;
  /// The last line was torn (cut short by a kill: no newline, or not JSON) and skipped.
  bool torn_tail = false;
};

/// Reads `path` ("" contents when it does not exist). A torn last line is skipped
/// (torn_tail); a line elsewhere that is not a JSON object throws IoError naming
/// the file and line number (the journal was edited or two writers shared it).
JournalContents read_journal(const std::string& path);

/// Appends records to one journal file. One writer per file (a farm's coordinator);
/// not thread-safe.
class JournalWriter {
 public:
  /// Opens `path` for appending, creating it (and fsyncing its directory) when
  /// missing. A torn last line left by a kill is cut off first, so the next record
  /// starts on a line of its own. Throws IoError naming the path and the reason.
  explicit JournalWriter(std::string path);
  ~JournalWriter();
  JournalWriter(const JournalWriter&) = delete;
  JournalWriter& operator=(const JournalWriter&) = delete;

  /// Writes `record` as one line and fsyncs. Throws IoError on a short write or a
  /// failed fsync (disk full, quota), naming the path and strerror.
  void append(const nlohmann::json& record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace hpcml::io
