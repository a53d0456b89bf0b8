/// @file
/// Prediction outputs in hpcml's layout, with the provenance that makes them
/// traceable: which model and checkpoint, which config, which software, which input rows.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io/table.hpp"

namespace hpcml::io {

struct Provenance {
  std::string model;              ///< zoo name or TorchScript path
  std::string checkpoint_digest;  ///< SHA-256 of the parameters (summary.json's "parameters_sha256")
  std::string config_yaml;        ///< the resolved config
  std::string input_file;         ///< the file the rows came from
  int64_t first_row = 0;          ///< first input row predicted
  int64_t rows = 0;               ///< rows predicted: input rows [first_row, first_row + rows)
};

/// Root attribute names written by write_predictions (besides the layout's own).
inline constexpr const char* kProvenanceAttributes[] = {
    "model", "checkpoint_sha256", "config", "hpcml_version", "libtorch_version", "hdf5_version",
    "input_file", "input_first_row", "input_rows"};

/// A column from a tensor (float32/float64/int32/int64, first axis = rows).
Column column_from_tensor(const std::string& name, const at::Tensor& tensor, std::vector<std::string> units = {""},
                          std::vector<std::string> features = {});

/// Writes `columns` (each with provenance.rows rows) as schema "hpcml.predictions"
/// (or `schema` when given) to `path`, atomically, with the provenance attributes.
void write_predictions(const std::string& path, std::vector<Column> columns, const Provenance& provenance,
                       const std::string& schema = "hpcml.predictions");

}  // namespace hpcml::io
