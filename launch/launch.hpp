/// @file
/// Umbrella header of hpcml::launch.
#pragma once

#include "launch/run_config.hpp"
#include "launch/runtime.hpp"
