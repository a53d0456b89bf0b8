// nsf_dump SEED DTYPE OUT.h5: builds the neural spline flow (models/flows/nsf.hpp) with
// the default GW architecture from SEED, moves it off its initialisation (random
// parameter offsets, so the LU layers are not the identity; an SVD projection of random
// waveforms; a random θ standardisation), converts it to DTYPE (float32 or float64),
// and writes every parameter and buffer by name, the options as root attributes, and
// fixed inputs with their outputs: "__theta__", "__strain__" -> "__log_prob__", and
// "__z__" -> "__theta_from_z__" (the inverse transform on the strains' contexts).
// Driven by tests/cli/test_nsf_twin.py, which loads the dump into models/twins/nsf.py.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cstdlib>
#include <exception>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "io/h5_tensors.hpp"
#include "models/flows/nsf.hpp"

namespace {

namespace flows = hpcml::models::flows;

std::string join(const std::vector<int64_t>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
  return out;
}

int dump(uint64_t seed, const std::string& dtype_name, const std::string& path) {
  HPCML_CHECK_AS(hpcml::ConfigError, dtype_name == "float32" || dtype_name == "float64",
                 "nsf_dump: DTYPE: expected float32 or float64, found '", dtype_name, "'");
  const auto dtype = dtype_name == "float32" ? at::kFloat : at::kDouble;
  flows::NsfOptions o;
  o.seed = seed;
  flows::NeuralSplineFlow flow(o);
  auto gen = at::detail::createCPUGenerator(seed + 1);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  {
    at::NoGradGuard no_grad;
    for (auto& [name, p] : flow.named_parameters()) p.add_(at::randn(p.sizes(), gen, p.options()) * 0.05);
  }
  flow.init_projection_from_svd(at::randn({200, o.strain_length}, gen, f64));
  flow.set_standardization(at::randn({o.theta_dim}, gen, f64) * 10, at::rand({o.theta_dim}, gen, f64) * 5 + 0.5);
  flow.to(dtype);
  flow.train(false);

  const int64_t batch = 8;
  const auto& bufs = flow.named_buffers();
  const auto mean = bufs[0].second, sd = bufs[1].second;
  // θ around the standardisation (some beyond the tail bound), strains of unit variance.
  const auto theta = (mean + sd * at::randn({batch, o.theta_dim}, gen, f64).to(dtype) * 1.5).contiguous();
  const auto strain = at::randn({batch, o.strain_length}, gen, f64).to(dtype);
  const auto z = (at::randn({batch, o.theta_dim}, gen, f64) * 1.5).to(dtype);
  at::NoGradGuard no_grad;
  const auto log_prob = flow.log_prob(theta, strain);
  const auto theta_from_z = flow.inverse_transform(z, flow.embed(strain)).outputs;

  std::vector<hpcml::io::NamedTensor> tensors;
  for (const auto& p : flow.named_parameters()) tensors.push_back(p);
  for (const auto& b : flow.named_buffers()) tensors.push_back(b);
  tensors.emplace_back("__theta__", theta);
  tensors.emplace_back("__strain__", strain);
  tensors.emplace_back("__log_prob__", log_prob);
  tensors.emplace_back("__z__", z);
  tensors.emplace_back("__theta_from_z__", theta_from_z);
  std::map<std::string, std::string> attrs{{"model", "nsf"},
                                           {"seed", std::to_string(seed)},
                                           {"dtype", dtype_name},
                                           {"theta_dim", std::to_string(o.theta_dim)},
                                           {"strain_length", std::to_string(o.strain_length)},
                                           {"num_steps", std::to_string(o.num_steps)},
                                           {"num_bins", std::to_string(o.spline.num_bins)},
                                           {"tail_bound", std::to_string(o.spline.tail_bound)},
                                           {"hidden", std::to_string(o.hidden)},
                                           {"hidden_layers", std::to_string(o.hidden_layers)},
                                           {"linear", o.linear},
                                           {"n_basis", std::to_string(o.n_basis)},
                                           {"embedding_hidden", join(o.embedding_hidden)},
                                           {"context_dim", std::to_string(o.context_dim)}};
  hpcml::io::write_tensors_h5(path, tensors, attrs);
  int64_t count = 0;
  for (const auto& p : flow.parameters()) count += p.numel();
  std::cout << "nsf: " << count << " trainable parameters, " << flow.named_buffers().size() << " buffers, "
            << dtype_name << ", log_prob " << log_prob.sizes() << " -> " << path << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: nsf_dump SEED DTYPE OUT.h5   (DTYPE: float32 or float64)\n";
    return 2;
  }
  try {
    return dump(std::stoull(argv[1]), argv[2], argv[3]);
  } catch (const hpcml::Error& e) {
    std::cerr << "nsf_dump: " << e.message() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "nsf_dump: " << e.what() << "\n";
    return 1;
  }
}
