// `hpcml ensemble`.
#include "core/config.hpp"
#include "core/error.hpp"
#include "launch/cli/command.hpp"
#include "launch/ensemble/driver.hpp"

namespace hpcml::launch::cli {

void add_ensemble_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  auto* sub = app.add_subcommand(
      "ensemble", "Train an ensemble in one allocation: members x variations (ensemble section: members, seed, seeds, "
                  "bootstrap, variations of dotted-key overrides, ranks_per_member, pack, max_retries, dir) of a base "
                  "training config, handed to rank groups as they free up, each an ordinary run in "
                  "<dir>/<variation>/member-<k>/; journaled and resumable, crashed members retried on the next run, "
                  "diverged ones recorded failed; writes summary.json. `hpcml infer` with run.dir the ensemble's dir "
                  "writes the ensemble's mean and variance (docs/ensembles.md)");
  add_common_options(sub, common, /*config_argument=*/true);
  auto config = std::make_shared<ensemble::EnsembleConfig>();
  sub->callback([&selected, &common, config] {
    if (common.config_path.empty()) {
      throw CLI::ValidationError("ensemble: expected a config with an 'ensemble' section (-c CONFIG, or CONFIG)");
    }
    common.parser = [config](const config::Document& environment, const config::Document& file) {
      *config = ensemble::read_ensemble_config(environment, file);
      return run_sections(config->base_config);
    };
    selected = [config](Context& c) {
      require_cpu(c, "hpcml ensemble");
      return ensemble::run_ensemble(c, *config);
    };
  });
}

}  // namespace hpcml::launch::cli
