#include "io/layout.hpp"

#include "core/error.hpp"

namespace hpcml::io::layout {

namespace {

const char* kind_name(ElementKind kind) {
  switch (kind) {
    case ElementKind::kAny: return "any number";
    case ElementKind::kFloat: return "a floating-point type";
    case ElementKind::kInteger: return "an integer type";
  }
  return "?";
}

std::string shape_text(const std::vector<int64_t>& dims, size_t from) {
  std::string text = "(";
  for (size_t i = from; i < dims.size(); ++i) text += (i > from ? ", " : "") + std::to_string(dims[i]);
  return text + ")";
}

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

int64_t read_offset(const h5::File& file, const std::string& name, const h5::Shape& shape, int64_t index) {
  int64_t value = 0;
  h5::Id dataset = h5::open_dataset(file, name);
  h5::read_rows(dataset.get(), shape, index, 1, H5T_NATIVE_INT64, &value,
                "file '" + file.path() + "' dataset '" + name + "'");
  return value;
}

}  // namespace

const FieldInfo* FileInfo::field(const std::string& name) const {
  for (const auto& f : fields)
    if (f.name == name) return &f;
  return nullptr;
}

const FileInfo::Collection* FileInfo::collection(const std::string& name) const {
  for (const auto& c : collections)
    if (c.name == name) return &c;
  return nullptr;
}

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
  HPCML_CHECK_AS(IoError, info.rows >= 0, what, ": attribute 'rows' is ", info.rows, ", expected >= 0");

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
    collection.first_offset = read_offset(file, offsets, collection.offsets, 0);
    collection.last_offset = read_offset(file, offsets, collection.offsets, info.rows);
    HPCML_CHECK_AS(IoError, collection.first_offset == 0, where, ": offsets[0] = ", collection.first_offset,
                   ", expected 0");
    for (const auto& item : h5::list_group(file, name)) {
      if (item == kOffsets) continue;
      info.fields.push_back(read_field(file, name + "/" + item, name));
    }
    info.collections.push_back(collection);
  }
  return info;
}

void validate(const FileInfo& info, const Expectation& expected, const FileInfo* first) {
  const std::string what = "file '" + info.path + "'";
  HPCML_CHECK_AS(IoError, expected.schema.empty() || info.schema == expected.schema, what, ": schema '", info.schema,
                 "', expected '", expected.schema, "'");
  HPCML_CHECK_AS(IoError, expected.schema_version == 0 || info.schema_version == expected.schema_version, what,
                 ": schema '", info.schema, "' version ", info.schema_version, ", expected version ",
                 expected.schema_version);
  if (first) {
    HPCML_CHECK_AS(IoError, info.schema == first->schema && info.schema_version == first->schema_version, what,
                   ": schema '", info.schema, "' version ", info.schema_version, ", but '", first->path, "' has '",
                   first->schema, "' version ", first->schema_version, " (all files of a dataset share one)");
  }
  for (const auto& collection : info.collections) {
    for (const auto& field : info.fields) {
      if (field.collection != collection.name) continue;
      HPCML_CHECK_AS(IoError, !field.shape.dims.empty() && field.shape.dims[0] == collection.last_offset, what,
                     ": dataset '", field.name, "': expected ", collection.last_offset, " items (offsets[", info.rows,
                     "]), found ", field.shape.describe());
    }
  }
  for (const auto& request : expected.fields) {
    const FieldInfo* field = info.field(request.name);
    if (!field) {
      std::string available;
      for (const auto& f : info.fields) available += (available.empty() ? "" : ", ") + f.name;
      HPCML_THROW(IoError, what, ": dataset '", request.name, "' not found (schema '", info.schema,
                  "' has: ", available.empty() ? "nothing" : available, ")");
    }
    const std::string where = what + ": dataset '" + request.name + "'";
    const auto& shape = field->shape;
    const bool numeric = shape.kind == h5::Kind::kFloat || shape.kind == h5::Kind::kInteger;
    HPCML_CHECK_AS(IoError, numeric, where, ": expected ", kind_name(request.kind), ", found ", shape.describe());
    HPCML_CHECK_AS(IoError,
                   request.kind == ElementKind::kAny ||
                       (request.kind == ElementKind::kFloat) == (shape.kind == h5::Kind::kFloat),
                   where, ": expected ", kind_name(request.kind), ", found ", shape.describe());
    HPCML_CHECK_AS(IoError, !shape.dims.empty(), where, ": expected at least one axis, found a scalar");
    const int item_rank = static_cast<int>(shape.dims.size()) - 1;
    HPCML_CHECK_AS(IoError, request.item_rank < 0 || item_rank == request.item_rank, where, ": expected ",
                   request.item_rank + 1, " axes (", field->collection.empty() ? "rows" : "items", ", then ",
                   request.item_rank, " per ", field->collection.empty() ? "row" : "item", "), found ",
                   shape.describe());
    if (field->collection.empty()) {
      HPCML_CHECK_AS(IoError, shape.dims[0] == info.rows, where, ": expected ", info.rows,
                     " rows (root attribute 'rows'), found ", shape.describe());
    }
    if (first) {
      const FieldInfo* reference = first->field(request.name);
      HPCML_CHECK_AS(IoError, reference != nullptr, where, ": not in '", first->path, "'");
      const bool same_items = std::vector<int64_t>(shape.dims.begin() + 1, shape.dims.end()) ==
                              std::vector<int64_t>(reference->shape.dims.begin() + 1, reference->shape.dims.end());
      HPCML_CHECK_AS(IoError, same_items && shape.kind == reference->shape.kind, where, ": ", shape.describe(),
                     " per-row shape ", shape_text(shape.dims, 1), ", but '", first->path, "' has ",
                     reference->shape.describe());
      HPCML_CHECK_AS(IoError, field->features == reference->features, where, ": features differ from '",
                     first->path, "'");
    }
  }
}

void check_offsets(const int64_t* offsets, int64_t count, int64_t rows, int64_t items, int64_t first_index,
                   const std::string& what, int64_t previous) {
  if (rows >= 0) {
    HPCML_CHECK_AS(IoError, count == rows + 1, what, ": offsets has ", count, " entries, expected ", rows + 1,
                   " (rows + 1)");
    HPCML_CHECK_AS(IoError, count > 0 && offsets[0] == 0, what, ": offsets[0] = ", count > 0 ? offsets[0] : -1,
                   ", expected 0");
  }
  for (int64_t i = 0; i < count; ++i) {
    const int64_t v = offsets[i];
    const int64_t index = first_index + i;
    if (i > 0) previous = offsets[i - 1];
    HPCML_CHECK_AS(IoError, previous < 0 || v >= previous, what, ": offsets are not non-decreasing: offsets[", index,
                   "] = ", v, " < offsets[", index - 1, "] = ", previous);
    HPCML_CHECK_AS(IoError, v >= 0 && (items < 0 || v <= items), what, ": offsets[", index, "] = ", v,
                   " out of range [0, ", items, "]");
  }
  if (rows >= 0 && items >= 0 && count > 0) {
    HPCML_CHECK_AS(IoError, offsets[count - 1] == items, what, ": offsets[", count - 1, "] = ", offsets[count - 1],
                   ", expected ", items, " (the number of items)");
  }
}

}  // namespace hpcml::io::layout
