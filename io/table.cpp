#include "io/table.hpp"

#include <algorithm>
#include <cstdio>
#include <numeric>

#include "core/error.hpp"
#include "core/files.hpp"
#include "io/hdf5.hpp"
#include "io/layout.hpp"

namespace hpcml::io {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
  }
  return "?";
}

DType Column::dtype() const { return static_cast<DType>(data.index()); }

int64_t Column::row_elements() const {
  return std::accumulate(shape.begin() + (shape.empty() ? 0 : 1), shape.end(), int64_t{1}, std::multiplies<>());
}

namespace {

int64_t data_size(const Column::Data& data) {
  return std::visit([](const auto& v) { return static_cast<int64_t>(v.size()); }, data);
}

const void* data_pointer(const Column::Data& data) {
  return std::visit([](const auto& v) { return static_cast<const void*>(v.data()); }, data);
}

hid_t memory_type(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return H5T_NATIVE_FLOAT;
    case DType::kFloat64: return H5T_NATIVE_DOUBLE;
    case DType::kInt32: return H5T_NATIVE_INT32;
    case DType::kInt64: return H5T_NATIVE_INT64;
  }
  return H5T_NATIVE_FLOAT;
}

size_t element_bytes(DType dtype) { return dtype == DType::kFloat32 || dtype == DType::kInt32 ? 4 : 8; }

void check_column(const Column& c, const std::string& where, int64_t expected_rows) {
  HPCML_CHECK_AS(IoError, !c.shape.empty(), where, ": column '", c.name, "' has no shape");
  HPCML_CHECK_AS(IoError, expected_rows < 0 || c.shape[0] == expected_rows, where, ": column '", c.name,
                 "' has ", c.shape[0], " rows, expected ", expected_rows);
  HPCML_CHECK_AS(IoError, data_size(c.data) == c.rows() * c.row_elements(), where, ": column '", c.name, "' holds ",
                 data_size(c.data), " values, its shape needs ", c.rows() * c.row_elements());
  const int64_t last = c.shape.size() > 1 ? c.shape.back() : 1;
  HPCML_CHECK_AS(IoError, c.features.empty() || static_cast<int64_t>(c.features.size()) == last, where,
                 ": column '", c.name, "' names ", c.features.size(), " features, its last axis has ", last);
  HPCML_CHECK_AS(IoError, c.units.size() <= 1 || static_cast<int64_t>(c.units.size()) == last, where, ": column '",
                 c.name, "' gives ", c.units.size(), " units, expected 1 or ", last);
}

// About 1 MiB per chunk: big enough for sequential reads, small enough that a
// window of a few chunks stays in memory.
int64_t chunk_rows_for(const Column& c) {
  const int64_t row_bytes = std::max<int64_t>(1, c.row_elements() * static_cast<int64_t>(element_bytes(c.dtype())));
  return std::max<int64_t>(1, (int64_t{1} << 20) / row_bytes);
}

void write_column(hid_t location, const std::string& name, const Column& c, const std::string& file) {
  const std::string what = "file '" + file + "'";
  const h5::Id dataset =
      h5::write_dataset(location, name, memory_type(c.dtype()), c.shape, chunk_rows_for(c), data_pointer(c.data), what);
  h5::write_attribute(dataset.get(), std::string(layout::kUnitsAttribute),
                      c.units.empty() ? std::vector<std::string>{""} : c.units, what);
  if (!c.features.empty())
    h5::write_attribute(dataset.get(), std::string(layout::kFeaturesAttribute), c.features, what);
}

}  // namespace

void check_table(const Table& table) {
  const std::string where = "table '" + table.schema + "'";
  HPCML_CHECK_AS(IoError, !table.schema.empty(), "table: empty schema name");
  HPCML_CHECK_AS(IoError, table.rows >= 0, where, ": negative row count ", table.rows);
  for (const auto& c : table.fixed) check_column(c, where, table.rows);
  for (const auto& c : table.meta) check_column(c, where, -1);
  for (const auto& r : table.ragged) {
    const std::string what = where + " collection '" + r.name + "'";
    layout::check_offsets(r.offsets.data(), static_cast<int64_t>(r.offsets.size()), table.rows,
                          r.items.empty() ? -1 : r.items.front().rows(), 0, what);
    HPCML_CHECK_AS(IoError, !r.items.empty(), what, ": no item datasets");
    for (const auto& c : r.items) check_column(c, what, r.offsets.back());
  }
}

void write_table(const std::string& path, const Table& table) {
  check_table(table);
  PendingFile pending(path);
  const std::string& tmp = pending.temp_path();
  {
    h5::File file = h5::File::create(tmp);
    const hid_t root = file.get();
    const std::string what = "file '" + tmp + "'";
    h5::write_attribute(root, std::string(layout::kLayoutAttribute), int64_t{layout::kLayoutVersion}, what);
    h5::write_attribute(root, std::string(layout::kSchemaAttribute), table.schema, what);
    h5::write_attribute(root, std::string(layout::kSchemaVersionAttribute), int64_t{table.schema_version}, what);
    h5::write_attribute(root, std::string(layout::kRowsAttribute), table.rows, what);
    for (const auto& [key, value] : table.attributes) h5::write_attribute(root, key, value, what);
    for (const auto& c : table.fixed) write_column(root, c.name, c, tmp);
    for (const auto& r : table.ragged) {
      Column offsets{"offsets", {static_cast<int64_t>(r.offsets.size())}, r.offsets, {""}, {}};
      write_column(root, r.name + "/offsets", offsets, tmp);
      for (const auto& c : r.items) write_column(root, r.name + "/" + c.name, c, tmp);
    }
    for (const auto& c : table.meta) write_column(root, std::string(layout::kMetaGroup) + "/" + c.name, c, tmp);
    file.close();
  }
  pending.commit();
}

std::vector<Column> read_columns(const std::string& path, const std::vector<std::string>& names) {
  const h5::File file = h5::File::open(path);
  std::vector<Column> out;
  for (const auto& name : names) {
    const std::string what = "file '" + path + "': dataset '" + name + "'";
    const h5::Id dataset = h5::open_dataset(file, name);
    const h5::Shape shape = h5::shape_of(dataset.get(), what);
    HPCML_CHECK_AS(IoError, !shape.dims.empty() && (shape.kind == h5::Kind::kFloat || shape.kind == h5::Kind::kInteger)
                   && (shape.element_size == 4 || shape.element_size == 8), what,
                   ": expected float32/float64/int32/int64 rows, found ", shape.describe());
    Column c;
    c.name = name;
    c.shape = shape.dims;
    const auto elements = static_cast<size_t>(std::accumulate(shape.dims.begin(), shape.dims.end(), int64_t{1},
                                                              std::multiplies<>()));
    const bool wide = shape.element_size == 8;
    if (shape.kind == h5::Kind::kFloat) {
      if (wide) c.data = std::vector<double>(elements);
      else c.data = std::vector<float>(elements);
    } else {
      if (wide) c.data = std::vector<int64_t>(elements);
      else c.data = std::vector<int32_t>(elements);
    }
    void* into = std::visit([](auto& v) { return static_cast<void*>(v.data()); }, c.data);
    h5::read_rows(dataset.get(), shape, 0, shape.dims[0], memory_type(c.dtype()), into, what);
    c.units = h5::read_string_list_attribute(dataset.get(), std::string(layout::kUnitsAttribute), what);
    c.features = h5::read_string_list_attribute(dataset.get(), std::string(layout::kFeaturesAttribute), what);
    out.push_back(std::move(c));
  }
  return out;
}

void append_rows(Column& into, const Column& more) {
  const bool same_rows = into.shape.size() == more.shape.size() &&
                         std::equal(into.shape.begin() + 1, into.shape.end(), more.shape.begin() + 1);
  HPCML_CHECK_AS(IoError, into.name == more.name && into.dtype() == more.dtype() && same_rows, "column '", into.name,
                 "' (", dtype_name(into.dtype()), ") cannot take the rows of '", more.name, "' (",
                 dtype_name(more.dtype()), "): expected the same name, dtype and row shape");
  std::visit([&](auto& v) {
    using V = std::decay_t<decltype(v)>;
    const auto& w = std::get<V>(more.data);
    v.insert(v.end(), w.begin(), w.end());
  }, into.data);
  into.shape[0] += more.shape[0];
}

}  // namespace hpcml::io
