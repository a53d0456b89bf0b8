// `hpcml info`: versions, features, launcher and one line per rank.
#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "collectives/device.hpp"
#include "collectives/factory.hpp"
#include "collectives/nccl_backend.hpp"
#include "collectives/torch_compat.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/h5.hpp"
#include "core/mpi.hpp"
#include "hpcml/build_config.hpp"
#include "launch/cli/command.hpp"

namespace hpcml::launch::cli {

std::string version_line() {
  return std::string("hpcml ") + HPCML_VERSION + " (git " + HPCML_GIT_REVISION + ", " + HPCML_BUILD_TYPE + ")";
}

namespace {


nlohmann::json rank_record(const Context& c) {
  const auto& e = c.env;
  return {{"rank", e.rank},
          {"local_rank", e.local_rank},
          {"local_size", e.local_size},
          {"node", e.node_name},
          {"node_index", e.node_index},
          {"het_group", e.het_group ? nlohmann::json(*e.het_group) : nlohmann::json()},
          {"launcher_local_rank", e.launcher_local_rank ? nlohmann::json(*e.launcher_local_rank) : nlohmann::json()},
          {"cpus", c.threads.cpus},
          {"num_cpus", c.threads.num_cpus},
          {"threads", c.threads.intra_op},
          {"blas_threads", c.threads.blas},
          {"device", c.device.device.str()},
          {"device_name", collectives::describe_device(c.device.device)},
          {"device_why", c.device.why},
          {"cuda_devices_visible", collectives::visible_devices()}};
}

int run_info(Context& c, const std::string& json_path) {
  // Every rank's record, gathered to all (bytes of its JSON text).
  const std::string mine = rank_record(c).dump();
  at::Tensor bytes = at::empty({static_cast<int64_t>(mine.size())}, at::kByte);
  std::memcpy(bytes.data_ptr(), mine.data(), mine.size());
  const auto gathered = c.world->allgather_varying(bytes);
  if (c.env.rank != 0) return 0;

  nlohmann::json ranks = nlohmann::json::array();
  for (const auto& t : gathered) {
    ranks.push_back(nlohmann::json::parse(std::string(static_cast<const char*>(t.data_ptr()), t.numel())));
  }
  const bool thread_multiple = mpi_thread_multiple();
  const bool cuda = torch::cuda::is_available();
#ifdef HPCML_HAS_CUDA
  const bool cuda_built = true;
#else
  const bool cuda_built = false;
#endif
  std::string backends;
  for (const auto& b : collectives::compiled_backends()) backends += (backends.empty() ? "" : ", ") + b;
#ifdef HPCML_HAS_HDF5_PARALLEL
  const bool h5_parallel = true;
#else
  const bool h5_parallel = false;
#endif
  const bool nccl = collectives::nccl_compiled();
  const std::string torch_version = compat::libtorch_version();
  nlohmann::json info = {
      {"version", HPCML_VERSION},
      {"git_revision", HPCML_GIT_REVISION},
      {"build_type", HPCML_BUILD_TYPE},
      {"libtorch", torch_version},
      {"mpi", mpi_library_description()},
      {"mpi_thread_multiple", thread_multiple},
      {"hdf5", h5_version()},
      {"backends", collectives::compiled_backends()},
      {"backend_in_use", c.world->name()},
      {"hdf5_parallel", h5_parallel},
      {"cuda", cuda},
      {"cuda_built", cuda_built},
      {"nccl", nccl},
      {"launcher", to_string(c.env.launcher)},
      {"job_id", c.env.job_id ? nlohmann::json(*c.env.job_id) : nlohmann::json()},
      {"het_size", c.env.het_size ? nlohmann::json(*c.env.het_size) : nlohmann::json()},
      {"size", c.env.size},
      {"num_nodes", c.env.num_nodes},
      {"ranks", ranks}};

  std::cout << version_line() << "\n"
            << "  LibTorch       " << torch_version << (cuda ? " (CUDA available)" : " (CPU)") << "\n"
            << "  MPI            " << mpi_library_description() << ", MPI_THREAD_MULTIPLE "
            << (thread_multiple ? "yes" : "no") << "\n"
            << "  HDF5           " << h5_version() << "\n"
            << "  backends       " << backends << " (in use: " << c.world->name() << ")\n"
            << "  parallel HDF5  " << (h5_parallel ? "yes" : "no") << "\n"
            << "  CUDA           "
            << (cuda ? "yes, " + std::to_string(collectives::visible_devices()) + " device(s) visible"
                     : cuda_built ? std::string("built, but no device visible")
                                  : std::string("no (this build has no CUDA: LibTorch ") + torch_version + ")")
            << "\n"
            << "  NCCL           " << (nccl ? "yes" : "no (backend not compiled in)") << "\n"
            << "  launcher       " << to_string(c.env.launcher);
  if (c.env.job_id) std::cout << ", Slurm job " << *c.env.job_id;
  if (c.env.het_size) std::cout << ", het job of " << *c.env.het_size << " components";
  std::cout << "\n  ranks          " << c.env.size << " on " << c.env.num_nodes << " node(s)\n\n";
  std::cout << "  rank  local  node                 het  cpus        threads  blas  device\n";
  for (const auto& r : ranks) {
    std::string local = std::to_string(r["local_rank"].get<int>()) + "/" + std::to_string(r["local_size"].get<int>());
    std::string het = r["het_group"].is_null() ? "-" : std::to_string(r["het_group"].get<int>());
    std::cout << "  " << std::left << std::setw(6) << r["rank"].get<int>() << std::setw(7) << local << std::setw(21)
              << r["node"].get<std::string>() << std::setw(5) << het << std::setw(12) << r["cpus"].get<std::string>()
              << std::setw(9) << r["threads"].get<int>() << std::setw(6) << r["blas_threads"].get<int>()
              << r["device_name"].get<std::string>() << "\n";
  }
  std::cout.flush();
  if (!json_path.empty()) write_file_atomically(json_path, info.dump(2) + "\n");
  return 0;
}

}  // namespace

void add_info_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  auto* sub = app.add_subcommand("info", "Print versions, compiled backends and features, the launcher, and "
                                         "every rank's node, local rank, core binding and thread budget");
  add_common_options(sub, common);
  auto json_path = std::make_shared<std::string>();
  sub->add_option("--json", *json_path, "Also write the report as JSON to this file (rank 0)");
  sub->callback([&selected, json_path] { selected = [json_path](Context& c) { return run_info(c, *json_path); }; });
}

}  // namespace hpcml::launch::cli
