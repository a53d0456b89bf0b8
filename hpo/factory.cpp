#include "hpo/factory.hpp"

#include "core/error.hpp"

namespace hpcml::hpo {

std::unique_ptr<Sampler> make_sampler(const SearchSpace& space, const SamplerOptions& options) {
  if (options.name == "grid") return std::make_unique<GridSampler>(space);
  if (options.name == "random") return std::make_unique<RandomSampler>(space);
  if (options.name == "tpe") return std::make_unique<TpeSampler>(space, options.direction, options.tpe);
  HPCML_THROW(ConfigError, "config error: key 'hpo.sampler': expected one of [grid, random, tpe], found '",
              options.name, "'");
}

}  // namespace hpcml::hpo
