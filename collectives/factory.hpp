/// @file
/// Backend choice is data: a name from config or CLI maps to a constructor.
#pragma once

#include <string>
#include <vector>

#include "collectives/backend.hpp"

namespace hpcml::collectives {

/// Names of the backends compiled into this build, in preference order
/// ("nccl" first where built, "mpi", "local").
std::vector<std::string> compiled_backends();

/// Creates the backend `name` over the whole job (MPI_COMM_WORLD for "mpi"):
/// "nccl" on `device` (a CUDA device; collective check that every rank has one),
/// "auto" (nccl when built and every rank's `device` is CUDA, else mpi).
/// Throws hpcml::ConfigError naming the backend and the compiled ones when unknown
/// or not built, and hpcml::CommError when "local" is asked for in a job of more
/// than one rank.
BackendPtr make_backend(const std::string& name, const BackendOptions& options = {},
                        const c10::Device& device = c10::Device(c10::kCPU));

}  // namespace hpcml::collectives
