/// @file
/// A dataset spread over HDF5 files in hpcml's layout: row indices across files,
/// hyperslab reads of just the rows asked for, ragged collections as offsets + items.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "io/layout.hpp"

namespace hpcml::io {

/// Expands each entry: a glob pattern ("data/jets-*.h5", sorted matches) or a file
/// name. A pattern that matches nothing throws IoError naming it.
std::vector<std::string> expand_files(const std::vector<std::string>& patterns);

/// Rows of a dataset held in memory. Fixed fields are (n, ...) tensors; a ragged
/// collection is local offsets (n + 1, int64) plus item tensors (items, ...).
/// Floating-point data is float32, integer data int64.
struct Block {
  struct Ragged {
    at::Tensor offsets;
    std::map<std::string, at::Tensor> items;  ///< by item dataset name ("features")
  };
  std::vector<int64_t> rows;  ///< global row of each entry
  std::map<std::string, at::Tensor> fixed;
  std::map<std::string, Ragged> ragged;  ///< by collection name

  int64_t size() const { return static_cast<int64_t>(rows.size()); }
  /// The entries at `positions` (indices into this block), in that order.
  Block select(const std::vector<int64_t>& positions) const;
  /// Bytes of tensor data held.
  int64_t bytes() const;
};

/// How files are read.
enum class MpiIo {
  kOff,          ///< POSIX reads of each rank's own hyperslabs (default)
  kIndependent,  ///< through MPI-IO, each rank on its own
  kCollective,   ///< through MPI-IO, one collective read per file and dataset for all ranks
};

struct H5DatasetOptions {
  std::vector<std::string> files;  ///< files or glob patterns
  layout::Expectation expect;      ///< schema and the fields to read ("label", "hits/values")
  size_t max_open_files = 16;      ///< files kept open between reads (least recently used closed)
  /// With MPI-IO, every rank of `comm` opens the dataset and calls read() the same
  /// number of times (the Loader does: all ranks read the same number of windows);
  /// all files stay open, so it suits datasets of a few large files.
  MpiIo mpi_io = MpiIo::kOff;
  MPI_Comm comm = MPI_COMM_NULL;
};

/// Opens and checks every file (structure and the fields asked for), then reads rows
/// by global index. Thread-compatible: read() may run on a prefetch thread.
class H5Dataset {
 public:
  explicit H5Dataset(H5DatasetOptions options);
  ~H5Dataset();

  int64_t size() const { return total_rows_; }
  const std::vector<layout::FileInfo>& files() const { return files_; }
  const H5DatasetOptions& options() const { return options_; }

  /// Reads `rows` (global indices, any order, no duplicates needed) and returns them
  /// in ascending order of row. Contiguous rows of one file are one hyperslab read.
  /// Offsets are checked as they are read. Throws IoError naming file and dataset.
  Block read(std::vector<int64_t> rows) const;

  /// File index and local row of global `row`.
  std::pair<size_t, int64_t> locate(int64_t row) const;

 private:
  struct OpenFile;
  std::shared_ptr<OpenFile> open(size_t index) const;

  H5DatasetOptions options_;
  std::vector<layout::FileInfo> files_;
  std::vector<int64_t> starts_;  // first global row of each file, plus the total
  int64_t total_rows_ = 0;
  std::vector<std::string> fixed_fields_;                              // requested fixed fields
  std::map<std::string, std::vector<std::string>> ragged_fields_;      // collection -> item names

  std::vector<std::shared_ptr<OpenFile>> mpi_files_;  // with MPI-IO: every file, opened collectively
  mutable std::mutex mutex_;
  mutable std::list<std::pair<size_t, std::shared_ptr<OpenFile>>> open_files_;  // most recent first
};

}  // namespace hpcml::io
