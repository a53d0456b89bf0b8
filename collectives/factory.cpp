#include "collectives/factory.hpp"

#include <functional>

#include "collectives/local_backend.hpp"
#include "collectives/mpi_backend.hpp"
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
#ifdef HPCML_HAS_NCCL
#error "the NCCL backend is not implemented yet"
#endif
  };
  return entries;
}
}  // namespace

std::vector<std::string> compiled_backends() {
  std::vector<std::string> names;
  for (const auto& e : registry()) names.emplace_back(e.name);
  return names;
}

BackendPtr make_backend(const std::string& name, const BackendOptions& options) {
  for (const auto& e : registry()) {
    if (name == e.name) return e.make(options);
  }
  std::string known;
  for (const auto& n : compiled_backends()) known += (known.empty() ? "" : ", ") + n;
  HPCML_THROW(ConfigError, "unknown collective backend '", name, "'; compiled backends: ", known);
}

}  // namespace hpcml::collectives
