// `hpcml config`: validate a config and print it resolved, or print the key reference.
#include <algorithm>
#include <iostream>

#include "core/config.hpp"
#include "launch/cli/command.hpp"
#include "launch/ensemble/ensemble_config.hpp"
#include "launch/train/train_config.hpp"

namespace hpcml::launch::cli {

namespace {

// The `ensemble` section as written in a config, for the reference.
struct EnsembleKeys {
  ensemble::EnsembleSection ensemble;
  template <typename V>
  void describe(V& v) {
    v.section("ensemble", ensemble, "hpcml ensemble: members x variations of a training config");
  }
};

}  // namespace

void add_config_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  auto* sub = app.add_subcommand(
      "config", "Check a config (file and --set overrides) and print it resolved, with every default filled in; "
                "errors name the key, the value found and what is accepted");
  add_common_options(sub, common);
  auto reference = std::make_shared<bool>(false);
  auto schema = std::make_shared<std::string>("run");
  sub->add_flag("--reference", *reference,
                "Print the keys of every subcommand but serve and tracking (`hpcml serve --reference`, `hpcml "
                "tracking reference`) with type, default, accepted values and meaning (Markdown; the source of "
                "docs/config-reference.md)");
  sub->add_option("--for", *schema,
                  "Which command's config: run (info, datagen, models, bench; the runtime and log sections) or train "
                  "(train, eval, infer, export)")
      ->check(CLI::IsMember({"run", "train"}))
      ->capture_default_str();
  auto train_config = std::make_shared<TrainConfig>();
  sub->callback([&selected, &common, reference, schema, train_config] {
    common.needs_mpi = false;
    if (*schema == "train") {
      common.parser = [train_config](const config::Document& environment, const config::Document& file) {
        return read_layers(environment, file, *train_config);
      };
    }
    selected = [reference, schema, train_config](Context& c) {
      if (c.env.rank != 0) return 0;
      if (*reference) {
        std::cout << "## Every subcommand (`--for run`)\n\n"
                  << config::reference_markdown(config::reference<RunConfig>())
                  << "\n## `hpcml train` (`--for train`)\n\nThe runtime and log sections above, and:\n\n";
        auto rows = config::reference<TrainConfig>();
        rows.erase(std::remove_if(rows.begin(), rows.end(),
                                  [](const config::KeyDoc& r) {
                                    return r.key.rfind("runtime", 0) == 0 || r.key.rfind("log", 0) == 0;
                                  }),
                   rows.end());
        std::cout << config::reference_markdown(rows);
        std::cout << "\n## `hpcml ensemble`\n\nThe keys of `hpcml train` (the members' base config), and the "
                     "`ensemble` section; `ensemble.variations` maps each variation's name to dotted training keys "
                     "and values (docs/ensembles.md):\n\n"
                  << config::reference_markdown(config::reference<EnsembleKeys>());
      } else if (*schema == "train") {
        std::cout << config::to_yaml(*train_config);
      } else {
        std::cout << config::to_yaml(c.config);
      }
      return 0;
    };
  });
}

}  // namespace hpcml::launch::cli
