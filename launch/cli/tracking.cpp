// `hpcml tracking train|eval|reference`: the learned stages of the tracking pipeline
// (launch/tracking/tracking.hpp, docs/tracking.md).
#include <iostream>
#include <memory>

#include "core/config.hpp"
#include "core/files.hpp"
#include "launch/cli/command.hpp"
#include "launch/tracking/tracking.hpp"

namespace hpcml::launch::cli {

void add_tracking_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  auto* sub = app.add_subcommand(
      "tracking", "GNN track reconstruction (Exa.TrkX-style): train and evaluate the embedding, edge-filter and "
                  "interaction-network stages on `hpcml datagen tracking` events, against the geometric baseline");
  sub->require_subcommand(1);
  auto config = std::make_shared<TrackingConfig>();
  auto parser = [config](const config::Document& environment, const config::Document& file) {
    return read_layers(environment, file, *config);
  };

  auto* train = sub->add_subcommand(
      "train", "Train the three stages in turn on all ranks (rank r takes events r, r+W, ... of each global batch; "
               "gradients averaged), write run.dir/weights.h5, then evaluate on data.validation_files");
  add_common_options(train, common);
  train->callback([&selected, &common, config, parser] {
    common.parser = parser;
    selected = [config](Context& c) {
      require_cpu(c, "hpcml tracking train");
      return tracking_train(c, *config);
    };
  });

  auto* eval = sub->add_subcommand(
      "eval", "Evaluate weights on data.validation_files over all ranks: per-stage edge efficiency and purity, GNN "
              "purity at eval.target_efficiency against the tuned geometric baseline, track efficiency and fake rate; "
              "writes run.dir/summary.json");
  add_common_options(eval, common);
  auto weights = std::make_shared<std::string>();
  auto dump = std::make_shared<std::string>();
  eval->add_option("--weights", *weights, "Weights file (default: run.dir/weights.h5)")->check(CLI::ExistingFile);
  eval->add_option("--dump-event", *dump,
                   "Also write the weights and the first validation event's per-stage inputs and outputs to this HDF5 "
                   "file (rank 0; for the Python twin models/twins/tracking.py)");
  eval->callback([&selected, &common, config, parser, weights, dump] {
    // Checked at parse time, like export's -o: the dump never replaces the weights or the config.
    if (!dump->empty()) check_output_path(*dump, {*weights, common.config_path}, "--dump-event");
    common.parser = parser;
    selected = [config, weights, dump](Context& c) {
      require_cpu(c, "hpcml tracking eval");
      return tracking_evaluate(c, *config, *weights, *dump);
    };
  });

  auto* reference = sub->add_subcommand("reference", "Print the config keys of `hpcml tracking` (Markdown)");
  reference->callback([&selected, &common] {
    common.needs_mpi = false;
    selected = [](Context& c) {
      if (c.env.rank == 0) std::cout << tracking_reference();
      return 0;
    };
  });
}

}  // namespace hpcml::launch::cli
