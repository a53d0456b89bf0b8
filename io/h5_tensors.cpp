#include "io/h5_tensors.hpp"

#include <ATen/ATen.h>

#include <cstdio>

#include "core/error.hpp"
#include "core/files.hpp"
#include "io/hdf5.hpp"

namespace hpcml::io {

namespace {
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
}  // namespace

void write_tensors_h5(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& attributes) {
  PendingFile pending(path);
  const std::string& tmp = pending.temp_path();
  {
    h5::File file = h5::File::create(tmp);
    const std::string what = "file '" + path + "'";
    for (const auto& [name, tensor] : tensors) {
      const at::Tensor t = tensor.detach().contiguous();
      h5::write_dataset(file.get(), name, h5_type(t.scalar_type(), name), t.sizes().vec(), 0, t.data_ptr(), what);
    }
    for (const auto& [key, value] : attributes) h5::write_attribute(file.get(), key, value, what);
    file.close();
  }
  pending.commit();
}

}  // namespace hpcml::io
