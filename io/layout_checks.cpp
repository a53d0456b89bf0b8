// The layout's checks: pure functions over what inspect() found, free of HDF5 calls
// so that tests/fuzz can drive them with arbitrary input.
#include "core/error.hpp"
#include "io/layout.hpp"

namespace hpcml::io {

namespace h5 {
std::string Shape::describe() const {
  std::string text;
  switch (kind) {
    case Kind::kFloat: text = "float" + std::to_string(element_size * 8); break;
    case Kind::kInteger: text = std::string(is_signed ? "int" : "uint") + std::to_string(element_size * 8); break;
    case Kind::kString: text = "string"; break;
    case Kind::kOther: text = "non-numeric"; break;
  }
  text += " (";
  for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
  if (dims.size() == 1) text += ",";
  return text + ")";
}

}  // namespace h5

namespace layout {

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
                   static_cast<int64_t>(request.item_rank) + 1, " axes (", field->collection.empty() ? "rows" : "items",
                   ", then ", request.item_rank, " per ", field->collection.empty() ? "row" : "item", "), found ",
                   shape.describe());
    if (field->collection.empty()) {
      HPCML_CHECK_AS(IoError, shape.dims[0] == info.rows, where, ": expected ", info.rows,
                     " rows (root attribute 'rows'), found ", shape.describe());
    }
    if (first) {
      const FieldInfo* reference = first->field(request.name);
      HPCML_CHECK_AS(IoError, reference != nullptr, where, ": not in '", first->path, "'");
      const auto& reference_dims = reference->shape.dims;  // a scalar there never matches
      const bool same_items = !reference_dims.empty() &&
                              std::vector<int64_t>(shape.dims.begin() + 1, shape.dims.end()) ==
                                  std::vector<int64_t>(reference_dims.begin() + 1, reference_dims.end());
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
    // count - 1 == rows, not count == rows + 1: rows may be INT64_MAX (a file's attribute).
    HPCML_CHECK_AS(IoError, count > 0 && count - 1 == rows, what, ": offsets has ", count, " entries, expected ",
                   static_cast<uint64_t>(rows) + 1, " (rows + 1)");
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

}  // namespace layout
}  // namespace hpcml::io
