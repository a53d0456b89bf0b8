/// @file
/// A thin RAII layer over the HDF5 C API: handles that close themselves, every call
/// checked (errors carry the file, the object and HDF5's own message), and one
/// process-wide lock, because Debian's parallel HDF5 is not built thread-safe and
/// the prefetch thread reads while other threads may write.
#pragma once

#include <hdf5.h>
#include <mpi.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "core/h5.hpp"

namespace hpcml::io::h5 {

/// Serialises every HDF5 call in the process. Hold it around any direct H5* call.
std::recursive_mutex& library_mutex();
using Lock = std::lock_guard<std::recursive_mutex>;

/// An HDF5 identifier that closes itself (H5Fclose, H5Dclose, ... chosen by type).
class Id {
 public:
  Id() = default;
  explicit Id(hid_t id) : id_(id) {}
  ~Id() { reset(); }
  Id(Id&& other) noexcept : id_(other.id_) { other.id_ = H5I_INVALID_HID; }
  Id& operator=(Id&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = other.id_;
      other.id_ = H5I_INVALID_HID;
    }
    return *this;
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset();
  /// Gives up ownership: the caller closes the returned id.
  hid_t release() {
    const hid_t id = id_;
    id_ = H5I_INVALID_HID;
    return id;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

/// Element class of a dataset as the layout sees it.
enum class Kind { kFloat, kInteger, kString, kOther };

/// Shape and element type of a dataset.
struct Shape {
  std::vector<int64_t> dims;
  Kind kind = Kind::kOther;
  size_t element_size = 0;  ///< bytes in the file
  bool is_signed = true;
  std::vector<int64_t> chunk;  ///< chunk dims, empty when contiguous
  /// "float32 (1000, 4)", for messages.
  std::string describe() const;
};

/// A file opened for reading, or created for writing. `path` is kept for messages.
class File {
 public:
  /// Opens read-only. Missing or unreadable files throw IoError naming the file
  /// (and "not an HDF5 file" for truncated or foreign files). With a communicator,
  /// through MPI-IO: collective, every rank of `comm` opens the same file.
  static File open(const std::string& path, MPI_Comm comm = MPI_COMM_NULL);
  /// Creates (truncating) a file.
  static File create(const std::string& path);

  hid_t get() const { return id_.get(); }
  const std::string& path() const { return path_; }
  /// Flushes and closes now (errors throw); the destructor closes silently.
  void close();

 private:
  Id id_;
  std::string path_;
};

/// True when `name` (a path such as "hits/offsets") exists below `location`.
bool exists(hid_t location, const std::string& name);

/// Opens a dataset; a missing one throws IoError "file F: dataset D not found".
Id open_dataset(const File& file, const std::string& name);

/// Shape, type and chunking of an open dataset.
Shape shape_of(hid_t dataset, const std::string& what);

/// Reads rows [start, start + count) of the first axis of `dataset` into `out`,
/// converted to `memory_type` (H5T_NATIVE_FLOAT...); `out` holds count * row elements.
void read_rows(hid_t dataset, const Shape& shape, int64_t start, int64_t count, hid_t memory_type, void* out,
               const std::string& what);

/// Rows [start, start + count) of the first axis.
struct RowRange {
  int64_t start = 0;
  int64_t count = 0;
};

/// Reads the union of `ranges` (ascending, disjoint; may be empty) into `out`, one
/// range after the other, in one H5Dread. With `collective` the read is one
/// collective MPI-IO operation: every rank of the file's communicator must make the
/// same call for this dataset, each with its own ranges (empty ones included).
void read_row_ranges(hid_t dataset, const Shape& shape, const std::vector<RowRange>& ranges, hid_t memory_type,
                     void* out, bool collective, const std::string& what);

/// Creates a group (and its parents).
Id create_group(hid_t location, const std::string& name, const std::string& what);

/// Creates and writes a dataset of `dims`, chunked along the first axis by
/// `chunk_rows` rows (0: contiguous), from `data` in `memory_type`; returns it open
/// (for attributes).
Id write_dataset(hid_t location, const std::string& name, hid_t memory_type, const std::vector<int64_t>& dims,
                   int64_t chunk_rows, const void* data, const std::string& what);

/// Attributes: scalar strings (variable-length UTF-8, read by h5py as str), int64
/// scalars and string arrays.
void write_attribute(hid_t object, const std::string& name, const std::string& value, const std::string& what);
void write_attribute(hid_t object, const std::string& name, int64_t value, const std::string& what);
void write_attribute(hid_t object, const std::string& name, const std::vector<std::string>& values,
                     const std::string& what);
bool has_attribute(hid_t object, const std::string& name);
/// Reads a string attribute (fixed or variable length); throws IoError naming it when missing or not a string.
std::string read_string_attribute(hid_t object, const std::string& name, const std::string& what);
int64_t read_int_attribute(hid_t object, const std::string& name, const std::string& what);
/// A 1-D string array attribute, or a scalar string as one element; [] when absent.
std::vector<std::string> read_string_list_attribute(hid_t object, const std::string& name, const std::string& what);

/// Names of the links directly in group `name` of `file` ("/" for the root).
std::vector<std::string> list_group(const File& file, const std::string& name);

}  // namespace hpcml::io::h5
