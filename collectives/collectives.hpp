/// @file
/// Umbrella header of hpcml::collectives.
#pragma once

#include "collectives/backend.hpp"
#include "collectives/factory.hpp"
#include "collectives/local_backend.hpp"
#include "collectives/mpi_backend.hpp"
#include "collectives/types.hpp"
#include "collectives/work.hpp"
