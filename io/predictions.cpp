#include "io/predictions.hpp"

#include <ATen/ATen.h>

#include "core/error.hpp"
#include "core/h5.hpp"
#include "hpcml/build_config.hpp"

namespace hpcml::io {

namespace {
template <typename T>
std::vector<T> values_of(const at::Tensor& t) {
  const at::Tensor c = t.detach().contiguous();
  return std::vector<T>(c.data_ptr<T>(), c.data_ptr<T>() + c.numel());
}
}  // namespace

Column column_from_tensor(const std::string& name, const at::Tensor& tensor, std::vector<std::string> units,
                          std::vector<std::string> features) {
  HPCML_CHECK_AS(IoError, tensor.dim() >= 1, "predictions: tensor '", name, "' needs a first (row) axis, found ",
                 tensor.dim(), " dimensions");
  Column column;
  column.name = name;
  column.shape = tensor.sizes().vec();
  column.units = std::move(units);
  column.features = std::move(features);
  switch (tensor.scalar_type()) {
    case at::kFloat: column.data = values_of<float>(tensor); break;
    case at::kDouble: column.data = values_of<double>(tensor); break;
    case at::kInt: column.data = values_of<int32_t>(tensor); break;
    case at::kLong: column.data = values_of<int64_t>(tensor); break;
    default:
      HPCML_THROW(IoError, "predictions: tensor '", name, "' has dtype ", c10::toString(tensor.scalar_type()),
                  "; expected float32, float64, int32 or int64");
  }
  return column;
}

void write_predictions(const std::string& path, std::vector<Column> columns, const Provenance& provenance,
                       const std::string& schema) {
  Table table;
  table.schema = schema;
  table.rows = provenance.rows;
  table.fixed = std::move(columns);
  table.attributes = {{"model", provenance.model},
                      {"checkpoint_sha256", provenance.checkpoint_digest},
                      {"config", provenance.config_yaml},
                      {"hpcml_version", std::string(HPCML_VERSION) + " (git " + HPCML_GIT_REVISION + ")"},
                      {"libtorch_version", HPCML_TORCH_VERSION},
                      {"hdf5_version", h5_version()},
                      {"input_file", provenance.input_file},
                      {"input_first_row", std::to_string(provenance.first_row)},
                      {"input_rows", std::to_string(provenance.rows)}};
  write_table(path, table);
}

}  // namespace hpcml::io
