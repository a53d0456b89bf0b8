#include "io/hdf5.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>

#include "core/error.hpp"

namespace hpcml::io::h5 {

std::recursive_mutex& library_mutex() {
  static std::recursive_mutex mutex;
  return mutex;
}

void Id::reset() {
  if (id_ < 0) return;
  Lock lock(library_mutex());
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: break;
  }
  id_ = H5I_INVALID_HID;
}

File File::open(const std::string& path, MPI_Comm comm) {
  Lock lock(library_mutex());
  h5_silence_auto_print();
  struct stat info {};
  HPCML_CHECK_AS(IoError, ::stat(path.c_str(), &info) == 0, "file '", path, "': not found");
  HPCML_CHECK_AS(IoError, S_ISREG(info.st_mode), "file '", path, "': not a regular file");
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
  if (is_hdf5 <= 0) {
    h5_error_stack();  // clear
    HPCML_THROW(IoError, "file '", path, "': not an HDF5 file (", info.st_size,
                " bytes; truncated or corrupt, expected an HDF5 signature)");
  }
  File file;
  file.path_ = path;
  Id access(HPCML_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS), "file '" + path + "'"));
  if (comm != MPI_COMM_NULL) {
#ifdef H5_HAVE_PARALLEL
    HPCML_H5_CHECK(H5Pset_fapl_mpio(access.get(), comm, MPI_INFO_NULL), "file '" + path + "'");
#else
    HPCML_THROW(IoError, "file '", path, "': MPI-IO requested, but this HDF5 is serial");
#endif
  }
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, access.get());
  HPCML_CHECK_AS(IoError, id >= 0, "file '", path, "': cannot open (truncated or corrupt?): ", h5_error_stack());
  file.id_ = Id(id);
  return file;
}

File File::create(const std::string& path) {
  Lock lock(library_mutex());
  h5_silence_auto_print();
  File file;
  file.path_ = path;
  file.id_ = Id(HPCML_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "file '" + path + "'"));
  return file;
}

void File::close() {
  if (!id_.valid()) return;
  Lock lock(library_mutex());
  HPCML_H5_CHECK(H5Fflush(id_.get(), H5F_SCOPE_LOCAL), "file '" + path_ + "'");
  HPCML_H5_CHECK(H5Fclose(id_.release()), "file '" + path_ + "'");
}

bool exists(hid_t location, const std::string& name) {
  Lock lock(library_mutex());
  // H5Lexists needs every intermediate link to exist: walk the path.
  std::string prefix;
  size_t start = 0;
  while (start <= name.size()) {
    const size_t slash = name.find('/', start);
    const std::string part = name.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (!part.empty()) {
      prefix += (prefix.empty() ? "" : "/") + part;
      const htri_t found = H5Lexists(location, prefix.c_str(), H5P_DEFAULT);
      if (found <= 0) {
        h5_error_stack();
        return false;
      }
    }
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return true;
}

Id open_dataset(const File& file, const std::string& name) {
  Lock lock(library_mutex());
  HPCML_CHECK_AS(IoError, exists(file.get(), name), "file '", file.path(), "': dataset '", name, "' not found");
  const H5O_type_t type = [&] {
    H5O_info_t info{};
    HPCML_H5_CHECK(H5Oget_info_by_name(file.get(), name.c_str(), &info, H5P_DEFAULT),
                   "file '" + file.path() + "' object '" + name + "'");
    return info.type;
  }();
  HPCML_CHECK_AS(IoError, type == H5O_TYPE_DATASET, "file '", file.path(), "': '", name,
                 "' is not a dataset (expected a dataset, found a group or other object)");
  // No chunk cache: reads take whole chunks straight into the caller's buffer, and a
  // cache per open dataset would make memory grow with the number of open files.
  const std::string what = "file '" + file.path() + "' dataset '" + name + "'";
  Id access(HPCML_H5_CHECK(H5Pcreate(H5P_DATASET_ACCESS), what));
  HPCML_H5_CHECK(H5Pset_chunk_cache(access.get(), H5D_CHUNK_CACHE_NSLOTS_DEFAULT, 0, H5D_CHUNK_CACHE_W0_DEFAULT), what);
  return Id(HPCML_H5_CHECK(H5Dopen2(file.get(), name.c_str(), access.get()), what));
}

Shape shape_of(hid_t dataset, const std::string& what) {
  Lock lock(library_mutex());
  Shape shape;
  Id space(HPCML_H5_CHECK(H5Dget_space(dataset), what));
  const int rank = HPCML_H5_CHECK(H5Sget_simple_extent_ndims(space.get()), what);
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) HPCML_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), what);
  shape.dims.assign(dims.begin(), dims.end());
  Id type(HPCML_H5_CHECK(H5Dget_type(dataset), what));
  switch (H5Tget_class(type.get())) {
    case H5T_FLOAT: shape.kind = Kind::kFloat; break;
    case H5T_INTEGER:
      shape.kind = Kind::kInteger;
      shape.is_signed = H5Tget_sign(type.get()) == H5T_SGN_2;
      break;
    case H5T_STRING: shape.kind = Kind::kString; break;
    default: shape.kind = Kind::kOther; break;
  }
  shape.element_size = H5Tget_size(type.get());
  Id plist(HPCML_H5_CHECK(H5Dget_create_plist(dataset), what));
  if (H5Pget_layout(plist.get()) == H5D_CHUNKED && rank > 0) {
    std::vector<hsize_t> chunk(static_cast<size_t>(rank));
    HPCML_H5_CHECK(H5Pget_chunk(plist.get(), rank, chunk.data()), what);
    shape.chunk.assign(chunk.begin(), chunk.end());
  }
  return shape;
}

void read_rows(hid_t dataset, const Shape& shape, int64_t start, int64_t count, hid_t memory_type, void* out,
               const std::string& what) {
  HPCML_CHECK_AS(IoError, !shape.dims.empty() && start >= 0 && count >= 0 && start + count <= shape.dims[0],
                 what, ": rows [", start, ", ", start + count, ") outside ", shape.describe());
  if (count == 0) return;
  Lock lock(library_mutex());
  Id file_space(HPCML_H5_CHECK(H5Dget_space(dataset), what));
  std::vector<hsize_t> offset(shape.dims.size(), 0), extent(shape.dims.begin(), shape.dims.end());
  offset[0] = static_cast<hsize_t>(start);
  extent[0] = static_cast<hsize_t>(count);
  HPCML_H5_CHECK(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, offset.data(), nullptr, extent.data(), nullptr),
                 what);
  Id memory_space(
      HPCML_H5_CHECK(H5Screate_simple(static_cast<int>(extent.size()), extent.data(), nullptr), what));
  HPCML_H5_CHECK(H5Dread(dataset, memory_type, memory_space.get(), file_space.get(), H5P_DEFAULT, out),
                 what + " rows [" + std::to_string(start) + ", " + std::to_string(start + count) + ")");
}

void read_row_ranges(hid_t dataset, const Shape& shape, const std::vector<RowRange>& ranges, hid_t memory_type,
                     void* out, bool collective, const std::string& what) {
  HPCML_CHECK_AS(IoError, !shape.dims.empty(), what, ": expected at least one axis, found a scalar");
  int64_t total = 0;
  for (const auto& r : ranges) {
    HPCML_CHECK_AS(IoError, r.start >= 0 && r.count >= 0 && r.start + r.count <= shape.dims[0], what, ": rows [",
                   r.start, ", ", r.start + r.count, ") outside ", shape.describe());
    total += r.count;
  }
  if (total == 0 && !collective) return;
  if (!collective && ranges.size() > 1) {
    // Independent reads: one regular hyperslab per range. (A union built with
    // H5S_SELECT_OR is an irregular selection, which HDF5 1.10 reads far slower.)
    const int64_t row_bytes = static_cast<int64_t>(H5Tget_size(memory_type)) *
                              std::accumulate(shape.dims.begin() + 1, shape.dims.end(), int64_t{1}, std::multiplies<>());
    auto* cursor = static_cast<char*>(out);
    for (const auto& r : ranges) {
      read_rows(dataset, shape, r.start, r.count, memory_type, cursor, what);
      cursor += r.count * row_bytes;
    }
    return;
  }
  Lock lock(library_mutex());
  Id file_space(HPCML_H5_CHECK(H5Dget_space(dataset), what));
  std::vector<hsize_t> offset(shape.dims.size(), 0), extent(shape.dims.begin(), shape.dims.end());
  HPCML_H5_CHECK(H5Sselect_none(file_space.get()), what);
  bool first = true;
  for (const auto& r : ranges) {
    if (r.count == 0) continue;
    offset[0] = static_cast<hsize_t>(r.start);
    extent[0] = static_cast<hsize_t>(r.count);
    HPCML_H5_CHECK(H5Sselect_hyperslab(file_space.get(), first ? H5S_SELECT_SET : H5S_SELECT_OR, offset.data(), nullptr,
                                       extent.data(), nullptr),
                   what);
    first = false;
  }
  extent[0] = static_cast<hsize_t>(std::max<int64_t>(total, 1));
  Id memory_space(HPCML_H5_CHECK(H5Screate_simple(static_cast<int>(extent.size()), extent.data(), nullptr), what));
  if (total == 0) HPCML_H5_CHECK(H5Sselect_none(memory_space.get()), what);
  Id transfer(HPCML_H5_CHECK(H5Pcreate(H5P_DATASET_XFER), what));
#ifdef H5_HAVE_PARALLEL
  if (collective) HPCML_H5_CHECK(H5Pset_dxpl_mpio(transfer.get(), H5FD_MPIO_COLLECTIVE), what);
#endif
  char placeholder[16];
  HPCML_H5_CHECK(H5Dread(dataset, memory_type, memory_space.get(), file_space.get(), transfer.get(),
                         total == 0 ? static_cast<void*>(placeholder) : out),
                 what + (collective ? " (collective MPI-IO read)" : ""));
}

Id create_group(hid_t location, const std::string& name, const std::string& what) {
  Lock lock(library_mutex());
  Id plist(HPCML_H5_CHECK(H5Pcreate(H5P_LINK_CREATE), what));
  HPCML_H5_CHECK(H5Pset_create_intermediate_group(plist.get(), 1), what);
  return Id(HPCML_H5_CHECK(H5Gcreate2(location, name.c_str(), plist.get(), H5P_DEFAULT, H5P_DEFAULT),
                           what + " group '" + name + "'"));
}

Id write_dataset(hid_t location, const std::string& name, hid_t memory_type, const std::vector<int64_t>& dims,
                 int64_t chunk_rows, const void* data, const std::string& what) {
  Lock lock(library_mutex());
  const std::string where = what + " dataset '" + name + "'";
  std::vector<hsize_t> extent(dims.begin(), dims.end());
  Id space(HPCML_H5_CHECK(H5Screate_simple(static_cast<int>(extent.size()), extent.data(), nullptr), where));
  Id create(HPCML_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE), where));
  if (chunk_rows > 0 && !dims.empty() && dims[0] > 0) {
    std::vector<hsize_t> chunk = extent;
    chunk[0] = static_cast<hsize_t>(std::min<int64_t>(chunk_rows, dims[0]));
    HPCML_H5_CHECK(H5Pset_chunk(create.get(), static_cast<int>(chunk.size()), chunk.data()), where);
  }
  Id link(HPCML_H5_CHECK(H5Pcreate(H5P_LINK_CREATE), where));
  HPCML_H5_CHECK(H5Pset_create_intermediate_group(link.get(), 1), where);
  Id dataset(HPCML_H5_CHECK(
      H5Dcreate2(location, name.c_str(), memory_type, space.get(), link.get(), create.get(), H5P_DEFAULT), where));
  HPCML_H5_CHECK(H5Dwrite(dataset.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), where);
  return dataset;
}

namespace {
Id string_type(const std::string& what) {
  Id type(HPCML_H5_CHECK(H5Tcopy(H5T_C_S1), what));
  HPCML_H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE), what);
  HPCML_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8), what);
  return type;
}

Id new_attribute(hid_t object, const std::string& name, hid_t type, hid_t space, const std::string& what) {
  if (H5Aexists(object, name.c_str()) > 0) HPCML_H5_CHECK(H5Adelete(object, name.c_str()), what);
  return Id(HPCML_H5_CHECK(H5Acreate2(object, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT),
                           what + " attribute '" + name + "'"));
}

Id open_attribute(hid_t object, const std::string& name, const std::string& what) {
  HPCML_CHECK_AS(IoError, H5Aexists(object, name.c_str()) > 0, what, ": attribute '", name, "' not found");
  return Id(HPCML_H5_CHECK(H5Aopen(object, name.c_str(), H5P_DEFAULT), what + " attribute '" + name + "'"));
}

// Reads `count` strings of attribute `attr` (variable or fixed length).
std::vector<std::string> read_strings(hid_t attr, hid_t file_type, size_t count, const std::string& where) {
  std::vector<std::string> out;
  if (H5Tis_variable_str(file_type) > 0) {
    Id memory = string_type(where);
    std::vector<char*> texts(count, nullptr);
    HPCML_H5_CHECK(H5Aread(attr, memory.get(), texts.data()), where);
    for (char* t : texts) out.emplace_back(t ? t : "");
    Id space(HPCML_H5_CHECK(H5Aget_space(attr), where));
    H5Dvlen_reclaim(memory.get(), space.get(), H5P_DEFAULT, texts.data());
  } else {
    const size_t size = H5Tget_size(file_type);
    Id memory(HPCML_H5_CHECK(H5Tcopy(H5T_C_S1), where));
    HPCML_H5_CHECK(H5Tset_size(memory.get(), size), where);
    std::vector<char> buffer(size * count + 1, '\0');
    HPCML_H5_CHECK(H5Aread(attr, memory.get(), buffer.data()), where);
    for (size_t i = 0; i < count; ++i) {
      const char* begin = buffer.data() + i * size;
      out.emplace_back(begin, strnlen(begin, size));
    }
  }
  return out;
}
}  // namespace

void write_attribute(hid_t object, const std::string& name, const std::string& value, const std::string& what) {
  Lock lock(library_mutex());
  Id type = string_type(what);
  Id space(HPCML_H5_CHECK(H5Screate(H5S_SCALAR), what));
  Id attr = new_attribute(object, name, type.get(), space.get(), what);
  const char* text = value.c_str();
  HPCML_H5_CHECK(H5Awrite(attr.get(), type.get(), &text), what + " attribute '" + name + "'");
}

void write_attribute(hid_t object, const std::string& name, int64_t value, const std::string& what) {
  Lock lock(library_mutex());
  Id space(HPCML_H5_CHECK(H5Screate(H5S_SCALAR), what));
  Id attr = new_attribute(object, name, H5T_STD_I64LE, space.get(), what);
  HPCML_H5_CHECK(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), what + " attribute '" + name + "'");
}

void write_attribute(hid_t object, const std::string& name, const std::vector<std::string>& values,
                     const std::string& what) {
  Lock lock(library_mutex());
  Id type = string_type(what);
  const hsize_t count = values.size();
  Id space(HPCML_H5_CHECK(H5Screate_simple(1, &count, nullptr), what));
  Id attr = new_attribute(object, name, type.get(), space.get(), what);
  std::vector<const char*> texts;
  for (const auto& v : values) texts.push_back(v.c_str());
  HPCML_H5_CHECK(H5Awrite(attr.get(), type.get(), texts.data()), what + " attribute '" + name + "'");
}

bool has_attribute(hid_t object, const std::string& name) {
  Lock lock(library_mutex());
  return H5Aexists(object, name.c_str()) > 0;
}

namespace {
// An attribute holding exactly one value of class `expected` ("string"/"integer" in messages).
struct SingleAttribute {
  Id attr;
  Id type;
  std::string where;
};
SingleAttribute open_single_attribute(hid_t object, const std::string& name, const std::string& what,
                                      H5T_class_t expected, const char* a_kind, const char* one_kind) {
  SingleAttribute a{open_attribute(object, name, what), Id(), what + " attribute '" + name + "'"};
  a.type = Id(HPCML_H5_CHECK(H5Aget_type(a.attr.get()), a.where));
  HPCML_CHECK_AS(IoError, H5Tget_class(a.type.get()) == expected, a.where, ": expected ", a_kind);
  Id space(HPCML_H5_CHECK(H5Aget_space(a.attr.get()), a.where));
  HPCML_CHECK_AS(IoError, H5Sget_simple_extent_npoints(space.get()) == 1, a.where, ": expected ", one_kind,
                 ", found ", H5Sget_simple_extent_npoints(space.get()));
  return a;
}
}  // namespace

std::string read_string_attribute(hid_t object, const std::string& name, const std::string& what) {
  Lock lock(library_mutex());
  const auto a = open_single_attribute(object, name, what, H5T_STRING, "a string", "one string");
  return read_strings(a.attr.get(), a.type.get(), 1, a.where).front();
}

int64_t read_int_attribute(hid_t object, const std::string& name, const std::string& what) {
  Lock lock(library_mutex());
  const auto a = open_single_attribute(object, name, what, H5T_INTEGER, "an integer", "one integer");
  int64_t value = 0;
  HPCML_H5_CHECK(H5Aread(a.attr.get(), H5T_NATIVE_INT64, &value), a.where);
  return value;
}

std::vector<std::string> read_string_list_attribute(hid_t object, const std::string& name, const std::string& what) {
  Lock lock(library_mutex());
  if (H5Aexists(object, name.c_str()) <= 0) return {};
  const std::string where = what + " attribute '" + name + "'";
  Id attr = open_attribute(object, name, what);
  Id type(HPCML_H5_CHECK(H5Aget_type(attr.get()), where));
  HPCML_CHECK_AS(IoError, H5Tget_class(type.get()) == H5T_STRING, where, ": expected strings");
  Id space(HPCML_H5_CHECK(H5Aget_space(attr.get()), where));
  const auto count = HPCML_H5_CHECK(H5Sget_simple_extent_npoints(space.get()), where);
  return read_strings(attr.get(), type.get(), static_cast<size_t>(count), where);
}

namespace {
herr_t collect_name(hid_t, const char* name, const H5L_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
}
}  // namespace

std::vector<std::string> list_group(const File& file, const std::string& name) {
  Lock lock(library_mutex());
  std::vector<std::string> names;
  HPCML_CHECK_AS(IoError, name == "/" || exists(file.get(), name), "file '", file.path(), "': group '", name,
                 "' not found");
  HPCML_H5_CHECK(H5Literate_by_name(file.get(), name.c_str(), H5_INDEX_NAME, H5_ITER_INC, nullptr, &collect_name,
                                    &names, H5P_DEFAULT),
                 "file '" + file.path() + "' group '" + name + "'");
  return names;
}

}  // namespace hpcml::io::h5
