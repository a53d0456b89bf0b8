#include "launch/hpo/study.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <random>
#include <sstream>

#include "core/error.hpp"
#include "core/files.hpp"
#include "launch/base_config.hpp"
#include "launch/run_config.hpp"

namespace hpcml::launch::hpo_driver {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string value_text(const hpo::ParamSpec& spec, double x) {
  return spec.is_int() ? std::to_string(static_cast<int64_t>(x)) : hpo::to_string(hpo::Value(x));
}

// Every end of the space applied to the base alone, read as a training config.
void check_space_against_base(const HpoConfig& c) {
  for (const auto& spec : c.space.params()) {
    std::vector<std::string> values = spec.choices;
    if (!spec.is_categorical()) values = {value_text(spec, spec.low), value_text(spec, spec.high)};
    for (const auto& value : values) {
      config::Document doc = fresh_copy(c.base);
      config::apply_override(doc, spec.key + "=" + value, "hpo.space." + spec.key + " (value " + value + ")");
      TrainConfig probe;
      read_layers(c.environment, doc, probe);
    }
  }
}

int64_t asha_budget(const HpoConfig& c) {
  const auto& s = c.hpo.scheduler;
  const auto& train = c.base_config.train;
  // Without a scheduler: every trial's whole run, in its own unit (for trials.csv).
  if (s.name != "asha") return train.max_steps > 0 ? train.max_steps : train.epochs;
  if (s.max_resource > 0) return s.max_resource;
  if (s.resource == "steps") {
    HPCML_CHECK_AS(ConfigError, train.max_steps > 0,
                   "config error: key 'hpo.scheduler.max_resource': expected a number of steps (resource: steps), "
                   "found 0 and no train.max_steps in the base config");
    return train.max_steps;
  }
  HPCML_CHECK_AS(ConfigError, train.max_steps == 0,
                 "config error: key 'hpo.scheduler.resource': expected steps when the base config sets "
                 "train.max_steps (",
                 train.max_steps, "), found epochs; or set hpo.scheduler.max_resource");
  return train.epochs;
}

// hpo.enqueue: a list of points (each a mapping of every active parameter), checked
// against the space; a bad one is one line naming its index.
std::vector<hpo::Params> read_enqueued(const hpo::SearchSpace& space, const YAML::Node& node) {
  std::vector<hpo::Params> points;
  if (!node.IsDefined() || node.IsNull()) return points;
  HPCML_CHECK_AS(ConfigError, node.IsSequence(), "config error: key 'hpo.enqueue': expected a list of points "
                 "(mappings of parameter: value), found ", config::detail::describe_node(node));
  for (size_t i = 0; i < node.size(); ++i) {
    const std::string key = fmt::format("hpo.enqueue[{}]", i);
    HPCML_CHECK_AS(ConfigError, node[i].IsMap(), "config error: key '", key, "': expected a mapping of parameter: "
                   "value, found ", config::detail::describe_node(node[i]));
    try {
      points.push_back(space.params_from_yaml(node[i]));
    } catch (const ConfigError&) {
      throw;
    } catch (const Error& e) {
      std::string why = e.message();
      if (why.rfind("hpo: ", 0) == 0) why = why.substr(5);
      HPCML_THROW(ConfigError, "config error: key '", key, "': ", why);
    }
  }
  return points;
}

}  // namespace

HpoConfig read_hpo_config(const config::Document& environment, const config::Document& file) {
  HpoConfig c;
  c.environment = environment;
  auto [training, hpo_node] = split_driver_config(file, "hpo", "the study: space, sampler, trials, ...");
  c.section = YAML::Clone(hpo_node);
  c.section.remove("base");
  const YAML::Node space = YAML::Clone(hpo_node["space"]);
  HPCML_CHECK_AS(ConfigError, space.IsDefined() && space.IsMap() && space.size() > 0, "config error in ", file.source,
                 ": key 'hpo.space': expected a mapping of parameters (dotted key: {type, ...}), found ",
                 space.IsDefined() ? config::detail::describe_node(space) : "nothing");
  hpo_node.remove("space");
  const YAML::Node enqueue = YAML::Clone(hpo_node["enqueue"]);
  hpo_node.remove("enqueue");
  config::Reader reader(hpo_node, "hpo", file);
  c.hpo.describe(reader);
  reader.finish();
  c.space = hpo::SearchSpace::from_yaml(space, "hpo.space");
  c.enqueue = read_enqueued(c.space, enqueue);
  c.direction = hpo::parse_direction(c.hpo.direction);
  std::error_code ec;
  HPCML_CHECK_AS(
      ConfigError,
      !c.hpo.study_dir.empty() && (!fs::exists(c.hpo.study_dir, ec) || fs::is_directory(c.hpo.study_dir, ec)),
      "config error: key 'hpo.study_dir': expected a directory (new or a study's), found '", c.hpo.study_dir, "'",
      c.hpo.study_dir.empty() ? "" : " (not a directory)");

  c.base = base_training_document(file, training, c.hpo.base, "hpo");
  read_layers(environment, c.base, c.base_config);
  const auto& data = c.base_config.data;
  const bool validation = data.name == "synthetic" ? data.validation_samples > 0 : !data.validation_files.empty();
  HPCML_CHECK_AS(ConfigError, validation,
                 "config error: key 'hpo.metric': trials are scored on a validation set, "
                 "but the base config has none (set ",
                 data.name == "synthetic" ? "data.validation_samples > 0" : "data.validation_files", ")");
  HPCML_CHECK_AS(ConfigError, c.base_config.train.pack == 1,
                 "config error: key 'train.pack': expected 1 in an HPO base config (a trial is one model), found ",
                 c.base_config.train.pack);
  c.max_resource = asha_budget(c);
  if (c.hpo.scheduler.name == "asha") {
    hpo::Asha probe(c.direction, {c.hpo.scheduler.grace_period, c.hpo.scheduler.reduction_factor, c.max_resource});
  }
  make_study_sampler(c);  // the grid's own checks
  check_space_against_base(c);
  return c;
}

std::string trial_dir(const std::string& study_dir, int64_t n) {
  return (fs::path(study_dir) / "trials" / std::to_string(n)).string();
}

TrainConfig trial_config(const HpoConfig& c, const hpo::Params& params, int64_t n) {
  config::Document doc = fresh_copy(c.base);
  for (const auto& [key, value] : params) {
    config::apply_override(doc, key + "=" + hpo::to_string(value), fmt::format("hpo trial {} ({})", n, key));
  }
  TrainConfig t;
  read_layers(c.environment, doc, t);
  t.run.dir = trial_dir(c.hpo.study_dir, n);
  t.run.resume = "auto";
  t.run.overwrite = false;
  if (c.hpo.scheduler.name == "asha") {
    if (c.hpo.scheduler.resource == "epochs") {
      t.train.epochs = static_cast<int>(c.max_resource);
      t.train.max_steps = 0;
    } else {
      t.train.max_steps = static_cast<int>(c.max_resource);
    }
  }
  return t;
}

json study_identity(const HpoConfig& c) {
  json space = json::object();
  for (const auto& spec : c.space.params()) {
    json p = {{"type", hpo::to_string(spec.type)},
              {"low", spec.low},
              {"high", spec.high},
              {"log", spec.log},
              {"choices", spec.choices}};
    if (spec.condition) p["when"] = {{spec.condition->parent, spec.condition->values}};
    space[spec.key] = p;
  }
  const auto& s = c.hpo.scheduler;
  json identity = {{"space", space},
          {"sampler", c.hpo.sampler},
          {"seed", c.hpo.seed},
          {"metric", c.hpo.metric},
          {"direction", c.hpo.direction},
          {"scheduler",
           {{"name", s.name},
            {"resource", s.resource},
            {"grace_period", s.grace_period},
            {"reduction_factor", s.reduction_factor},
            {"max_resource", c.max_resource}}},
          {"tpe",
           {{"startup_trials", c.hpo.tpe.startup_trials},
            {"ei_candidates", c.hpo.tpe.ei_candidates},
            {"constant_liar", c.hpo.tpe.constant_liar},
            {"multivariate", c.hpo.tpe.multivariate}}},
          {"base", base_identity(c.base_config)}};
  if (!c.enqueue.empty()) {  // absent otherwise: studies from before hpo.enqueue keep their identity
    identity["enqueue"] = json::array();
    for (const auto& p : c.enqueue) identity["enqueue"].push_back(hpo::SearchSpace::to_json(p));
  }
  if (s.name == "asha") identity["scheduler"]["mode"] = s.mode;
  // Absent when last: studies from before hpo.scheduler.rung_value keep their identity.
  if (s.name == "asha" && s.rung_value != "last") identity["scheduler"]["rung_value"] = s.rung_value;
  return identity;
}

std::unique_ptr<hpo::Sampler> make_study_sampler(const HpoConfig& c) {
  hpo::SamplerOptions options;
  options.name = c.hpo.sampler;
  options.direction = c.direction;
  options.tpe.n_startup_trials = c.hpo.tpe.startup_trials;
  options.tpe.n_ei_candidates = c.hpo.tpe.ei_candidates;
  options.tpe.constant_liar = c.hpo.tpe.constant_liar;
  options.tpe.multivariate = c.hpo.tpe.multivariate;
  return hpo::make_sampler(c.space, options);
}

hpo::Rng trial_rng(int seed, int64_t n) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(n), static_cast<uint32_t>(n >> 32)};
  return hpo::Rng(seq);
}

const char* to_string(hpo::TrialState state) {
  switch (state) {
    case hpo::TrialState::kRunning:
      return "running";
    case hpo::TrialState::kComplete:
      return "complete";
    case hpo::TrialState::kPruned:
      return "pruned";
    case hpo::TrialState::kFailed:
      return "failed";
  }
  return "?";
}

// ---- the study as results arrive ----------------------------------------------

Study::Study(const HpoConfig& c, double started_unix)
    : c_(c), started_unix_(started_unix), sampler_(make_study_sampler(c)) {
  const auto& s = c.hpo.scheduler;
  if (s.name == "asha")
    asha_.emplace(c.direction, hpo::AshaOptions{s.grace_period, s.reduction_factor, c.max_resource});
  promote_ = asha_ && s.mode == "promote";
}

std::vector<farm::Task> Study::start(int workers) {
  workers_ = static_cast<size_t>(std::max(workers, 0));
  return hand_out(std::nullopt);
}

// Work for every free group: `own` (a trial's next part, stopping form) first, then
// promotions (promotion form), then new trials.
std::vector<farm::Task> Study::hand_out(std::optional<farm::Task> own) {
  std::vector<farm::Task> next;
  if (own) next.push_back(std::move(*own));
  while (in_flight_ + next.size() < workers_) {
    std::optional<farm::Task> task;
    if (promote_) {
      if (const auto p = asha_->promote()) {
        trials_.at(static_cast<size_t>(p->trial)).record.state = hpo::TrialState::kRunning;
        task = part(p->trial, p->to);
      }
    }
    if (!task) task = ask();
    if (!task) break;
    next.push_back(std::move(*task));
  }
  in_flight_ += next.size();
  return next;
}

std::vector<hpo::TrialRecord> sampler_history(const std::vector<Trial>& trials) {
  std::vector<hpo::TrialRecord> records;
  records.reserve(trials.size());
  for (const auto& t : trials) {
    hpo::TrialRecord r = t.record;
    // A failed point (diverged, raised) is a bad point: it joins TPE's bad group as a trial
    // stopped before its first rung, rather than being forgotten and proposed again.
    if (r.state == hpo::TrialState::kFailed) {
      r.state = hpo::TrialState::kPruned;
      r.value.reset();
      r.resource = 0;
    }
    // A trial running past a rung (continued or promoted) has a known value there: the sampler
    // sees it as stopped at that rung, not as a pending point that the constant liar would count
    // bad. Those trials are the study's best so far.
    if (r.state == hpo::TrialState::kRunning && !t.rungs.empty()) {
      r.state = hpo::TrialState::kPruned;
      r.value = t.rungs.back().second;
      r.resource = static_cast<double>(t.rungs.back().first);
    }
    records.push_back(r);
  }
  return records;
}

std::optional<hpo::Params> propose(const HpoConfig& c, const hpo::Sampler& sampler,
                                   const std::vector<hpo::TrialRecord>& history, int64_t n, hpo::Rng& rng) {
  if (n < static_cast<int64_t>(c.enqueue.size())) return c.enqueue[static_cast<size_t>(n)];
  return sampler.ask(history, rng);
}

std::vector<hpo::TrialRecord> Study::history() const { return sampler_history(trials_); }

std::optional<farm::Task> Study::ask() {
  if (exhausted_ || static_cast<int64_t>(trials_.size()) >= c_.hpo.trials) return std::nullopt;
  const auto n = static_cast<int64_t>(trials_.size());
  hpo::Rng rng = trial_rng(c_.hpo.seed, n);
  const auto params = propose(c_, *sampler_, history(), n, rng);
  if (!params) {
    exhausted_ = true;
    return std::nullopt;
  }
  Trial trial;
  trial.record.number = n;
  trial.record.params = *params;
  trials_.push_back(trial);
  return part(n, asha_ && !asha_->rungs().empty() ? asha_->rungs().front() : 0);
}

farm::Task Study::part(int64_t n, int64_t until) {
  json spec = {{"trial", n}, {"params", hpo::SearchSpace::to_json(trials_.at(n).record.params)}, {"until", until}};
  farm::Task task{until > 0 ? fmt::format("trial-{}@{}", n, until) : fmt::format("trial-{}", n), spec};
  specs_[task.id] = spec;
  return task;
}

int64_t Study::next_rung(int64_t until) const {
  for (int64_t r : asha_->rungs()) {
    if (r > until) return r;
  }
  return c_.max_resource;
}

std::vector<farm::Task> Study::on_result(const farm::TaskResult& r) {
  const auto spec = specs_.find(r.id);
  HPCML_CHECK(spec != specs_.end(), "hpo: a result for task '", r.id, "', which this study never handed out");
  const int64_t n = spec->second.at("trial").get<int64_t>();
  const int64_t until = spec->second.at("until").get<int64_t>();
  Trial& t = trials_.at(n);
  ++t.parts;
  t.seconds += r.seconds;
  if (in_flight_ > 0) --in_flight_;
  std::optional<farm::Task> own;  // the trial's next part, when it goes on at once
  if (!r.ok) {
    t.record.state = hpo::TrialState::kFailed;
    t.error = r.error;
  } else {
    const bool rung = ends_at_rung(c_, until);
    // At a rung, what the rung ranks (hpo.scheduler.rung_value); a complete trial's last value.
    const json& v = rung && r.result.contains("rung_value") ? r.result.at("rung_value") : r.result.at("value");
    const double value = v.is_number() ? v.get<double>() : std::nan("");
    if (rung) {
      t.rungs.emplace_back(until, value);
      if (promote_) {
        asha_->record(n, until, value);
      } else if (asha_->report(n, until, value) == hpo::AshaDecision::kContinue) {
        own = part(n, next_rung(until));
      }
      if (!own) {  // paused until a promotion (promotion form), or stopped for good
        t.record.state = hpo::TrialState::kPruned;
        t.record.value = value;
        t.record.resource = static_cast<double>(until);
      }
    } else {
      t.record.state = hpo::TrialState::kComplete;
      t.record.value = value;
      t.record.resource = static_cast<double>(c_.max_resource);
    }
  }
  if (!own) {
    const double finished =
        r.ok && r.result.contains("finished_unix") ? r.result.at("finished_unix").get<double>() : unix_now();
    t.finished_s = std::max(0.0, finished - started_unix_);
  }
  return hand_out(std::move(own));
}

// ---- outputs -------------------------------------------------------------------

const Trial* best_trial(const std::vector<Trial>& trials, hpo::Direction direction) {
  const Trial* best = nullptr;
  for (const auto& t : trials) {
    if (t.record.state != hpo::TrialState::kComplete || !t.record.value || !std::isfinite(*t.record.value)) continue;
    if (best == nullptr || hpo::is_better(*t.record.value, *best->record.value, direction)) best = &t;
  }
  return best;
}

namespace {

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char ch : text) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

std::string number_text(double x) { return hpo::to_string(hpo::Value(x)); }

std::string trials_csv(const HpoConfig& c, const std::vector<Trial>& trials) {
  std::ostringstream out;
  out << "trial,state,value,resource,seconds,finished_s,parts";
  for (const auto& spec : c.space.params()) out << "," << csv_field(spec.key);
  out << ",error\n";
  for (const auto& t : trials) {
    out << t.record.number << "," << to_string(t.record.state) << ","
        << (t.record.value ? number_text(*t.record.value) : "") << "," << number_text(t.record.resource) << ","
        << number_text(t.seconds) << "," << (t.finished_s >= 0 ? number_text(t.finished_s) : "") << "," << t.parts;
    for (const auto& spec : c.space.params()) {
      const auto it = t.record.params.find(spec.key);
      out << "," << (it == t.record.params.end() ? "" : csv_field(hpo::to_string(it->second)));
    }
    out << "," << csv_field(t.error) << "\n";
  }
  return out.str();
}

json trial_json(const Trial& t) {
  json j = {{"trial", t.record.number},
            {"state", to_string(t.record.state)},
            {"params", hpo::SearchSpace::to_json(t.record.params)},
            {"seconds", t.seconds},
            {"parts", t.parts}};
  if (t.record.value) j["value"] = *t.record.value;
  if (t.record.state == hpo::TrialState::kComplete || t.record.state == hpo::TrialState::kPruned)
    j["resource"] = t.record.resource;
  if (t.finished_s >= 0) j["finished_s"] = t.finished_s;
  if (!t.rungs.empty()) {
    j["rungs"] = json::array();
    for (const auto& [resource, value] : t.rungs) j["rungs"].push_back({{"resource", resource}, {"value", value}});
  }
  if (!t.error.empty()) j["error"] = t.error;
  return j;
}

// The best complete value so far, each time it improved, by finishing time.
json best_so_far(const std::vector<Trial>& trials, hpo::Direction direction) {
  std::vector<const Trial*> done;
  for (const auto& t : trials) {
    if (t.record.state == hpo::TrialState::kComplete && t.record.value && t.finished_s >= 0) done.push_back(&t);
  }
  std::stable_sort(done.begin(), done.end(),
                   [](const Trial* a, const Trial* b) { return a->finished_s < b->finished_s; });
  json out = json::array();
  std::optional<double> best;
  for (const Trial* t : done) {
    if (best && !hpo::is_better(*t->record.value, *best, direction)) continue;
    best = *t->record.value;
    out.push_back({{"t_s", t->finished_s}, {"best", *best}, {"trial", t->record.number}});
  }
  return out;
}

json space_json(const hpo::SearchSpace& space) {
  json out = json::object();
  for (const auto& spec : space.params()) {
    json p = {{"type", hpo::to_string(spec.type)}, {"log", spec.log}};
    if (spec.is_categorical())
      p["choices"] = spec.choices;
    else
      p["range"] = {spec.low, spec.high};
    out[spec.key] = p;
  }
  return out;
}

// Written under a name of this process's own, then renamed: ask/tell processes may write at once.
void write_output(const fs::path& path, const std::string& text) {
  const std::string tmp = path.string() + "." + std::to_string(::getpid()) + ".tmp";
  write_file_atomically(tmp, text);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  HPCML_CHECK_AS(IoError, !ec, "cannot rename '", tmp, "' to '", path.string(), "': ", ec.message());
}

}  // namespace

void write_outputs(const HpoConfig& c, const std::vector<Trial>& trials, const StudyFacts& facts) {
  const fs::path dir = c.hpo.study_dir;
  fs::create_directories(dir);
  std::map<std::string, int> counts{{"running", 0}, {"complete", 0}, {"pruned", 0}, {"failed", 0}};
  json list = json::array();
  for (const auto& t : trials) {
    ++counts[to_string(t.record.state)];
    list.push_back(trial_json(t));
  }
  json summary = {{"metric", c.hpo.metric},
                  {"direction", c.hpo.direction},
                  {"sampler", c.hpo.sampler},
                  {"scheduler", c.hpo.scheduler.name},
                  {"counts", counts},
                  {"workers", facts.workers},
                  {"ranks_per_trial", facts.ranks_per_trial},
                  {"idle_ranks", facts.idle_ranks},
                  {"wall_s", facts.wall_s},
                  {"interrupted", facts.interrupted},
                  {"space", space_json(c.space)},
                  {"best_so_far", best_so_far(trials, c.direction)},
                  {"trials", list}};
  if (facts.idle_fraction >= 0) summary["group_idle_fraction"] = facts.idle_fraction;
  const Trial* best = best_trial(trials, c.direction);
  if (best != nullptr) {
    summary["best"] = {{"trial", best->record.number},
                       {"value", *best->record.value},
                       {"params", hpo::SearchSpace::to_json(best->record.params)},
                       {"run_dir", trial_dir(c.hpo.study_dir, best->record.number)}};
    TrainConfig config = trial_config(c, best->record.params, best->record.number);
    config.run = RunSection{};
    write_output(dir / "best.yaml",
                 fmt::format("# hpcml hpo: trial {} of {}, {} = {}; train it with hpcml train -c\n",
                             best->record.number, c.hpo.study_dir, c.hpo.metric, number_text(*best->record.value)) +
                     config::to_yaml(config));
  }
  write_output(dir / "trials.csv", trials_csv(c, trials));
  write_output(dir / "summary.json", summary.dump(2) + "\n");
}

}  // namespace hpcml::launch::hpo_driver
