/// @file
/// Umbrella header of hpcml::perf: the performance model of issue 32 (allreduce costs, fits,
/// step times at N ranks, systems, service sizing).
#pragma once

#include "perf/allreduce.hpp"
#include "perf/fit.hpp"
#include "perf/profile.hpp"
#include "perf/service.hpp"
#include "perf/step.hpp"
#include "perf/system.hpp"
