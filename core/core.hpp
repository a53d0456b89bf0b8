/// @file
/// Umbrella header of hpcml::core: errors, MPI ownership, deadlines, config,
/// logging and the runtime environment.
#pragma once

#include "core/config.hpp"
#include "core/env.hpp"
#include "core/env_vars.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/h5.hpp"
#include "core/log.hpp"
#include "core/mpi.hpp"
#include "core/runtime_env.hpp"
#include "core/signals.hpp"
#include "core/trace.hpp"
#include "core/watchdog.hpp"
