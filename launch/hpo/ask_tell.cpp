// `hpcml hpo ask` and `hpcml hpo tell`: a study driven from outside (an iDDS-like service, a
// notebook), one trial at a time, by processes that share only the study directory.
//
//   <study>/config.yaml        the study's config (training keys and `hpo`), from the first ask
//   <study>/trials/<n>.claim   trial n taken: created with O_CREAT|O_EXCL (no flock, which Lustre
//                              often mounts node-local)
//   <study>/trials/<n>.json    its parameters; <n>.yaml its training config
//   <study>/trials/<n>.result  its outcome: written whole, then linked into place (link fails with
//                              EEXIST for a second tell)
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.hpp"
#include "core/files.hpp"
#include "launch/hpo/driver.hpp"
#include "launch/run_config.hpp"

namespace hpcml::launch::hpo_driver {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

fs::path trials_dir(const std::string& study) { return fs::path(study) / "trials"; }

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// `text` at `path` only if nothing is there: written whole under a name of our own, then
// hard-linked into place (atomic, and EEXIST when another process got there first).
// Returns false when `path` existed.
bool publish_once(const fs::path& path, const std::string& text) {
  const std::string tmp = path.string() + "." + std::to_string(::getpid()) + ".tmp";
  write_file_atomically(tmp, text);
  const int rc = ::link(tmp.c_str(), path.c_str());
  const int err = errno;
  ::unlink(tmp.c_str());
  if (rc == 0) return true;
  HPCML_CHECK_AS(IoError, err == EEXIST, "hpo: cannot create '", path.string(), "': ", std::strerror(err));
  return false;
}

// The config as the study keeps it: its training keys and its `hpo` section.
std::string study_config_text(const HpoConfig& c) {
  YAML::Node root = YAML::Clone(c.base.root);
  root["hpo"] = YAML::Clone(c.section);
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

// Takes the first free trial number: <n>.claim created exclusively.
int64_t claim_trial(const std::string& study) {
  for (int64_t n = 0;; ++n) {
    const std::string path = (trials_dir(study) / (std::to_string(n) + ".claim")).string();
    const int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd >= 0) {
      ::close(fd);
      return n;
    }
    HPCML_CHECK_AS(IoError, errno == EEXIST, "hpo ask: cannot create '", path, "': ", std::strerror(errno));
  }
}

// Every trial recorded in the study: asked ones (their .json) with their results, if told.
std::vector<Trial> read_trials(const HpoConfig& c, const std::string& study) {
  std::vector<Trial> trials;
  double first_asked = -1;
  std::vector<double> told;
  for (int64_t n = 0; fs::exists(trials_dir(study) / (std::to_string(n) + ".claim")); ++n) {
    const fs::path params = trials_dir(study) / (std::to_string(n) + ".json");
    if (!fs::exists(params)) continue;  // taken by an ask still writing it (or that died doing so)
    const json asked = json::parse(read_text(params));
    Trial t;
    t.record.number = n;
    t.record.params = c.space.params_from_json(asked.at("params"));
    const double at = asked.value("asked_unix", 0.0);
    first_asked = first_asked < 0 ? at : std::min(first_asked, at);
    const fs::path result = trials_dir(study) / (std::to_string(n) + ".result");
    double told_at = -1;
    if (fs::exists(result)) {
      const json r = json::parse(read_text(result));
      if (r.at("state") == "complete") {
        t.record.state = hpo::TrialState::kComplete;
        t.record.value = r.at("value").get<double>();
      } else {
        t.record.state = hpo::TrialState::kFailed;
        t.error = r.value("error", "");
      }
      told_at = r.value("told_unix", 0.0);
      t.parts = 1;
    }
    told.push_back(told_at);
    trials.push_back(t);
  }
  for (size_t i = 0; i < trials.size(); ++i) trials[i].finished_s = told[i] < 0 ? -1 : told[i] - first_asked;
  return trials;
}

}  // namespace

HpoConfig read_study_config(const std::string& study, const config::Document& environment) {
  const fs::path path = fs::path(study) / "config.yaml";
  HPCML_CHECK_AS(ConfigError, fs::exists(path), "hpo: no study in '", study,
                 "' (no config.yaml): its first `hpcml hpo ask` needs -c CONFIG");
  HpoConfig c = read_hpo_config(environment, config::load(path.string()));
  c.hpo.study_dir = study;
  return c;
}

std::string ask(const std::string& study, const std::optional<HpoConfig>& given) {
  fs::create_directories(trials_dir(study));
  if (given) {
    const std::string text = study_config_text(*given);
    const fs::path path = fs::path(study) / "config.yaml";
    if (!publish_once(path, text)) {
      HPCML_CHECK_AS(ConfigError, read_text(path) == text, "hpo ask: '", study,
                     "' holds a study of another config (its config.yaml differs); ask without -c to continue it, "
                     "or choose another --study");
    }
  }
  HpoConfig c = read_study_config(study, given ? given->environment : environment_layer());
  const int64_t n = claim_trial(study);
  const fs::path claim = trials_dir(study) / (std::to_string(n) + ".claim");
  auto give_up = [&](const std::string& why) {
    ::unlink(claim.c_str());
    HPCML_THROW(ConfigError, "hpo ask: ", why);
  };
  if (n >= c.hpo.trials)
    give_up("the study in '" + study + "' has all its " + std::to_string(c.hpo.trials) + " trials (hpo.trials)");
  const std::vector<hpo::TrialRecord> history = sampler_history(read_trials(c, study));
  hpo::Rng rng = trial_rng(c.hpo.seed, n);
  const auto params = propose(c, *make_study_sampler(c), history, n, rng);
  if (!params) give_up("the grid of the study in '" + study + "' is exhausted (every point was asked)");
  TrainConfig config = trial_config(c, *params, n);
  const fs::path yaml = trials_dir(study) / (std::to_string(n) + ".yaml");
  write_file_atomically(yaml.string(), config::to_yaml(config));
  const json params_json = hpo::SearchSpace::to_json(*params);
  write_file_atomically((trials_dir(study) / (std::to_string(n) + ".json")).string(),
                        json{{"trial", n}, {"params", params_json}, {"asked_unix", unix_now()}}.dump() + "\n");
  return json{{"trial", n}, {"params", params_json}, {"config", yaml.string()}}.dump();
}

void tell(const std::string& study, int64_t n, std::optional<double> value, const std::string& failed_reason) {
  const HpoConfig c = read_study_config(study, environment_layer());
  const fs::path params = trials_dir(study) / (std::to_string(n) + ".json");
  HPCML_CHECK_AS(ConfigError, n >= 0 && fs::exists(params), "hpo tell: trial ", n, " was never asked in '", study,
                 "' (hpcml hpo ask gives trial numbers)");
  if (value) {
    HPCML_CHECK_AS(ConfigError, std::isfinite(*value), "hpo tell: trial ", n, ": value ", *value,
                   " is not a finite number; report a trial that diverged with --failed REASON");
  }
  json result =
      value ? json{{"state", "complete"}, {"value", *value}} : json{{"state", "failed"}, {"error", failed_reason}};
  result["told_unix"] = unix_now();
  const fs::path path = trials_dir(study) / (std::to_string(n) + ".result");
  if (!publish_once(path, result.dump() + "\n")) {
    const json kept = json::parse(read_text(path), nullptr, /*allow_exceptions=*/false);
    HPCML_THROW(ConfigError, "hpo tell: trial ", n, " already has a result (", kept.value("state", "?"),
                kept.contains("value") ? ", value " + kept["value"].dump() : std::string(), "); a trial is told once");
  }
  StudyFacts facts;
  write_outputs(c, read_trials(c, study), facts);
}

}  // namespace hpcml::launch::hpo_driver
