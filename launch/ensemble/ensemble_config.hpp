/// @file
/// An ensemble (internal to launch/): the `ensemble` config section, its variations, and the
/// training config of every member (docs/ensembles.md).
///
/// A member is one ordinary training run: member k of variation v is the base training config
/// with v's overrides applied by dotted key, model.seed and train.seed moved by the member's
/// seed offset, and run.dir <ensemble.dir>/<v>/member-<k>. Everything else (the farm's tasks,
/// the summary, aggregated inference) follows from member_config.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/config.hpp"
#include "launch/train/train_config.hpp"

namespace hpcml::launch::ensemble {

/// The `ensemble` section of `hpcml ensemble -c` (its `variations` are read apart).
struct EnsembleSection {
  std::string base;
  int members = 4;
  int seed = 0;
  std::string seeds = "shared";
  bool bootstrap = false;
  int ranks_per_member = 1;
  int pack = 1;
  int max_retries = 2;
  std::string dir = "ensemble";
  double member_timeout_s = 0;
  template <typename V>
  void describe(V& v) {
    v.field("base", base,
            "a training config file the members start from (relative to this config's directory); the training "
            "keys of this file are applied on top of it. Empty: this file's own training keys are the base");
    v.field("members", members, "members per variation (a re-run with more adds members)",
            config::in_range(1, 1 << 20));
    v.field("seed", seed,
            "member k's model.seed and train.seed are the base config's plus seed + k (+ the variation's offset "
            "with seeds: per_variation); its bootstrap resample draws from (seed, variation, k)",
            config::in_range(0, 1 << 30));
    v.field("seeds", seeds,
            "shared: member k of every variation has the same seeds (variations differ by their overrides only); "
            "per_variation: variation number v (from 0, in the order written) adds v * 2^20",
            config::one_of({"shared", "per_variation"}));
    v.field("bootstrap", bootstrap,
            "each member trains on its own bootstrap resample of the training rows (as many rows, drawn with "
            "replacement; written once to <dir>/<variation>/bootstrap/member-<k>.h5; fixed-shape fields only)");
    v.field("ranks_per_member", ranks_per_member,
            "ranks that train one member (or one pack) data-parallel; the world splits into groups of this size, "
            "and ranks left over stay idle (reported at start)",
            config::in_range(1, 1 << 20));
    v.field("pack", pack,
            "members trained packed in one process as one model (train.pack; mlp and facile): a task is a pack of "
            "this many consecutive members of a variation; 1: one member per task",
            config::in_range(1, limits::kMaxMembers));
    v.field("max_retries", max_retries,
            "a member whose process crashed (the job died while it trained) is run again on the ensemble's next "
            "run, up to this many times; then it is recorded crashed. A member that diverged (NaN) is recorded "
            "failed and never retried",
            config::in_range(0, 1000));
    v.field("dir", dir,
            "the ensemble: ensemble.json, journal.jsonl, <variation>/member-<k>/ (each member's run), "
            "summary.json");
    v.field("member_timeout_s", member_timeout_s,
            "a member (or pack) training longer ends the job (0: no limit)", config::at_least(0.0));
  }
};

/// One named systematic variation: dotted-key overrides of the base config.
struct Variation {
  std::string name;
  std::vector<std::pair<std::string, std::string>> overrides;  ///< key, value as YAML text
};

/// A parsed `hpcml ensemble` config.
struct EnsembleConfig {
  EnsembleSection ensemble;
  std::vector<Variation> variations;  ///< at least one ("nominal" when none is written)
  config::Document environment;       ///< HPCML_* variables, applied under every member
  config::Document base;              ///< the training keys (base file, then this file's), no `ensemble`
  TrainConfig base_config;            ///< `base` read, defaults filled in
};

/// Reads `file` (`ensemble` section and training keys) over `environment`. Every variation is
/// applied to the base and checked like a training config, so a key a member would refuse
/// fails here. @throws ConfigError naming the key (and the variation).
EnsembleConfig read_ensemble_config(const config::Document& environment, const config::Document& file);

/// The training config of variation number `v`: the base with its overrides (no member's seeds,
/// run.dir or resample yet). @throws ConfigError naming the variation's key.
TrainConfig variation_config(const EnsembleConfig& c, size_t v);

/// The training config of member `k` of variation number `v` (the ordinary run; with
/// ensemble.bootstrap, data.files is its resample, which the driver writes before training).
TrainConfig member_config(const EnsembleConfig& c, size_t v, int64_t k);

/// <dir>/<variation>/member-<k>.
std::string member_dir(const std::string& dir, const std::string& variation, int64_t k);

/// <dir>/<variation>/bootstrap/member-<k>.h5.
std::string bootstrap_file(const std::string& dir, const std::string& variation, int64_t k);

/// A farm task's members: pack p of variation v is members [first, first + count).
struct TaskMembers {
  size_t variation = 0;
  int64_t first = 0, count = 1;
};

/// "<variation>/member-<k>", or "<variation>/pack-<first>" for a pack.
std::string task_id(const EnsembleConfig& c, const TaskMembers& t);

/// Every task of the ensemble, variation by variation (members in packs of ensemble.pack).
std::vector<TaskMembers> all_tasks(const EnsembleConfig& c);

/// The ensemble's identity (base config, variations, seeds, bootstrap, pack), kept in
/// ensemble.json: a re-run with another one is refused; members may grow.
nlohmann::json identity(const EnsembleConfig& c);

}  // namespace hpcml::launch::ensemble
