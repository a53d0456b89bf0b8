// zoo_dump NAME SEED OUT.h5: builds the zoo model NAME from SEED, runs a few
// training-mode batches (so batch-norm running statistics are not trivial), then,
// in eval mode, writes every parameter and buffer by name plus a fixed input
// "__input__" and the model's output "__output__" for it. Driven by
// tests/cli/test_zoo_twins.py, which loads the dump into the Python twin.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "io/h5_tensors.hpp"
#include "models/registry.hpp"

namespace {

int dump(const std::string& name, uint64_t seed, const std::string& path) {
  auto model = hpcml::models::make(name, seed);
  // Floating-point inputs shifted and scaled per step, so the running mean and variance
  // move away from 0 and 1 (a mask stays as it is).
  auto inputs = [&](int64_t batch, uint64_t s, double scale, double shift) {
    auto in = hpcml::models::example_inputs(name, batch, s);
    for (auto& [key, t] : in) {
      if (t.is_floating_point()) t = t * scale + shift;
    }
    return in;
  };
  at::NoGradGuard no_grad;
  model->set_training(true);
  for (int step = 0; step < 3; ++step) (void)model->forward(inputs(16, seed + 1 + step, 1.5 + step, 0.5 * step));
  model->set_training(false);
  const auto input = inputs(8, seed + 100, 2.0, 0.3);
  const at::Tensor output = model->forward(input);

  std::vector<hpcml::io::NamedTensor> tensors;
  for (const auto& p : model->named_parameters()) tensors.push_back(p);
  for (const auto& b : model->named_buffers()) tensors.push_back(b);
  for (const auto& [key, t] : input) tensors.emplace_back("__input__." + key, t.is_floating_point() ? t : t.to(at::kLong));
  tensors.emplace_back("__output__", output);
  hpcml::io::write_tensors_h5(path, tensors, {{"model", name}, {"seed", std::to_string(seed)}});
  std::cout << name << ": " << hpcml::models::parameter_count(*model) << " trainable parameters, "
            << model->named_buffers().size() << " buffers, output " << output.sizes() << " -> " << path << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: zoo_dump NAME SEED OUT.h5\n";
    return 2;
  }
  try {
    return dump(argv[1], std::stoull(argv[2]), argv[3]);
  } catch (const hpcml::Error& e) {
    std::cerr << "zoo_dump: " << e.message() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "zoo_dump: " << e.what() << "\n";
    return 1;
  }
}
