#include "io/layout.hpp"

#include <tuple>
#include <utility>

#include "core/error.hpp"

namespace hpcml::io::layout {

namespace {

FieldInfo read_field(const h5::File& file, const std::string& name, const std::string& collection) {
  const std::string what = "file '" + file.path() + "' dataset '" + name + "'";
  h5::Id dataset = h5::open_dataset(file, name);
  FieldInfo field;
  field.name = name;
  field.collection = collection;
  field.shape = h5::shape_of(dataset.get(), what);
  field.features = h5::read_string_list_attribute(dataset.get(), std::string(kFeaturesAttribute), what);
  field.units = h5::read_string_list_attribute(dataset.get(), std::string(kUnitsAttribute), what);
  return field;
}

// offsets[0] and offsets[rows] of a collection, with one open of the dataset.
std::pair<int64_t, int64_t> read_offset_ends(const h5::File& file, const std::string& name, const h5::Shape& shape,
                                             int64_t rows) {
  const std::string what = "file '" + file.path() + "' dataset '" + name + "'";
  h5::Id dataset = h5::open_dataset(file, name);
  int64_t first = 0, last = 0;
  h5::read_rows(dataset.get(), shape, 0, 1, H5T_NATIVE_INT64, &first, what);
  h5::read_rows(dataset.get(), shape, rows, 1, H5T_NATIVE_INT64, &last, what);
  return {first, last};
}

}  // namespace

FileInfo inspect(const h5::File& file) {
  FileInfo info;
  info.path = file.path();
  const std::string what = "file '" + file.path() + "'";
  const hid_t root = file.get();
  HPCML_CHECK_AS(IoError, h5::has_attribute(root, std::string(kLayoutAttribute)), what,
                 ": not in hpcml's layout (root attribute '", kLayoutAttribute,
                 "' missing; see docs/data-layout.md)");
  info.layout = h5::read_int_attribute(root, std::string(kLayoutAttribute), what);
  HPCML_CHECK_AS(IoError, info.layout == kLayoutVersion, what, ": layout version ", info.layout,
                 ", this hpcml reads version ", kLayoutVersion);
  info.schema = h5::read_string_attribute(root, std::string(kSchemaAttribute), what);
  info.schema_version = h5::read_int_attribute(root, std::string(kSchemaVersionAttribute), what);
  info.rows = h5::read_int_attribute(root, std::string(kRowsAttribute), what);
  HPCML_CHECK_AS(IoError, info.rows >= 0 && info.rows < (int64_t{1} << 48), what, ": attribute 'rows' is ", info.rows,
                 ", expected a count in [0, 2^48)");

  for (const auto& name : h5::list_group(file, "/")) {
    if (name == kMetaGroup) continue;
    h5::Lock lock(h5::library_mutex());
    H5O_info_t object{};
    HPCML_H5_CHECK(H5Oget_info_by_name(root, name.c_str(), &object, H5P_DEFAULT), what + " object '" + name + "'");
    if (object.type == H5O_TYPE_DATASET) {
      info.fields.push_back(read_field(file, name, ""));
      continue;
    }
    if (object.type != H5O_TYPE_GROUP) continue;
    // A ragged collection: offsets plus item datasets.
    FileInfo::Collection collection;
    collection.name = name;
    const std::string offsets = name + "/" + std::string(kOffsets);
    const std::string where = what + " dataset '" + offsets + "'";
    HPCML_CHECK_AS(IoError, h5::exists(root, offsets), what, ": group '", name,
                   "' has no 'offsets' dataset (a ragged collection needs offsets of shape (", info.rows + 1,
                   ",))");
    {
      h5::Id dataset = h5::open_dataset(file, offsets);
      collection.offsets = h5::shape_of(dataset.get(), where);
    }
    const auto& dims = collection.offsets.dims;
    HPCML_CHECK_AS(IoError, collection.offsets.kind == h5::Kind::kInteger, where, ": expected integer offsets, found ",
                   collection.offsets.describe());
    HPCML_CHECK_AS(IoError, dims.size() == 1 && dims[0] == info.rows + 1, where, ": expected shape (", info.rows + 1,
                   ",) for ", info.rows, " rows, found ", collection.offsets.describe());
    std::tie(collection.first_offset, collection.last_offset) =
        read_offset_ends(file, offsets, collection.offsets, info.rows);
    HPCML_CHECK_AS(IoError, collection.first_offset == 0, where, ": offsets[0] = ", collection.first_offset,
                   ", expected 0");
    HPCML_CHECK_AS(IoError, collection.last_offset >= 0, where, ": offsets[", info.rows, "] = ", collection.last_offset,
                   ", expected >= 0");
    for (const auto& item : h5::list_group(file, name)) {
      if (item == kOffsets) continue;
      info.fields.push_back(read_field(file, name + "/" + item, name));
    }
    info.collections.push_back(collection);
  }
  return info;
}

}  // namespace hpcml::io::layout
