/// @file
/// Drivers' PNG plots: a script of the source tree's scripts/ run on an output directory.
#pragma once

#include <string>

namespace hpcml::launch {

/// Runs `/usr/bin/python3 scripts/<script> <dir>` from the source tree (120 s at most). A
/// missing script or a failure is one warning line, "<who>: plots not drawn (...): <why>
/// (<off> turns this off)", never an error: the run's results are written already.
void run_plot_script(const std::string& script, const std::string& dir, const std::string& who,
                     const std::string& off);

}  // namespace hpcml::launch
