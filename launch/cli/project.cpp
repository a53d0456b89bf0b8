// `hpcml project train|fit|service|systems`: the performance model of issue 32 (perf/) on the
// command line. A plain serial command: rank 0 reads, computes and prints; no collective.
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.hpp"
#include "core/files.hpp"
#include "launch/cli/command.hpp"
#include "perf/perf.hpp"

namespace hpcml::launch::cli {

namespace {

using nlohmann::json;

// A file's text; one line naming it when it cannot be read.
std::string read_text(const std::string& path, const std::string& option) {
  std::ifstream in(path);
  HPCML_CHECK_AS(ConfigError, in.good(), "project: ", option, " ", path, ": cannot read it (", std::strerror(errno),
                 ")");
  std::stringstream text;
  text << in.rdbuf();
  HPCML_CHECK_AS(ConfigError, !in.bad(), "project: ", option, " ", path, ": cannot read it (a directory?)");
  return text.str();
}

json read_json(const std::string& path, const std::string& option) {
  const json doc = json::parse(read_text(path, option), nullptr, /*allow_exceptions=*/false);
  HPCML_CHECK_AS(ConfigError, !doc.is_discarded(), "project: ", path, ": not valid JSON");
  return doc;
}

// "1,2,4" or "64,128,...,4096" (a geometric series from the first two terms to the last).
std::vector<int> parse_counts(const std::string& text, const std::string& option) {
  const std::string what = "project: " + option;
  std::vector<std::string> items;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) items.push_back(item);
  std::vector<long long> values;
  bool series = false;
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i] == "...") {
      HPCML_CHECK_AS(ConfigError, !series && i == 2 && items.size() == 4, what,
                     ": expected A,B,...,Z (a geometric series) or a list of counts, found '", text, "'");
      series = true;
      continue;
    }
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(items[i].c_str(), &end, 10);
    HPCML_CHECK_AS(ConfigError, !items[i].empty() && *end == '\0' && errno == 0 && v >= 1 && v <= 10000000, what,
                   ": expected counts in [1, 10000000] separated by commas, found '", items[i], "'");
    values.push_back(v);
  }
  HPCML_CHECK_AS(ConfigError, !values.empty(), what, ": expected at least one count, found '", text, "'");
  if (!series) return std::vector<int>(values.begin(), values.end());
  const long long a = values[0], b = values[1], z = values[2];
  HPCML_CHECK_AS(ConfigError, b % a == 0 && b / a >= 2 && z >= b, what,
                 ": expected A,B,...,Z with B a multiple (>= 2) ", "of A and Z >= B, found '", text, "'");
  std::vector<int> out;
  for (long long v = a; v <= z; v *= b / a) out.push_back(static_cast<int>(v));
  return out;
}

json link_json(const perf::Link& link) {
  return {{"alpha_s", link.alpha_s},
          {"beta_s_per_byte", link.beta_s_per_byte},
          {"bandwidth_gb_per_s", 1e-9 / link.beta_s_per_byte}};
}

json system_json(const perf::System& s) {
  return {{"name", s.name},
          {"description", s.description},
          {"source", s.source},
          {"ranks_per_node", s.topology.ranks_per_node},
          {"intra", link_json(s.topology.intra)},
          {"network", link_json(s.topology.network)},
          {"gamma_s_per_byte", s.topology.gamma_s_per_byte},
          {"algorithm", perf::to_string(s.algorithm)}};
}

void write_json(const std::string& path, const json& doc) {
  if (!path.empty()) write_file_atomically(path, doc.dump(2) + "\n");
}

// ---- project train ---------------------------------------------------------------------

struct TrainOptions {
  std::string profile, system = "perlmutter-gpu", ranks = "1,2,4,8,16,32,64,128,256,512,1024,2048,4096";
  std::string mode = "weak", algorithm, json_path;
  double global_batch = 0, compute_per_sample = 0;
  double backward_fraction = 0;  ///< 0: the profile's, else 2/3
};

void print_train(const perf::Profile& profile, const perf::System& system, const TrainOptions& o,
                 perf::Algorithm algorithm, const std::vector<perf::StepResult>& rows) {
  std::printf("projection (model, not a measurement): %s on %s (%d ranks per node), %s scaling, ",
              profile.model.empty() ? "the profile" : profile.model.c_str(), system.name.c_str(),
              system.topology.ranks_per_node, o.mode.c_str());
  if (o.mode == "strong") {
    std::printf("global batch %g", o.global_batch);
  } else {
    std::printf("%g samples per rank", profile.batch_per_rank);
  }
  std::printf(", allreduce %s, overlap %s\n", perf::to_string(algorithm), profile.overlap ? "on" : "off");
  std::printf("%8s %7s %10s %10s %11s %11s %9s %9s %8s %10s %12s\n", "ranks", "nodes", "batch/rank", "step_ms",
              "compute_ms", "exposed_ms", "comm_ms", "data_ms", "opt_ms", "efficiency", "samples/s");
  for (const auto& r : rows) {
    std::printf("%8d %7d %10.4g %10.3f %11.3f %11.3f %9.3f %9.3f %8.3f %10.3f %12.1f\n", r.ranks, r.nodes,
                r.batch_per_rank, r.step_s * 1e3, r.compute_s * 1e3, r.exposed_comm_s * 1e3, r.comm_s * 1e3,
                r.data_s * 1e3, r.optimizer_s * 1e3, r.efficiency, r.samples_per_s);
  }
  std::fflush(stdout);
}

json train_json(const perf::Profile& profile, const perf::System& system, const TrainOptions& o,
                perf::Algorithm algorithm, const perf::StepInputs& inputs, const std::vector<perf::StepResult>& rows) {
  json reductions = json::array();
  for (const auto& red : inputs.reductions) reductions.push_back(red.bytes);
  json out_rows = json::array();
  for (const auto& r : rows) {
    out_rows.push_back({{"ranks", r.ranks},
                        {"nodes", r.nodes},
                        {"batch_per_rank", r.batch_per_rank},
                        {"step_s", r.step_s},
                        {"compute_s", r.compute_s},
                        {"straggler_s", r.straggler_s},
                        {"backward_s", r.backward_s},
                        {"comm_s", r.comm_s},
                        {"exposed_comm_s", r.exposed_comm_s},
                        {"data_s", r.data_s},
                        {"optimizer_s", r.optimizer_s},
                        {"samples_per_s", r.samples_per_s},
                        {"efficiency", r.efficiency}});
  }
  return {{"kind", "projection"},
          {"model", profile.model},
          {"profile", o.profile},
          {"system", system_json(system)},
          {"algorithm", perf::to_string(algorithm)},
          {"mode", o.mode},
          {"global_batch", o.mode == "strong" ? json(o.global_batch) : json(nullptr)},
          {"batch_per_rank", profile.batch_per_rank},
          {"compute_per_sample_s", inputs.compute_per_sample_s},
          {"optimizer_per_step_s", inputs.optimizer_per_step_s},
          {"data_per_sample_s", inputs.data_per_sample_s},
          {"backward_fraction", inputs.backward_fraction},
          {"overlap", inputs.overlap},
          {"straggler_samples", inputs.step_compute_s.size()},
          {"reductions_bytes", reductions},
          {"rows", out_rows}};
}

int run_train(const Context& c, const TrainOptions& o) {
  const std::string where = "project: " + o.profile;
  const perf::Profile profile = perf::profile_from_json(read_json(o.profile, "--profile"), where);
  const perf::System system = perf::find_system(o.system, "project: --system");
  const perf::Algorithm algorithm =
      o.algorithm.empty() ? system.algorithm : perf::parse_algorithm(o.algorithm, "project: --algorithm");
  const perf::ScalingMode mode = perf::parse_scaling_mode(o.mode, "project: --mode");
  HPCML_CHECK_AS(ConfigError, mode == perf::ScalingMode::kWeak || o.global_batch > 0,
                 "project: --mode strong needs --global-batch G (samples per step over all ranks)");
  HPCML_CHECK_AS(ConfigError, o.backward_fraction >= 0 && o.backward_fraction <= 1,
                 "project: --backward-fraction: expected a number in (0, 1], found ", o.backward_fraction);
  HPCML_CHECK_AS(ConfigError, o.compute_per_sample >= 0,
                 "project: --compute-per-sample: expected a positive number of seconds, found ", o.compute_per_sample);
  perf::StepInputs inputs = perf::step_inputs(profile);
  if (o.compute_per_sample > 0) inputs.compute_per_sample_s = o.compute_per_sample;
  if (o.backward_fraction > 0) inputs.backward_fraction = o.backward_fraction;
  const std::vector<int> ranks = parse_counts(o.ranks, "--ranks");
  const auto rows = perf::project_scaling(inputs, ranks, system.topology, algorithm, mode, o.global_batch);
  if (c.env.rank != 0) return 0;
  print_train(profile, system, o, algorithm, rows);
  write_json(o.json_path, train_json(profile, system, o, algorithm, inputs, rows));
  return 0;
}

void add_train(CLI::App* project, Runner& selected) {
  auto o = std::make_shared<TrainOptions>();
  auto* sub = project->add_subcommand(
      "train",
      "Project data-parallel training to N ranks on a system: step time, its breakdown, efficiency against "
      "one rank and samples/s, from a profile (compute per sample, buckets) and the alpha-beta model "
      "(docs/scaling.md)");
  sub->add_option("--profile", o->profile, "PROFILE.json from hpcml bench scaling")->required();
  sub->add_option("--system", o->system, "A preset (hpcml project systems) or a system file (YAML/JSON)")
      ->capture_default_str();
  sub->add_option("--ranks", o->ranks, "Rank counts: a list (64,128) or a geometric series (64,128,...,4096)")
      ->capture_default_str();
  sub->add_option("--mode", o->mode, "weak (batch per rank fixed) or strong (global batch fixed)")
      ->capture_default_str();
  sub->add_option("--global-batch", o->global_batch, "Samples per step over all ranks (strong scaling)");
  sub->add_option("--compute-per-sample", o->compute_per_sample,
                  "Seconds of forward + backward per sample on the target (replaces the profile's)");
  sub->add_option("--algorithm", o->algorithm,
                  "ring, recursive_doubling, rabenseifner, tree, hierarchical or auto (default: the system's)");
  sub->add_option("--backward-fraction", o->backward_fraction,
                  "Backward's share of the compute time (default: the profile's backward_fraction, else 2/3)");
  sub->add_option("--json", o->json_path, "Also write the projection as JSON to this file");
  sub->callback([sub, &selected, o] {
    // Given, a number must mean something: 0 is not "use the profile's".
    for (const char* flag : {"--global-batch", "--compute-per-sample"}) {
      const double v = sub->get_option(flag)->count() > 0 ? sub->get_option(flag)->as<double>() : 1;
      if (!(v > 0)) throw CLI::ValidationError(std::string("project train: ") + flag + ": expected a positive number");
    }
    if (sub->get_option("--algorithm")->count() > 0) perf::parse_algorithm(o->algorithm, "project: --algorithm");
    if (!o->json_path.empty()) check_output_path(o->json_path, {o->profile, o->system}, "--json");
    selected = [o](Context& c) { return run_train(c, *o); };
  });
}

// ---- project fit -----------------------------------------------------------------------

struct FitOptions {
  std::string allreduce, impl = "mpi", path = "blocking", algorithm = "ring", json_path, system_out;
  int ranks = 0, ranks_per_node = 0;
  double min_bytes = 0, max_bytes = 0;  // 0: no bound
};

int run_fit(const Context& c, const FitOptions& o) {
  const std::string where = "project: " + o.allreduce;
  const perf::Algorithm algorithm = perf::parse_algorithm(o.algorithm, "project: --algorithm");
  HPCML_CHECK_AS(ConfigError, o.ranks >= 0 && o.ranks_per_node >= 0,
                 "project: --ranks and --ranks-per-node: expected positive counts");
  std::vector<perf::Measurement> points;
  for (const auto& m : perf::allreduce_rows(read_json(o.allreduce, "--allreduce"), o.impl, o.path, o.ranks, where)) {
    if (m.bytes >= o.min_bytes && (o.max_bytes <= 0 || m.bytes <= o.max_bytes)) points.push_back(m);
  }
  HPCML_CHECK_AS(ConfigError, !points.empty(), where, ": no rows between --min-bytes ", o.min_bytes,
                 " and --max-bytes ", o.max_bytes);
  const perf::LinkFit fit = perf::fit_link(points, algorithm, where);
  perf::System system;
  system.name = "fitted-" + o.impl;
  system.description = "alpha and beta fitted to " + o.allreduce + " (impl " + o.impl + ", path " + o.path + ", " +
                       std::to_string(points.front().ranks) + " ranks, " + o.algorithm + ")";
  system.source =
      "hpcml project fit; the network link is set equal to the fitted one-node link (unknown from a "
      "one-node fit: edit it for a cluster)";
  system.topology.ranks_per_node = o.ranks_per_node > 0 ? o.ranks_per_node : points.front().ranks;
  system.topology.intra = fit.link;
  system.topology.network = fit.link;
  system.algorithm = algorithm;
  if (c.env.rank != 0) return 0;
  std::printf("fit of %s (impl %s, path %s, %d ranks, %s): alpha %.3f us, beta %.4g s/byte (%.3f GB/s)%s\n",
              o.allreduce.c_str(), o.impl.c_str(), o.path.c_str(), points.front().ranks, o.algorithm.c_str(),
              fit.link.alpha_s * 1e6, fit.link.beta_s_per_byte, 1e-9 / fit.link.beta_s_per_byte,
              fit.alpha_clamped ? " [alpha clamped at 0: the unconstrained fit was negative]" : "");
  std::printf("%12s %14s %14s %10s\n", "bytes", "measured_us", "predicted_us", "residual");
  json rows = json::array();
  for (size_t i = 0; i < points.size(); ++i) {
    std::printf("%12.0f %14.2f %14.2f %9.1f%%\n", points[i].bytes, points[i].seconds * 1e6, fit.predicted_s[i] * 1e6,
                fit.relative_residual[i] * 100);
    rows.push_back({{"bytes", points[i].bytes},
                    {"seconds", points[i].seconds},
                    {"predicted_s", fit.predicted_s[i]},
                    {"relative_residual", fit.relative_residual[i]}});
  }
  std::printf("relative residuals: rms %.1f%%, max %.1f%%\n", fit.rms_relative_residual * 100,
              fit.max_abs_relative_residual * 100);
  std::fflush(stdout);
  write_json(o.json_path, {{"impl", o.impl},
                           {"min_bytes", o.min_bytes},
                           {"max_bytes", o.max_bytes},
                           {"path", o.path},
                           {"algorithm", o.algorithm},
                           {"ranks", points.front().ranks},
                           {"alpha_s", fit.link.alpha_s},
                           {"beta_s_per_byte", fit.link.beta_s_per_byte},
                           {"bandwidth_gb_per_s", 1e-9 / fit.link.beta_s_per_byte},
                           {"alpha_clamped", fit.alpha_clamped},
                           {"rms_relative_residual", fit.rms_relative_residual},
                           {"max_abs_relative_residual", fit.max_abs_relative_residual},
                           {"points", rows},
                           {"system", system_json(system)}});
  if (!o.system_out.empty()) write_file_atomically(o.system_out, perf::system_to_yaml(system));
  return 0;
}

void add_fit(CLI::App* project, Runner& selected) {
  auto o = std::make_shared<FitOptions>();
  auto* sub = project->add_subcommand(
      "fit",
      "Fit a link's alpha and beta to hpcml bench allreduce --json rows (weighted least squares on the "
      "relative error) and write a system file for --system");
  sub->add_option("--allreduce", o->allreduce, "BENCH.json from hpcml bench allreduce --json")->required();
  sub->add_option("--impl", o->impl, "Rows of this impl (mpi, hpcml, reducer-mpi, reducer-shm)")->capture_default_str();
  sub->add_option("--path", o->path, "Rows of this path (blocking, nonblocking; exposed_wait for the reducer rows)")->capture_default_str();
  sub->add_option("--algorithm", o->algorithm,
                  "The algorithm the rows ran: ring, recursive_doubling, rabenseifner or tree")
      ->capture_default_str();
  sub->add_option("--ranks", o->ranks, "Fit the rows at this rank count (rows without 'ranks' take it)");
  sub->add_option("--ranks-per-node", o->ranks_per_node,
                  "ranks_per_node of the system file (default: the fit's ranks)");
  sub->add_option("--min-bytes", o->min_bytes, "Fit only rows of at least this many bytes");
  sub->add_option("--max-bytes", o->max_bytes, "Fit only rows of at most this many bytes");
  sub->add_option("--json", o->json_path, "Also write the fit as JSON to this file");
  sub->add_option("--system-out", o->system_out, "Write the fitted system (YAML) to this file, for --system");
  sub->callback([sub, &selected, o] {
    for (const char* flag : {"--min-bytes", "--max-bytes"}) {
      if (sub->get_option(flag)->count() > 0 && !(sub->get_option(flag)->as<double>() > 0)) {
        throw CLI::ValidationError(std::string("project fit: ") + flag + ": expected a positive number of bytes");
      }
    }
    for (const char* flag : {"--ranks", "--ranks-per-node"}) {
      if (sub->get_option(flag)->count() > 0 && sub->get_option(flag)->as<int>() < 1) {
        throw CLI::ValidationError(std::string("project fit: ") + flag + ": expected a positive count");
      }
    }
    if (!o->json_path.empty()) check_output_path(o->json_path, {o->allreduce}, "--json");
    if (!o->system_out.empty()) check_output_path(o->system_out, {o->allreduce, o->json_path}, "--system-out");
    selected = [o](Context& c) { return run_fit(c, *o); };
  });
}

// ---- project service -------------------------------------------------------------------

struct ServiceOptions {
  std::string server_times, batch_times, clients = "1,2,4,8,16,32,64,128,256,512,1024", json_path;
  double client_s_per_event = 0, rows_per_event = 1, request_overhead_s = 0;
  int servers = 1;
};

int run_service(const Context& c, const ServiceOptions& o) {
  const auto points = o.server_times.empty() ? perf::parse_batch_times(o.batch_times, "project: --batch-times")
                                             : perf::batch_times_from_json(read_json(o.server_times, "--server-times"),
                                                                           "project: " + o.server_times);
  const perf::ServerCurve curve(points,
                                o.server_times.empty() ? "project: --batch-times" : "project: " + o.server_times);
  perf::ServiceInputs in;
  in.client_s_per_event = o.client_s_per_event;
  in.rows_per_event = o.rows_per_event;
  in.request_overhead_s = o.request_overhead_s;
  HPCML_CHECK_AS(ConfigError, o.servers >= 1, "project: --servers: expected a positive count, found ", o.servers);
  const perf::ServerCapacity cap = perf::server_capacity(curve, in);
  std::vector<perf::ServicePoint> rows;
  for (int clients : parse_counts(o.clients, "--clients"))
    rows.push_back(perf::project_service(cap, in, clients, o.servers));
  if (c.env.rank != 0) return 0;
  std::printf(
      "projection (model, not a measurement): a server rank peaks at %.1f events/s at batch %g; a client "
      "rank at %g s/event offers %.3f events/s, so one server rank feeds %.1f client ranks\n",
      cap.events_per_s, cap.best_batch, in.client_s_per_event, 1 / in.client_s_per_event, cap.clients_per_server);
  std::printf("%9s %8s %12s %14s %12s %10s %15s\n", "clients", "servers", "offered/s", "delivered/s", "utilisation",
              "saturated", "servers_needed");
  json out = json::array();
  for (const auto& p : rows) {
    std::printf("%9d %8d %12.1f %14.1f %12.3f %10s %15d\n", p.clients, p.servers, p.offered_events_per_s,
                p.delivered_events_per_s, p.utilisation, p.saturated ? "yes" : "no", p.servers_needed);
    out.push_back({{"clients", p.clients},
                   {"servers", p.servers},
                   {"offered_events_per_s", p.offered_events_per_s},
                   {"delivered_events_per_s", p.delivered_events_per_s},
                   {"utilisation", p.utilisation},
                   {"saturated", p.saturated},
                   {"servers_needed", p.servers_needed}});
  }
  std::fflush(stdout);
  json server = json::array();
  for (const auto& p : curve.points()) server.push_back({{"batch", p.batch}, {"seconds", p.seconds}});
  write_json(o.json_path, {{"kind", "projection"},
                           {"server_points", server},
                           {"client_s_per_event", in.client_s_per_event},
                           {"rows_per_event", in.rows_per_event},
                           {"request_overhead_s", in.request_overhead_s},
                           {"capacity",
                            {{"best_batch", cap.best_batch},
                             {"events_per_s", cap.events_per_s},
                             {"clients_per_server", cap.clients_per_server}}},
                           {"rows", out}});
  return 0;
}

void add_service(CLI::App* project, Runner& selected) {
  auto o = std::make_shared<ServiceOptions>();
  auto* sub = project->add_subcommand(
      "service",
      "Size the inference service: a server rank's capacity (events/s at its best batch) from its time per "
      "batch, events/s for C client and S server ranks, and the server ranks C clients need");
  auto* file =
      sub->add_option("--server-times", o->server_times,
                      "JSON: [{\"batch\": B, \"seconds\": S}, ...] (or {\"points\": [...]}): server time per batch");
  auto* text =
      sub->add_option("--batch-times", o->batch_times, "The same inline: BATCH:SECONDS,... e.g. 1:0.002,64:0.02");
  file->excludes(text);
  sub->add_option("--client-s-per-event", o->client_s_per_event, "A client rank's CPU seconds per event")->required();
  sub->add_option("--rows-per-event", o->rows_per_event, "Rows one event's request carries")->capture_default_str();
  sub->add_option("--request-overhead-s", o->request_overhead_s, "Server seconds per request on top of the batch")
      ->capture_default_str();
  sub->add_option("--clients", o->clients, "Client rank counts: a list or A,B,...,Z")->capture_default_str();
  sub->add_option("--servers", o->servers, "Server ranks")->capture_default_str();
  sub->add_option("--json", o->json_path, "Also write the projection as JSON to this file");
  sub->callback([&selected, o, file, text] {
    if (file->count() == 0 && text->count() == 0) {
      throw CLI::ValidationError("project service: expected --server-times FILE.json or --batch-times B:S,...");
    }
    if (!o->json_path.empty()) check_output_path(o->json_path, {o->server_times}, "--json");
    selected = [o](Context& c) { return run_service(c, *o); };
  });
}

// ---- project systems -------------------------------------------------------------------

void add_systems(CLI::App* project, Runner& selected) {
  auto json_path = std::make_shared<std::string>();
  auto* sub = project->add_subcommand("systems", "List the system presets with their figures and sources");
  sub->add_option("--json", *json_path, "Also write them as JSON to this file");
  sub->callback([&selected, json_path] {
    selected = [json_path](Context& c) {
      if (c.env.rank != 0) return 0;
      json list = json::array();
      std::printf("%-16s %10s %14s %14s %14s %14s  %s\n", "name", "ranks/node", "intra_us", "intra_GB/s", "network_us",
                  "network_GB/s", "algorithm");
      for (const auto& s : perf::preset_systems()) {
        const auto& t = s.topology;
        std::printf("%-16s %10d %14.2f %14.1f %14.2f %14.1f  %s\n  %s\n  source: %s\n", s.name.c_str(),
                    t.ranks_per_node, t.intra.alpha_s * 1e6, 1e-9 / t.intra.beta_s_per_byte, t.network.alpha_s * 1e6,
                    1e-9 / t.network.beta_s_per_byte, perf::to_string(s.algorithm), s.description.c_str(),
                    s.source.c_str());
        list.push_back(system_json(s));
      }
      std::fflush(stdout);
      write_json(*json_path, {{"systems", list}});
      return 0;
    };
  });
}

}  // namespace

void add_project_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  (void)common;  // no config file: every input is an option
  auto* sub =
      app.add_subcommand("project",
                         "Performance projections from the model of docs/scaling.md: training at N ranks on a system, "
                         "alpha-beta fits of bench allreduce, inference-service sizing; serial, no MPI ranks needed");
  sub->require_subcommand(1);
  add_train(sub, selected);
  add_fit(sub, selected);
  add_service(sub, selected);
  add_systems(sub, selected);
}

}  // namespace hpcml::launch::cli
