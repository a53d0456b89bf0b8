/// @file
/// hpcml's HDF5 layout (docs/data-layout.md): the names it uses, what a file of it
/// contains, and the checks a file must pass before any of its data is used.
/// Torch-free; the checks are pure functions so they can be fuzzed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "io/hdf5.hpp"

namespace hpcml::io::layout {

inline constexpr int kLayoutVersion = 1;
inline constexpr std::string_view kLayoutAttribute = "hpcml_layout";
inline constexpr std::string_view kSchemaAttribute = "schema";
inline constexpr std::string_view kSchemaVersionAttribute = "schema_version";
inline constexpr std::string_view kRowsAttribute = "rows";
inline constexpr std::string_view kUnitsAttribute = "units";
inline constexpr std::string_view kFeaturesAttribute = "features";
inline constexpr std::string_view kMetaGroup = "meta";
inline constexpr std::string_view kOffsets = "offsets";

/// One dataset of a file: a fixed field ("label") or a ragged item dataset
/// ("constituents/features").
struct FieldInfo {
  std::string name;
  h5::Shape shape;
  std::vector<std::string> features;
  std::vector<std::string> units;
  std::string collection;  ///< "" for fixed fields, else the ragged collection's name
};

/// The structure of one file, as found (no data read beyond attributes and two offsets).
struct FileInfo {
  std::string path;
  int64_t layout = 0;
  std::string schema;
  int64_t schema_version = 0;
  int64_t rows = 0;
  std::vector<FieldInfo> fields;  ///< fixed fields and ragged item datasets
  struct Collection {
    std::string name;
    h5::Shape offsets;
    int64_t first_offset = 0;  ///< offsets[0]
    int64_t last_offset = 0;   ///< offsets[rows]
  };
  std::vector<Collection> collections;

  const FieldInfo* field(const std::string& name) const;
  const Collection* collection(const std::string& name) const;
};

/// What a reader needs from a field.
enum class ElementKind { kAny, kFloat, kInteger };

struct FieldRequest {
  std::string name;                    ///< "label", "constituents/features"
  ElementKind kind = ElementKind::kAny;
  int item_rank = -1;                  ///< dimensions per row/item (excluding the first axis); -1: any
};

struct Expectation {
  std::string schema;          ///< "" accepts any
  int64_t schema_version = 0;  ///< 0 accepts any
  std::vector<FieldRequest> fields;
};

/// Reads the structure of an open file. Throws IoError naming the file and what is
/// missing (layout attributes, rows, an offsets dataset).
FileInfo inspect(const h5::File& file);

/// Checks `info` against `expected` and, when given, against the first file of the
/// same dataset (same schema version, same item shapes and features). Throws IoError
/// "file F: dataset D: expected X, found Y".
void validate(const FileInfo& info, const Expectation& expected, const FileInfo* first = nullptr);

/// Checks an offsets array (or a slice of one): `count` entries starting at entry
/// `first_index` of the dataset; each must be >= its predecessor (`previous` for
/// the first, -1 when none) and within [0, items]. With `rows` >= 0 the slice must
/// be the whole array: rows + 1 entries from 0 to items. Throws IoError naming `what`.
void check_offsets(const int64_t* offsets, int64_t count, int64_t rows, int64_t items, int64_t first_index,
                   const std::string& what, int64_t previous = -1);

}  // namespace hpcml::io::layout
