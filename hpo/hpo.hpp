/// @file
/// Umbrella header of hpcml::hpo: search spaces, samplers (grid, random, TPE) and ASHA.
#pragma once

#include "hpo/asha.hpp"
#include "hpo/factory.hpp"
#include "hpo/sampler.hpp"
#include "hpo/space.hpp"
#include "hpo/tpe.hpp"
