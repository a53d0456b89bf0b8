// `hpcml train`, `eval`, `export` and `infer`.
#include <iostream>

#include "core/config.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/limits.hpp"
#include "launch/cli/command.hpp"
#include "launch/ensemble/infer.hpp"
#include "launch/infer/campaign.hpp"
#include "launch/infer/posterior.hpp"
#include "launch/train/trainer.hpp"

namespace hpcml::launch::cli {

void add_train_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  auto* sub = app.add_subcommand(
      "train", "Data-parallel training on all ranks: gradients averaged in buckets (node shared memory or MPI "
               "allreduce), metrics.jsonl, "
               "checkpoints and exact resume in run.dir. SIGUSR1/SIGTERM stop every rank at the same step, write a "
               "checkpoint and exit with code 75 (requeue)");
  add_common_options(sub, common, /*config_argument=*/true);
  auto resume = std::make_shared<bool>(false);
  sub->add_flag("--resume", *resume, "Continue from the newest valid checkpoint in run.dir (same as run.resume=auto)");
  auto overwrite = std::make_shared<bool>(false);
  sub->add_flag("--overwrite", *overwrite,
                "Start fresh in a run.dir that holds another run, moving that run aside to "
                "<run.dir>.replaced-<UTC time> (same as run.overwrite=true)");
  auto config = std::make_shared<TrainConfig>();
  sub->callback([&selected, &common, config, resume, overwrite] {
    common.parser = [config, resume, overwrite](const config::Document& environment, const config::Document& file) {
      auto run = read_layers(environment, file, *config);
      if (*resume) config->run.resume = "auto";
      if (*overwrite) config->run.overwrite = true;
      return run;
    };
    selected = [config](Context& c) { return train(c, *config); };
  });
}

void add_eval_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  auto* sub = app.add_subcommand(
      "eval", "Evaluate a checkpoint on the config's validation data (data.validation_files) over all ranks: print "
              "the loss and the task's metrics (accuracy, plus ROC AUC and 1/eps_B at 30% signal efficiency for two "
              "classes; resolution; log q and calibration for a density model) and write them to run.dir/summary.json");
  add_common_options(sub, common, /*config_argument=*/true);
  auto checkpoint = std::make_shared<std::string>();
  sub->add_option("--checkpoint", *checkpoint, "Checkpoint file (default: the newest in run.dir/checkpoints)")
      ->check(CLI::ExistingFile);
  auto config = std::make_shared<TrainConfig>();
  sub->callback([&selected, &common, config, checkpoint] {
    common.parser = [config](const config::Document& environment, const config::Document& file) {
      return read_layers(environment, file, *config);
    };
    selected = [config, checkpoint](Context& c) { return evaluate(c, *config, *checkpoint); };
  });
}

void add_export_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  auto* sub = app.add_subcommand("export", "Write the parameters and buffers (batch-norm statistics) of a checkpoint to HDF5, one dataset per "
                                           "name (read them with h5py; a zoo model's Python twin loads them), with step, config "
                                           "and the parameters' SHA-256 as attributes");
  add_common_options(sub, common);
  auto checkpoint = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  sub->add_option("checkpoint", *checkpoint, "Checkpoint file (run.dir/checkpoints/step-N.pt)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("-o,--output", *out, "HDF5 file to write")->required();
  sub->callback([&selected, &common, checkpoint, out] {
    // Checked at parse time, like every option, so every rank agrees before any work.
    check_output_path(*out, {*checkpoint, common.config_path}, "-o/--output");
    selected = [checkpoint, out](Context& c) {
      if (c.env.rank == 0) {
        Activity activity("exporting checkpoint '" + *checkpoint + "'");
        export_checkpoint(*checkpoint, *out);
        std::cout << "wrote " << *out << "\n";
      }
      return 0;
    };
  });
}

void add_infer_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  auto* sub = app.add_subcommand(
      "infer", "Run a trained model over data. With infer.inputs in the config: a batch-inference campaign over "
               "many HDF5 files, units handed to the ranks on demand, one predictions file per input (a density "
               "model's: posterior samples of every event), journaled and resumable (docs/campaigns.md). With -i/-o: posterior samples of a density model (nsf-gw) for "
               "the events of a strain file, importance-weighted against the toy GW likelihood and prior");
  add_common_options(sub, common, /*config_argument=*/true);
  auto options = std::make_shared<InferOptions>();
  auto flags = std::make_shared<CampaignFlags>();
  sub->add_option("--checkpoint", options->checkpoint, "Checkpoint file (default: the newest in run.dir/checkpoints)")
      ->check(CLI::ExistingFile);
  sub->add_option("-i,--input", options->input, "GW posteriors: HDF5 file with the strain (hpcml datagen gw layout)")
      ->check(CLI::ExistingFile);
  sub->add_option("-o,--output", options->output, "GW posteriors: HDF5 file to write");
  sub->add_option("--samples", options->samples, "GW posteriors: proposal draws per event (default 5000)")
      ->check(CLI::Range(int64_t{2}, limits::kMaxDraws));
  sub->add_option("--first", options->first, "GW posteriors: first event (row) of the input (default 0)");
  sub->add_option("--events", options->events,
                  "GW posteriors: events from --first (default 1; 0: to the end of the file)");
  sub->add_option("--seed", options->seed,
                  "GW posteriors: seed; event i draws from (seed, 0, i), as file 0 of a campaign (default 1)");
  sub->add_flag("--new", flags->fresh,
                "Campaign: start a new campaign in infer.output_dir, moving the one there aside to "
                "<dir>.replaced-<UTC time>");
  sub->add_flag("--retry-failed", flags->retry_failed,
                "Campaign: run the units and files that failed before again (inputs repaired since are accepted)");
  auto config = std::make_shared<TrainConfig>();
  sub->callback([&selected, &common, config, options, flags] {
    common.parser = [config, options](const config::Document& environment, const config::Document& file) {
      auto run = read_layers(environment, file, *config);
      const bool campaign = !config->infer.inputs.empty();
      HPCML_CHECK_AS(ConfigError, !campaign || (options->input.empty() && options->output.empty()),
                     "infer: give either infer.inputs (a campaign) or -i/-o (GW posterior samples), not both");
      HPCML_CHECK_AS(ConfigError, campaign || (!options->input.empty() && !options->output.empty()),
                     "infer: expected infer.inputs in the config (a campaign over files) or -i and -o (posterior "
                     "samples of a density model)");
      if (!campaign) check_output_path(options->output, {options->input, options->checkpoint}, "-o/--output");
      if (campaign && !options->checkpoint.empty()) config->infer.checkpoint = options->checkpoint;
      const bool ensemble = ensemble::is_ensemble_dir(config->run.dir);
      HPCML_CHECK_AS(ConfigError, !ensemble || (campaign && options->checkpoint.empty() && config->infer.checkpoint.empty()),
                     "infer: run.dir '", config->run.dir, "' is an ensemble: expected infer.inputs (a campaign over "
                     "files) and no checkpoint (every complete member's newest is used)");
      HPCML_CHECK_AS(ConfigError, ensemble || !config->infer.members, "config error: key 'infer.members': expected "
                     "false unless run.dir is an `hpcml ensemble` directory (it holds no ensemble.json: '",
                     config->run.dir, "')");
      return run;
    };
    selected = [config, options, flags](Context& c) {
      if (ensemble::is_ensemble_dir(config->run.dir)) return ensemble::run_ensemble_infer(c, *config, *flags);
      if (!config->infer.inputs.empty()) return run_campaign(c, *config, *flags);
      require_cpu(c, "hpcml infer -i/-o (posterior sampling)");
      return infer(c, *config, *options);
    };
  });
}

}  // namespace hpcml::launch::cli
