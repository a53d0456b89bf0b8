#include "io/h5_tensors.hpp"

#include <ATen/ATen.h>
#include <hdf5.h>

#include <cstdio>

#include "core/error.hpp"
#include "core/h5.hpp"

namespace hpcml::io {

namespace {
// Closes an HDF5 handle with the matching function when it goes out of scope.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

hid_t h5_type(at::ScalarType dtype, const std::string& what) {
  switch (dtype) {
    case at::kFloat: return H5T_NATIVE_FLOAT;
    case at::kDouble: return H5T_NATIVE_DOUBLE;
    case at::kInt: return H5T_NATIVE_INT32;
    case at::kLong: return H5T_NATIVE_INT64;
    default: HPCML_THROW(IoError, "HDF5 writer: tensor '", what, "' has dtype ", c10::toString(dtype),
                         "; supported: Float, Double, Int, Long");
  }
}

void write_string_attribute(hid_t object, const std::string& name, const std::string& value, const std::string& file) {
  // Variable-length UTF-8: h5py reads these as str, not bytes.
  Handle type(HPCML_H5_CHECK(H5Tcopy(H5T_C_S1), file), H5Tclose);
  HPCML_H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE), file);
  HPCML_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8), file);
  Handle space(HPCML_H5_CHECK(H5Screate(H5S_SCALAR), file), H5Sclose);
  Handle attr(HPCML_H5_CHECK(H5Acreate2(object, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                             file + " attribute " + name),
              H5Aclose);
  const char* text = value.c_str();
  HPCML_H5_CHECK(H5Awrite(attr.get(), type.get(), &text), file + " attribute " + name);
}
}  // namespace

void write_tensors_h5(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& attributes) {
  const std::string tmp = path + ".tmp";
  {
    Handle file(HPCML_H5_CHECK(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "file '" + tmp + "'"),
                H5Fclose);
    for (const auto& [name, tensor] : tensors) {
      const at::Tensor t = tensor.detach().contiguous();
      std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
      Handle space(HPCML_H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), path),
                   H5Sclose);
      const hid_t type = h5_type(t.scalar_type(), name);
      Handle dataset(HPCML_H5_CHECK(H5Dcreate2(file.get(), name.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                                               H5P_DEFAULT),
                                    "dataset '" + name + "' in " + path),
                     H5Dclose);
      HPCML_H5_CHECK(H5Dwrite(dataset.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()),
                     "dataset '" + name + "' in " + path);
    }
    for (const auto& [key, value] : attributes) write_string_attribute(file.get(), key, value, path);
  }
  HPCML_CHECK_AS(IoError, std::rename(tmp.c_str(), path.c_str()) == 0, "HDF5 writer: cannot rename '", tmp, "' to '",
                 path, "'");
}

}  // namespace hpcml::io
