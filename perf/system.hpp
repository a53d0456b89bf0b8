/// @file
/// Target systems for projections: presets with their sources, and systems read from a
/// YAML or JSON file (what `hpcml project fit` writes). docs/scaling.md#systems.
#pragma once

#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "perf/allreduce.hpp"

namespace hpcml::perf {

/// A machine to project onto.
struct System {
  std::string name;
  std::string description;
  std::string source;  ///< where each figure comes from, and which are assumptions
  Topology topology;
  Algorithm algorithm = Algorithm::kAuto;  ///< what its collective library does
};

/// The presets: perlmutter-gpu, ib-hdr.
const std::vector<System>& preset_systems();

/// A system from a mapping:
/// @code
/// name: this-machine                     # optional
/// ranks_per_node: 2
/// intra:   {alpha_s: 2.0e-6, beta_s_per_byte: 1.0e-10}   # or bandwidth_gb_per_s: 10 (1e9 bytes/s)
/// network: {alpha_s: 2.0e-6, bandwidth_gb_per_s: 12.5}   # beta per node (all its NICs)
/// gamma_s_per_byte: 0                    # optional
/// algorithm: ring                        # optional, default auto
/// source: "fitted by hpcml project fit"  # optional
/// @endcode
/// Throws ConfigError "<what>: key '<key>': expected ..., found ..." for a missing, unknown or
/// bad key.
System system_from_yaml(const YAML::Node& node, const std::string& what);

/// A preset's name, or else the path of a system file. Throws ConfigError naming the presets
/// when it is neither, or the file when it cannot be read ("<what>: ...").
System find_system(const std::string& name_or_path, const std::string& what);

/// The file form system_from_yaml reads back.
std::string system_to_yaml(const System& system);

}  // namespace hpcml::perf
