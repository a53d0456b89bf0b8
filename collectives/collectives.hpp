/// @file
/// Umbrella header of hpcml::collectives.
#pragma once

#include "collectives/backend.hpp"
#include "collectives/factory.hpp"
#include "collectives/grad_hook.hpp"
#include "collectives/gradient_reducer.hpp"
#include "collectives/local_backend.hpp"
#include "collectives/module_params.hpp"
#include "collectives/mpi_backend.hpp"
#include "collectives/types.hpp"
#include "collectives/work.hpp"
