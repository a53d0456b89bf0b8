/// @file
/// The sampler named in a config (`hpo.sampler`), as data.
#pragma once

#include <memory>
#include <string>

#include "hpo/tpe.hpp"

namespace hpcml::hpo {

/// Which sampler and its settings.
struct SamplerOptions {
  std::string name = "tpe";  ///< grid, random or tpe
  Direction direction = Direction::kMinimize;
  TpeOptions tpe;
};

/// The sampler `options.name` over `space`.
/// @throws hpcml::ConfigError naming 'hpo.sampler' for an unknown name (and the grid's errors).
std::unique_ptr<Sampler> make_sampler(const SearchSpace& space, const SamplerOptions& options);

}  // namespace hpcml::hpo
