// `hpcml hpo`, `hpcml hpo ask` and `hpcml hpo tell`.
#include <cstdlib>
#include <iostream>
#include <optional>

#include "core/config.hpp"
#include "core/error.hpp"
#include "launch/cli/command.hpp"
#include "launch/hpo/driver.hpp"

namespace hpcml::launch::cli {

namespace {

// ask and tell are one process each: under a launcher, rank 0 alone acts.
bool acting_rank(const Context& c) { return c.env.rank == 0; }

void add_ask(CLI::App* hpo, CommonOptions& common, Runner& selected) {
  auto* sub = hpo->add_subcommand(
      "ask",
      "Take the study's next trial: print its number, parameters and training config file as one JSON line, "
      "and record it as running (a study of --study's directory; its first ask needs -c CONFIG). "
      "Concurrent asks get distinct trials");
  add_common_options(sub, common);
  auto study = std::make_shared<std::string>();
  sub->add_option("--study", *study, "The study's directory")->required();
  auto config = std::make_shared<std::optional<hpo_driver::HpoConfig>>();
  sub->callback([&selected, &common, study, config] {
    common.needs_mpi = false;
    common.parser = [config](const config::Document& environment, const config::Document& file) {
      if (file.root.IsMap() && file.root.size() > 0) *config = hpo_driver::read_hpo_config(environment, file);
      if (*config) return run_sections((*config)->base_config);
      RunConfig run;
      return read_layers(environment, file, run);
    };
    selected = [study, config](Context& c) {
      if (acting_rank(c)) std::cout << hpo_driver::ask(*study, *config) << std::endl;
      return 0;
    };
  });
}

void add_tell(CLI::App* hpo, CommonOptions& common, Runner& selected) {
  auto* sub = hpo->add_subcommand(
      "tell",
      "Record a trial's final value (--value) or its failure (--failed REASON); a trial is told once, and "
      "a value that is not a finite number is refused");
  auto study = std::make_shared<std::string>();
  auto trial = std::make_shared<int64_t>(-1);
  auto value = std::make_shared<std::string>();
  auto failed = std::make_shared<std::string>();
  sub->add_option("--study", *study, "The study's directory")->required();
  sub->add_option("--trial", *trial, "The trial's number (from ask)")->required();
  auto* value_option = sub->add_option("--value", *value, "Its final metric");
  auto* failed_option = sub->add_option("--failed", *failed, "It failed, for this reason");
  value_option->excludes(failed_option);
  sub->callback([&selected, &common, study, trial, value, failed, value_option, failed_option] {
    common.needs_mpi = false;
    if (value_option->count() == 0 && failed_option->count() == 0) {
      throw CLI::ValidationError("hpo tell: expected --value V or --failed REASON");
    }
    const bool has_value = value_option->count() > 0;
    selected = [study, trial, value, has_value, failed](Context& c) {
      if (!acting_rank(c)) return 0;
      std::optional<double> told;
      if (has_value) {
        // Read here, not by CLI11, so that "nan" is refused naming the trial.
        char* end = nullptr;
        const double v = std::strtod(value->c_str(), &end);
        HPCML_CHECK_AS(ConfigError, !value->empty() && end != nullptr && *end == '\0', "hpo tell: trial ", *trial,
                       ": --value expected a number, found '", *value, "'");
        told = v;
      }
      hpo_driver::tell(*study, *trial, told, *failed);
      return 0;
    };
  });
}

// The hpo section's keys, hpo.space first (read apart from the others: hpo::SearchSpace).
std::vector<config::KeyDoc> hpo_reference() {
  std::vector<config::KeyDoc> rows{
      {"hpo", "a mapping", "", "", "the study; the config's other keys (or hpo.base's) are the base training config"},
      {"hpo.space", "a mapping", "", "",
       "the search space: dotted training key -> {type: uniform | loguniform | int | categorical, low, high, log "
       "(int), choices (categorical), when: {parent: value(s)} (conditional), grid_points (grid)} (docs/hpo.md)"},
      {"hpo.enqueue", "a list", "[]", "",
       "points the first trials take, in order, before the sampler proposes (each a mapping of every active "
       "parameter: value); they count toward hpo.trials, and the sampler learns from their results"}};
  config::Documenter documenter("hpo");
  hpo_driver::HpoSection defaults;
  defaults.describe(documenter);
  rows.insert(rows.end(), documenter.rows.begin(), documenter.rows.end());
  return rows;
}

}  // namespace

void add_hpo_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  auto* sub = app.add_subcommand(
      "hpo",
      "Hyperparameter optimisation in one allocation: a study (hpo section: space, sampler grid/random/tpe, "
      "scheduler none/asha, trials, ranks_per_trial, metric) over a base training config, trials trained on "
      "rank groups as they free up, journaled and resumable; writes trials.csv, summary.json, best.yaml and "
      "plots (docs/hpo.md). `hpo ask` and `hpo tell` drive a study from outside");
  add_common_options(sub, common, /*config_argument=*/true);
  auto reference = std::make_shared<bool>(false);
  sub->add_flag("--reference", *reference,
                "Print the keys of the hpo section (Markdown; the training keys are `hpcml config --for train "
                "--reference`'s) and exit");
  add_ask(sub, common, selected);
  add_tell(sub, common, selected);
  auto config = std::make_shared<hpo_driver::HpoConfig>();
  sub->callback([sub, &selected, &common, config, reference] {
    if (!sub->get_subcommands().empty()) return;  // ask or tell
    if (*reference) {
      common.needs_mpi = false;
      selected = [](Context& c) {
        if (c.env.rank == 0) std::cout << config::reference_markdown(hpo_reference());
        return 0;
      };
      return;
    }
    if (common.config_path.empty())
      throw CLI::ValidationError("hpo: expected a config with an 'hpo' section (-c CONFIG, or CONFIG)");
    common.parser = [config](const config::Document& environment, const config::Document& file) {
      *config = hpo_driver::read_hpo_config(environment, file);
      return run_sections(config->base_config);
    };
    selected = [config](Context& c) {
      require_cpu(c, "hpcml hpo");
      return hpo_driver::run_study(c, *config);
    };
  });
}

}  // namespace hpcml::launch::cli
