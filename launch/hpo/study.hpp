/// @file
/// A hyperparameter study (internal to launch/): the `hpo` config section, the trials' training
/// configs, the study's state as the farm's results arrive, and its outputs (docs/hpo.md).
///
/// The algorithms live in hpo/ (space, samplers, ASHA); this file joins them to training:
/// a point of the space is a set of dotted-key overrides of a base training config, and a trial
/// is trained in parts, one farm task per ASHA rung, each continuing from the last one's
/// checkpoint (launch/train/trainer.hpp, train_part).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "hpo/hpo.hpp"
#include "launch/farm/farm.hpp"
#include "launch/train/train_config.hpp"

namespace hpcml::launch::hpo_driver {

/// hpo.scheduler: early stopping.
struct SchedulerSection {
  std::string name = "none";
  std::string mode = "promote";
  std::string rung_value = "last";
  std::string resource = "epochs";
  int grace_period = 1;
  int reduction_factor = 3;
  int max_resource = 0;
  template <typename V>
  void describe(V& v) {
    v.field("name", name, "none (every trial runs its whole budget) or asha (asynchronous successive halving)",
            config::one_of({"none", "asha"}));
    v.field("mode", mode,
            "asha: promote (Li et al.: a trial pauses at each rung with its checkpoint, and a freed group takes the "
            "best paused trial in the top 1/eta of its rung before a new one) or stop (Optuna's and Ray Tune's: a "
            "trial is told at each rung to continue or stop for good)",
            config::one_of({"promote", "stop"}));
    v.field("rung_value", rung_value,
            "asha: what a rung ranks: last (the metric where the trial reached the rung, as Li et al.) or best (its "
            "best validation so far, as Optuna's median pruner: steadier when the metric jumps between epochs). A "
            "complete trial's value is always its last",
            config::one_of({"last", "best"}));
    v.field("resource", resource, "asha: what rungs count: epochs, or optimizer steps",
            config::one_of({"epochs", "steps"}));
    v.field("grace_period", grace_period, "asha: resource of the first rung", config::in_range(1, 1 << 30));
    v.field("reduction_factor", reduction_factor, "asha: eta; a trial continues past a rung in the top 1/eta",
            config::in_range(2, 1 << 10));
    v.field("max_resource", max_resource,
            "asha: a trial's whole budget (0: the base config's train.epochs, or train.max_steps for steps); the "
            "trials' train.epochs (train.max_steps) is set to it",
            config::in_range(0, 1 << 30));
  }
};

/// hpo.tpe: the TPE sampler's settings (hpo/tpe.hpp).
struct TpeSection {
  int startup_trials = 10;
  int ei_candidates = 24;
  bool constant_liar = true;
  bool multivariate = false;
  template <typename V>
  void describe(V& v) {
    v.field("startup_trials", startup_trials, "random trials before TPE takes over", config::in_range(1, 1 << 20));
    v.field("ei_candidates", ei_candidates, "candidates drawn from the good density per parameter",
            config::in_range(1, 1 << 16));
    v.field("constant_liar", constant_liar,
            "running trials count as bad results, so that groups asking while others run sample elsewhere");
    v.field("multivariate", multivariate, "score the unconditional parameters jointly (Optuna's multivariate TPE)");
  }
};

/// The `hpo` section of `hpcml hpo -c` (its `space` is read apart: hpo::SearchSpace).
struct HpoSection {
  std::string base;
  std::string sampler = "tpe";
  SchedulerSection scheduler;
  TpeSection tpe;
  int trials = 20;
  int ranks_per_trial = 1;
  std::string metric = "val_loss";
  std::string direction = "minimize";
  int seed = 0;
  std::string study_dir = "hpo-study";
  double trial_timeout_s = 0;
  bool plots = true;
  template <typename V>
  void describe(V& v) {
    v.field("base", base,
            "a training config file the study starts from (relative to this config's directory); the training keys "
            "of this file are applied on top of it. Empty: this file's own training keys are the base");
    v.field("sampler", sampler, "how trials are proposed", config::one_of({"grid", "random", "tpe"}));
    v.section("scheduler", scheduler, "early stopping of trials");
    v.section("tpe", tpe, "the TPE sampler");
    v.field("trials", trials, "trials to run (the grid may end a study sooner)", config::in_range(1, 1 << 20));
    v.field("ranks_per_trial", ranks_per_trial,
            "ranks that train one trial data-parallel; the world splits into groups of this size, and ranks left "
            "over stay idle (reported at start)",
            config::in_range(1, 1 << 20));
    v.field("metric", metric,
            "the key of the trials' validation line to optimise (val_loss, val_accuracy, val_resolution, ...)");
    v.field("direction", direction, "whether smaller or larger metric values are better",
            config::one_of({"minimize", "maximize"}));
    v.field("seed", seed, "seed of the samplers (trial n draws from (seed, n))", config::at_least(0));
    v.field("study_dir", study_dir,
            "the study: journal.jsonl, trials/<n>/ (each trial's run), trials.csv, summary.json, best.yaml, plots");
    v.field("trial_timeout_s", trial_timeout_s, "a trial part running longer ends the job (0: no limit)",
            config::at_least(0.0));
    v.field("plots", plots, "draw the PNG plots at the end (scripts/plot-hpo.py, needs python3 with matplotlib)");
  }
};

/// A parsed `hpcml hpo` config: the hpo section, its space, and the base training config.
struct HpoConfig {
  HpoSection hpo;
  hpo::SearchSpace space;
  std::vector<hpo::Params> enqueue;  ///< hpo.enqueue: the first trials' points, in order
  YAML::Node section;  ///< the `hpo` mapping as written (space included, base removed)
  hpo::Direction direction = hpo::Direction::kMinimize;
  config::Document environment;  ///< HPCML_* variables, applied under every trial
  config::Document base;         ///< the training keys (base file, then this file's), without `hpo`
  TrainConfig base_config;       ///< `base` read, defaults filled in
  int64_t max_resource =
      0;  ///< a trial's whole budget (asha: in scheduler.resource units; none: epochs, or steps with train.max_steps)
};

/// Reads `file` (`hpo` section and training keys) over `environment`. Every trial value the
/// space can take at its ends (low, high, each choice) is applied to the base config and
/// checked like a training config, so a key or value a trial would refuse fails here.
/// @throws ConfigError naming the key.
HpoConfig read_hpo_config(const config::Document& environment, const config::Document& file);

/// The training config of trial `n` with `params`: the base with every parameter set by its
/// dotted key, run.dir <study_dir>/trials/<n>, run.resume auto, and (asha) the whole budget
/// in train.epochs or train.max_steps. @throws ConfigError naming the trial and key.
TrainConfig trial_config(const HpoConfig& c, const hpo::Params& params, int64_t n);

/// Whether a trial part trained up to `until` ends at an ASHA rung (not at the trial's end, and
/// not a whole trial without a scheduler, whose parts have until 0).
inline bool ends_at_rung(const HpoConfig& c, int64_t until) {
  return c.hpo.scheduler.name == "asha" && until > 0 && until < c.max_resource;
}

/// <study_dir>/trials/<n>.
std::string trial_dir(const std::string& study_dir, int64_t n);

/// The study's config identity (space, sampler, scheduler, metric, seed, base config), kept in
/// study.json: a re-run with another one is refused.
nlohmann::json study_identity(const HpoConfig& c);

/// One trial as the study knows it.
struct Trial {
  hpo::TrialRecord record;                        ///< number, state, params, value, resource (as the samplers see it)
  /// asha: (resource, value) reports, in order. record.state is kPruned while the trial is
  /// paused at a rung, and kRunning again once promoted.
  std::vector<std::pair<int64_t, double>> rungs;
  std::string error;                              ///< kFailed: why
  double seconds = 0;                             ///< training time, over its parts
  double finished_s = -1;                         ///< study wall time when it finished (-1: not finished)
  int64_t parts = 0;                              ///< parts (rung segments) run
};

/// The coordinator's state of a study: proposes trials and decides at rungs as results arrive
/// (a farm plan's on_result). Deterministic: replaying a journal's results in order gives the
/// same trials and decisions.
class Study {
 public:
  /// @param[in] started_unix the study's start (study.json), for wall times.
  Study(const HpoConfig& config, double started_unix);
  /// The first tasks: one trial per worker (at most hpo.trials).
  std::vector<farm::Task> start(int workers);
  /// A part's result: the trial goes on (stopping form: its next part at once), pauses at a
  /// rung (promotion form), or ends (complete, pruned, failed). Then every free group gets work:
  /// a promotion (promotion form) before a new trial.
  std::vector<farm::Task> on_result(const farm::TaskResult& result);
  const std::vector<Trial>& trials() const { return trials_; }
  /// Every trial as the sampler sees it (sampler_history).
  std::vector<hpo::TrialRecord> history() const;

 private:
  std::optional<farm::Task> ask();
  std::vector<farm::Task> hand_out(std::optional<farm::Task> own);
  farm::Task part(int64_t n, int64_t until);
  int64_t next_rung(int64_t until) const;

  const HpoConfig& c_;
  double started_unix_;
  std::unique_ptr<hpo::Sampler> sampler_;
  std::optional<hpo::Asha> asha_;
  std::vector<Trial> trials_;
  std::map<std::string, nlohmann::json> specs_;  // task id -> spec
  bool exhausted_ = false;                       // the grid has no point left
  bool promote_ = false;                         // asha in the promotion form
  size_t workers_ = 0;                           // groups
  size_t in_flight_ = 0;                         // parts handed out and not back yet
};

/// The trials as hpo::TrialRecord for a sampler (running ones included). A failed trial is
/// passed as pruned before its first rung with no value: TPE ranks it last (bad group), so a
/// region that diverges is not proposed again and again. A running trial that has reported at
/// a rung (ASHA continued or promoted it) is passed as pruned there, with that value; only
/// trials with no report yet reach the sampler as running (TPE's constant liar).
std::vector<hpo::TrialRecord> sampler_history(const std::vector<Trial>& trials);

/// Trial `n`'s point: the n-th of hpo.enqueue while there is one (as Optuna's enqueue_trial
/// and Ray Tune's points_to_evaluate), else the sampler's, which learns from the enqueued
/// trials' results as from any. nullopt: the grid has no point left.
std::optional<hpo::Params> propose(const HpoConfig& c, const hpo::Sampler& sampler,
                                   const std::vector<hpo::TrialRecord>& history, int64_t n, hpo::Rng& rng);

/// The sampler `c` names over its space.
std::unique_ptr<hpo::Sampler> make_study_sampler(const HpoConfig& c);

/// The Rng trial `n` draws from: seeded by (seed, n), so a trial's draw depends on the history
/// only, never on when it was asked.
hpo::Rng trial_rng(int seed, int64_t n);

/// What summary.json and trials.csv are made of, apart from the trials.
struct StudyFacts {
  int workers = 0, ranks_per_trial = 1, idle_ranks = 0;
  double wall_s = 0;
  double idle_fraction = -1;  ///< groups' idle share of wall time before the final drain (-1: unknown)
  bool interrupted = false;
};

/// Writes <study_dir>/trials.csv, summary.json and best.yaml (the best trial's training config,
/// run.dir cleared, ready for `hpcml train -c`) atomically. best.yaml is absent while no trial
/// completed.
void write_outputs(const HpoConfig& c, const std::vector<Trial>& trials, const StudyFacts& facts);

/// The best complete trial (nullptr when none).
const Trial* best_trial(const std::vector<Trial>& trials, hpo::Direction direction);

/// The study's wall times (study.json, trial parts, asks and tells) are the farm's clock.
using farm::unix_now;

/// "running", "complete", "pruned", "failed".
const char* to_string(hpo::TrialState state);

}  // namespace hpcml::launch::hpo_driver
