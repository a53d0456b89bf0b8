/// @file
/// Umbrella header of hpcml::io.
#pragma once

#include "io/h5_tensors.hpp"
#include "io/sampler.hpp"
#include "io/synthetic.hpp"
