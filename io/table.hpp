/// @file
/// An in-memory block of events in hpcml's HDF5 layout (docs/data-layout.md), built
/// by generators and converters and written with write_table(). Torch-free.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace hpcml::io {

/// Element types the layout stores.
enum class DType { kFloat32, kFloat64, kInt32, kInt64 };

/// "float32", "int64", ...
const char* dtype_name(DType dtype);

/// One dataset: `shape[0]` rows (events, items or entries) of `shape[1:]` each, row-major.
struct Column {
  using Data = std::variant<std::vector<float>, std::vector<double>, std::vector<int32_t>, std::vector<int64_t>>;

  std::string name;
  std::vector<int64_t> shape;
  Data data;
  /// One unit per feature along the last axis, or a single unit for all ("GeV", "mm", "" for none).
  std::vector<std::string> units;
  /// Names of the features along the last axis (e.g. {"E", "px", "py", "pz"}); empty when 1-D.
  std::vector<std::string> features;

  DType dtype() const;
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  /// Elements per row (product of shape[1:]).
  int64_t row_elements() const;
};

/// A ragged collection (hits per event, constituents per jet): item datasets that share
/// `offsets`: event i owns items [offsets[i], offsets[i+1]).
struct Ragged {
  std::string name;
  std::vector<int64_t> offsets;  ///< rows + 1 entries, offsets[0] == 0, non-decreasing
  std::vector<Column> items;     ///< each with shape[0] == offsets.back(); "values" by convention
};

/// Events of one schema: fixed-shape per-event fields, ragged collections, and
/// per-file metadata that is not per event (a PSD, a detector geometry).
struct Table {
  std::string schema;      ///< "hpcml.jets"
  int schema_version = 1;  ///< bumped when the fields change meaning
  int64_t rows = 0;        ///< events
  std::vector<Column> fixed;
  std::vector<Ragged> ragged;
  std::vector<Column> meta;                      ///< written under /meta, any shape
  std::map<std::string, std::string> attributes;  ///< extra root string attributes (generator, seed...)
};

/// Writes `table` to `path` in the layout: to "<path>.tmp", fsynced, then renamed.
/// Checks the table first (shapes, offsets); throws hpcml::IoError naming the
/// file and dataset, with HDF5's own message.
void write_table(const std::string& path, const Table& table);

/// Reads the root datasets `names` of a file write_table wrote, each in its stored
/// dtype with its units and feature names (for concatenating parts of one table).
/// Throws hpcml::IoError naming the file and dataset.
std::vector<Column> read_columns(const std::string& path, const std::vector<std::string>& names);

/// Appends the rows of `more` to `into`; both must have the same name, dtype and
/// row shape (IoError otherwise).
void append_rows(Column& into, const Column& more);

/// Throws hpcml::IoError when `table` is inconsistent (a column's row count, an
/// offsets array, a data size that does not match its shape).
void check_table(const Table& table);

}  // namespace hpcml::io
