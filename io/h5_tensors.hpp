/// @file
/// Tensors to and from HDF5, one dataset per name (readable with h5py).
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace hpcml::io {

using NamedTensor = std::pair<std::string, at::Tensor>;

/// Writes each tensor as a dataset named by its name (float32/float64/int32/int64),
/// plus string attributes on the root group. Written to "<path>.tmp" and renamed,
/// so readers never see half a file. Throws hpcml::IoError naming the file and
/// dataset, with HDF5's message.
void write_tensors_h5(const std::string& path, const std::vector<NamedTensor>& tensors,
                      const std::map<std::string, std::string>& attributes = {});

}  // namespace hpcml::io
