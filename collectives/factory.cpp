#include "collectives/factory.hpp"

#include <ATen/ATen.h>

#include <functional>

#include "collectives/local_backend.hpp"
#include "collectives/mpi_backend.hpp"
#include "collectives/nccl_backend.hpp"
#include "core/mpi.hpp"
#include "hpcml/build_config.hpp"

namespace hpcml::collectives {

namespace {
struct Entry {
  const char* name;
  std::function<BackendPtr(const BackendOptions&)> make;
};

const std::vector<Entry>& registry() {
  static const std::vector<Entry> entries = {
      {"mpi", [](const BackendOptions& o) { return std::make_shared<MpiBackend>(MPI_COMM_WORLD, o); }},
      {"local",
       [](const BackendOptions& o) -> BackendPtr {
         HPCML_CHECK_AS(CommError, world_size() == 1, rank_tag(), " backend local runs one rank, but the job has ",
                        world_size(), " ranks; use backend mpi");
         return std::make_shared<LocalBackend>(o);
       }},
  };
  return entries;
}
}  // namespace

std::vector<std::string> compiled_backends() {
  std::vector<std::string> names;
  if (nccl_compiled()) names.emplace_back("nccl");
  for (const auto& e : registry()) names.emplace_back(e.name);
  return names;
}

BackendPtr make_backend(const std::string& name, const BackendOptions& options, const c10::Device& device) {
  if (name == "nccl" || (name == "auto" && nccl_compiled())) {
    // auto: nccl only when every rank computes on a GPU; the ranks agree first.
    auto bootstrap = std::make_shared<MpiBackend>(MPI_COMM_WORLD, options);
    if (name == "auto") {
      at::Tensor on_gpu = at::tensor({device.is_cuda() ? 1 : 0}, at::kInt);
      AllreduceOptions min_op;
      min_op.op = ReduceOp::kMin;
      bootstrap->allreduce(on_gpu, min_op);
      if (on_gpu.item<int>() == 0) return bootstrap;
    }
    return make_nccl_backend(bootstrap, device.is_cuda() ? device.index() : -1, options);
  }
  if (name == "auto") return make_backend("mpi", options, device);
  for (const auto& e : registry()) {
    if (name == e.name) return e.make(options);
  }
  std::string known;
  for (const auto& n : compiled_backends()) known += (known.empty() ? "" : ", ") + n;
  HPCML_THROW(ConfigError, "unknown collective backend '", name, "'; compiled backends: ", known);
}

}  // namespace hpcml::collectives
