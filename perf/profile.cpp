#include "perf/profile.hpp"

#include <cmath>

#include "core/error.hpp"

namespace hpcml::perf {

namespace {

using nlohmann::json;

std::string found(const json& doc, const std::string& key) {
  return doc.contains(key) ? doc[key].dump() : std::string("nothing");
}

// A number > 0 (positive) or >= 0; integers where `integer`.
double number(const json& doc, const std::string& key, const std::string& prefix, bool positive, bool integer,
              const std::string& what) {
  const json* v = doc.contains(key) ? &doc[key] : nullptr;
  const double x = v != nullptr && v->is_number() ? v->get<double>() : NAN;
  const bool ok = std::isfinite(x) && (positive ? x > 0 : x >= 0) && (!integer || std::floor(x) == x);
  HPCML_CHECK_AS(ConfigError, ok, what, ": key '", prefix, key, "': expected ",
                 integer ? (positive ? "a positive integer" : "an integer >= 0")
                         : (positive ? "a positive number" : "a number >= 0"),
                 ", found ", found(doc, key));
  return x;
}

std::vector<std::int64_t> byte_list(const json& doc, const std::string& key, const std::string& what) {
  const json& list = doc[key];
  HPCML_CHECK_AS(ConfigError, list.is_array() && !list.empty(), what, ": key '", key,
                 "': expected a non-empty list of positive byte counts, found ", list.dump());
  std::vector<std::int64_t> out;
  for (size_t i = 0; i < list.size(); ++i) {
    const bool ok = list[i].is_number_integer() && list[i].get<std::int64_t>() > 0;
    HPCML_CHECK_AS(ConfigError, ok, what, ": key '", key, "[", i, "]': expected a positive integer, found ",
                   list[i].dump());
    out.push_back(list[i].get<std::int64_t>());
  }
  return out;
}

void read_reducer(const json& doc, Profile& p, const std::string& what) {
  if (!doc.contains("reducer")) return;
  const json& r = doc["reducer"];
  HPCML_CHECK_AS(ConfigError, r.is_object(), what, ": key 'reducer': expected an object, found ", r.dump());
  if (r.contains("first_bucket_bytes"))
    p.buckets.first_bucket_bytes =
        static_cast<std::int64_t>(number(r, "first_bucket_bytes", "reducer.", true, true, what));
  if (r.contains("bucket_cap_bytes"))
    p.buckets.bucket_cap_bytes = static_cast<std::int64_t>(number(r, "bucket_cap_bytes", "reducer.", true, true, what));
  if (r.contains("direct_min_bytes"))
    p.buckets.direct_min_bytes = static_cast<std::int64_t>(number(r, "direct_min_bytes", "reducer.", true, true, what));
  if (r.contains("overlap")) {
    HPCML_CHECK_AS(ConfigError, r["overlap"].is_boolean(), what,
                   ": key 'reducer.overlap': expected true or false, found ", r["overlap"].dump());
    p.overlap = r["overlap"].get<bool>();
  }
}

}  // namespace

Profile profile_from_json(const json& doc, const std::string& what) {
  HPCML_CHECK_AS(ConfigError, doc.is_object(), what,
                 ": expected a JSON object (a profile from hpcml bench scaling), "
                 "found ",
                 doc.type_name());
  Profile p;
  if (doc.contains("model")) {
    HPCML_CHECK_AS(ConfigError, doc["model"].is_string(), what, ": key 'model': expected a string, found ",
                   doc["model"].dump());
    p.model = doc["model"].get<std::string>();
  }
  p.batch_per_rank = number(doc, "batch_per_rank", "", true, true, what);
  if (doc.contains("threads_per_rank"))
    p.threads_per_rank = static_cast<int>(number(doc, "threads_per_rank", "", true, true, what));
  p.compute_per_sample_s = number(doc, "compute_per_sample_s", "", true, false, what);
  p.optimizer_per_step_s = number(doc, "optimizer_per_step_s", "", false, false, what);
  p.data_per_sample_s = number(doc, "data_per_sample_s", "", false, false, what);
  HPCML_CHECK_AS(ConfigError, doc.contains("buckets_bytes") || doc.contains("parameter_bytes"), what,
                 ": expected key 'buckets_bytes' or 'parameter_bytes' (the gradients to reduce), found neither");
  if (doc.contains("parameter_bytes")) p.parameter_bytes = byte_list(doc, "parameter_bytes", what);
  if (doc.contains("buckets_bytes")) p.buckets_bytes = byte_list(doc, "buckets_bytes", what);
  read_reducer(doc, p, what);
  if (doc.contains("backward_fraction")) {
    p.backward_fraction = number(doc, "backward_fraction", "", true, false, what);
    HPCML_CHECK_AS(ConfigError, p.backward_fraction <= 1, what, ": key 'backward_fraction': expected a number in "
                   "(0, 1], found ", p.backward_fraction);
  }
  if (doc.contains("step_compute_s")) {
    const json& list = doc["step_compute_s"];
    HPCML_CHECK_AS(ConfigError, list.is_array(), what, ": key 'step_compute_s': expected a list of seconds, found ",
                   list.dump());
    for (size_t i = 0; i < list.size(); ++i) {
      const bool ok = list[i].is_number() && std::isfinite(list[i].get<double>()) && list[i].get<double>() > 0;
      HPCML_CHECK_AS(ConfigError, ok, what, ": key 'step_compute_s[", i, "]': expected a positive number, found ",
                     list[i].dump());
      p.step_compute_s.push_back(list[i].get<double>());
    }
  }
  return p;
}

StepInputs step_inputs(const Profile& p) {
  StepInputs in;
  in.compute_per_sample_s = p.compute_per_sample_s;
  in.batch_per_rank = p.batch_per_rank;
  in.optimizer_per_step_s = p.optimizer_per_step_s;
  in.data_per_sample_s = p.data_per_sample_s;
  in.overlap = p.overlap;
  if (p.backward_fraction > 0) in.backward_fraction = p.backward_fraction;
  in.step_compute_s = p.step_compute_s;
  in.reductions = p.buckets_bytes.empty() ? bucket_parameters(p.parameter_bytes, p.buckets)
                                          : reductions_from_buckets(p.buckets_bytes);
  return in;
}

}  // namespace hpcml::perf
