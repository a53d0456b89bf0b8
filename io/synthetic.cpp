#include "io/synthetic.hpp"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

namespace hpcml::io {

std::pair<at::Tensor, at::Tensor> TensorDataset::gather(const std::vector<int64_t>& indices) const {
  const at::Tensor index = at::tensor(indices, at::kLong);
  return {inputs.index_select(0, index), targets.index_select(0, index)};
}

TensorDataset synthetic_classification(int64_t samples, int64_t features, int64_t classes, uint64_t seed,
                                       uint64_t teacher_seed) {
  auto teacher_gen = at::detail::createCPUGenerator(teacher_seed);
  const at::Tensor teacher = at::randn({features, classes}, teacher_gen, at::TensorOptions(at::kFloat)) /
                             std::sqrt(static_cast<double>(features));
  auto gen = at::detail::createCPUGenerator(seed);
  at::Tensor x = at::randn({samples, features}, gen, at::TensorOptions(at::kFloat));
  at::Tensor logits = x.matmul(teacher) + 0.3 * at::randn({samples, classes}, gen, at::TensorOptions(at::kFloat));
  return {x, logits.argmax(1)};
}

}  // namespace hpcml::io
