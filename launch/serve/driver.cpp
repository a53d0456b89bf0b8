#include "launch/serve/driver.hpp"

#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <deque>
#include <fstream>
#include <future>
#include <iostream>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

#include "collectives/factory.hpp"
#include "core/files.hpp"
#include "core/h5.hpp"
#include "core/log.hpp"
#include "core/mpi.hpp"  // world_rank, world_size, rank_tag
#include "io/h5_dataset.hpp"
#include "launch/serve/client.hpp"
#include "launch/serve/repository.hpp"
#include "launch/serve/roles.hpp"
#include "launch/serve/server.hpp"
#include "launch/serve/timing.hpp"
#include "models/registry.hpp"

namespace hpcml::launch::serve {

namespace {

constexpr int kTagMetrics = 7105;

// A whole dataset of `file` as a tensor of its own type (float32 / int64 in memory).
at::Tensor read_dataset(const std::string& file, const std::string& name) {
  const std::string what = "file '" + file + "' dataset '" + name + "'";
  const hid_t f = HPCML_H5_CHECK(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), what);
  hid_t d = -1, space = -1, type = -1;
  at::Tensor out;
  try {
    d = HPCML_H5_CHECK(H5Dopen2(f, name.c_str(), H5P_DEFAULT), what);
    space = HPCML_H5_CHECK(H5Dget_space(d), what);
    const int ndim = HPCML_H5_CHECK(H5Sget_simple_extent_ndims(space), what);
    std::vector<hsize_t> dims(static_cast<size_t>(ndim));
    HPCML_H5_CHECK(H5Sget_simple_extent_dims(space, dims.data(), nullptr), what);
    std::vector<int64_t> shape(dims.begin(), dims.end());
    type = HPCML_H5_CHECK(H5Dget_type(d), what);
    const bool integer = H5Tget_class(type) == H5T_INTEGER;
    out = at::empty(shape, integer ? at::kLong : at::kFloat);
    HPCML_H5_CHECK(H5Dread(d, integer ? H5T_NATIVE_INT64 : H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                           out.data_ptr()),
                   what);
  } catch (...) {
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (d >= 0) H5Dclose(d);
    H5Fclose(f);
    throw;
  }
  H5Tclose(type);
  H5Sclose(space);
  H5Dclose(d);
  H5Fclose(f);
  return out;
}

// The dataset field of a zoo model's input ("x" -> "inputs"), or the input's name.
std::string default_field(const ModelEntry& entry, const std::string& input) {
  if (entry.config.platform == "zoo") {
    for (const auto& in : models::zoo_entry(entry.config.zoo_model).inputs)
      if (in.name == input) return in.field;
  }
  return input;
}

// Every event's inputs: `rows` rows each, from the files or synthetic.
std::vector<NamedInputs> load_events(const ModelEntry& entry, const DriverSection& c, int64_t total_events) {
  std::map<std::string, at::Tensor> columns;  // input -> (N, ...) fixed, or padded (N, P, ...) for ragged
  at::Tensor mask;                            // (N, P) for ragged inputs
  if (!c.files.empty()) {
    const auto files = io::expand_files(c.files);
    for (const auto& spec : entry.inputs) {
      HPCML_CHECK_AS(ConfigError, !spec.ragged, "config error: key 'serve.client.files': the driver reads fixed "
                     "inputs from HDF5; model '", entry.name, "' input '", spec.name,
                     "' is ragged (use synthetic inputs, or the client API)");
      const auto it = c.fields.find(spec.name);
      const std::string field = it != c.fields.end() ? it->second : default_field(entry, spec.name);
      std::vector<at::Tensor> parts;
      for (const auto& f : files) parts.push_back(read_dataset(f, field));
      columns[spec.name] = at::cat(parts, 0).to(to_scalar_type(spec.dtype));
    }
  } else {
    HPCML_CHECK_AS(ConfigError, entry.config.platform == "zoo", "config error: key 'serve.client.files': model '",
                   entry.name, "' is not a zoo model, so the driver cannot make synthetic inputs; give HDF5 files");
    const int64_t n = std::min<int64_t>(std::max<int64_t>(total_events, 1) * c.rows_per_request, 1 << 14);
    auto inputs = models::example_inputs(entry.config.zoo_model, n, static_cast<uint64_t>(c.seed));
    for (const auto& spec : entry.inputs) columns[spec.name] = inputs.at(spec.name);
    if (inputs.count("mask")) mask = inputs.at("mask");
  }
  const int64_t available = columns.begin()->second.size(0);
  HPCML_CHECK_AS(ConfigError, available >= c.rows_per_request, "serve.client: the data has ", available,
                 " rows; serve.client.rows_per_request is ", c.rows_per_request);
  // -1: every full event of the files.
  if (total_events < 0) total_events = std::max<int64_t>(1, available / c.rows_per_request);
  std::vector<NamedInputs> events(static_cast<size_t>(total_events));
  for (int64_t e = 0; e < total_events; ++e) {
    const int64_t start = (e * c.rows_per_request) % (available - c.rows_per_request + 1);
    for (const auto& spec : entry.inputs) {
      const at::Tensor rows = columns[spec.name].narrow(0, start, c.rows_per_request);
      if (!spec.ragged) {
        events[e][spec.name] = Input{rows.contiguous(), at::Tensor()};
        continue;
      }
      // Padded + mask -> items + offsets: the ragged form clients send.
      HPCML_CHECK_AS(ConfigError, mask.defined(), "serve.client: ragged input '", spec.name, "' has no mask to unpad");
      const at::Tensor m = mask.narrow(0, start, c.rows_per_request).to(at::kBool);
      const at::Tensor lengths = m.sum(1).to(at::kLong);
      at::Tensor offsets = at::zeros({c.rows_per_request + 1}, at::kLong);
      offsets.narrow(0, 1, c.rows_per_request).copy_(lengths.cumsum(0));
      events[e][spec.name] = Input{rows.index({m}).contiguous(), offsets};
    }
  }
  return events;
}

// Busy CPU work for `us`; a caller-driven client is polled every ~64 iterations.
void cpu_work(double us, Client& client) {
  if (us <= 0) return;
  const auto until = Clock::now() + std::chrono::duration<double, std::micro>(us);
  volatile double sink = 0;
  while (Clock::now() < until) {
    for (int i = 0; i < 64; ++i) sink = sink + 1e-9 * i;
    client.poll();
  }
}

nlohmann::json run_client(const collectives::BackendPtr& comm, const RolePlan& plan, const ServeConfig& config, int world_rank, int& exit_code) {
  const auto& s = config.serve;
  const auto& c = s.client;
  const auto repository = read_repository(s.repository);
  const ModelEntry& entry = find_entry(repository, c.model);
  const int n_clients = static_cast<int>(plan.clients.size());
  const int index = static_cast<int>(std::find(plan.clients.begin(), plan.clients.end(), world_rank) - plan.clients.begin());
  const int64_t total = c.events > 0 ? c.events : (c.files.empty() ? 1000 : -1);
  const std::vector<NamedInputs> all = load_events(entry, c, total);
  std::vector<int64_t> mine;
  for (int64_t e = index; e < static_cast<int64_t>(all.size()); e += n_clients) mine.push_back(e);

  Client client(comm, plan.servers, s.client_options());

  // Warm-up: the first events once, untimed.
  for (int i = 0; i < c.warmup_events && !mine.empty(); ++i) {
    try {
      client.infer(c.model, all[mine[i % mine.size()]]);
    } catch (const ServeError&) {
    }
  }
  std::vector<at::Tensor> served(all.size());
  std::vector<double> latency, pack, queue, input, infer, output, share, overhead;
  double wait_us = 0;
  int64_t failed = 0, fallbacks = 0;
  std::string first_error;
  std::deque<std::pair<int64_t, std::future<InferResult>>> window;
  auto collect = [&] {
    auto [e, f] = std::move(window.front());
    window.pop_front();
    const auto w0 = Clock::now();
    try {
      InferResult r = client.wait(f);
      wait_us += us_between(w0, Clock::now());
      served[e] = r.output;
      latency.push_back(r.latency_us);
      pack.push_back(r.pack_us);
      if (r.server < 0) {
        ++fallbacks;
        return;
      }
      queue.push_back(r.timing.queue_us);
      input.push_back(r.timing.input_us);
      infer.push_back(r.timing.infer_us);
      output.push_back(r.timing.output_us);
      share.push_back(r.timing.compute_share_us);
      overhead.push_back(r.timing.overhead_us);
    } catch (const ServeError& err) {
      wait_us += us_between(w0, Clock::now());
      if (failed++ == 0) first_error = err.message();
    }
  };
  const auto t0 = Clock::now();
  for (int64_t e : mine) {
    cpu_work(c.cpu_work_us, client);
    window.emplace_back(e, client.infer_async(c.model, all[e]));
    while (static_cast<int>(window.size()) >= c.in_flight) collect();
  }
  while (!window.empty()) collect();
  const double wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  client.finish();
  const ClientStats stats = client.stats();
  if (failed > 0) {
    std::cerr << "hpcml: " << first_error << " (" << failed << " of " << mine.size() << " requests failed)"
              << std::endl;
    exit_code = 1;
  }

  // Local inference on the same events: X, and the check that serving changes nothing.
  nlohmann::json verify = nullptr;
  double local_us = 0;
  if (c.verify && !mine.empty()) {
    auto model = load_model(entry);
    int64_t checked = 0, mismatched = 0;
    double max_abs = 0, max_rel = 0;
    std::string first_mismatch;
    run_local(*model, entry, all[mine.front()]);  // warm: X is the steady-state cost
    const auto l0 = Clock::now();
    std::vector<at::Tensor> local(all.size());
    for (int64_t e : mine) local[e] = run_local(*model, entry, all[e]);
    local_us = us_between(l0, Clock::now()) / static_cast<double>(mine.size());
    for (int64_t e : mine) {
      if (!served[e].defined()) continue;
      ++checked;
      const at::Tensor a = served[e].to(at::kDouble), b = local[e].to(at::kDouble);
      if (a.sizes() != b.sizes()) {
        if (mismatched++ == 0) first_mismatch = "event " + std::to_string(e) + ": served shape differs from local";
        continue;
      }
      const at::Tensor diff = (a - b).abs();
      max_abs = std::max(max_abs, diff.max().item<double>());
      max_rel = std::max(max_rel, (diff / b.abs().clamp_min(1e-30)).max().item<double>());
      const bool ok = (diff <= c.atol + c.rtol * b.abs()).all().item<bool>();
      if (!ok && mismatched++ == 0) first_mismatch = "event " + std::to_string(e) + ": served and local outputs differ "
                                                     "by up to " + std::to_string(diff.max().item<double>());
    }
    verify = {{"checked", checked}, {"mismatched", mismatched}, {"max_abs_err", max_abs}, {"max_rel_err", max_rel},
              {"rtol", c.rtol}, {"atol", c.atol}};
    if (mismatched > 0) {
      std::cerr << "hpcml: " << rank_tag() << " serve: verification failed: " << mismatched << " of " << checked
                << " events differ beyond rtol " << c.rtol << " + atol " << c.atol << "; first: " << first_mismatch
                << std::endl;
      exit_code = 1;
    }
  }
  const double events = static_cast<double>(mine.size());
  auto mean = [](const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return v.empty() ? 0.0 : sum / static_cast<double>(v.size());
  };
  return {{"role", "client"},
          {"rank", world_rank},
          {"model", c.model},
          {"events", mine.size()},
          {"rows", events * c.rows_per_request},
          {"wall_s", wall_s},
          {"failed", failed},
          {"fallbacks", fallbacks},
          {"dead_servers", stats.dead_servers},
          {"rerouted", stats.rerouted},
          {"duplicates", stats.duplicates},
          {"latency_us", latency},
          {"S_us", mean(pack)},
          {"L_us", events > 0 ? wait_us / events : 0.0},
          {"X_us", local_us},
          {"Y_us", mean(share)},
          {"server_overhead_us", overhead},
          {"breakdown_us",
           {{"queue", mean(queue)}, {"compute_input", mean(input)}, {"compute_infer", mean(infer)},
            {"compute_output", mean(output)}}},
          {"verify", verify}};
}

// Rank 0's report from every rank's JSON: printed, and written to serve.client.metrics.
nlohmann::json summarize(const std::vector<nlohmann::json>& ranks, const ServeConfig& config) {
  std::vector<double> latency, overhead;
  double events = 0, rows = 0, wall = 0, S = 0, L = 0, X = 0, Y = 0;
  int n_clients = 0;
  nlohmann::json breakdown = {{"queue", 0.0}, {"compute_input", 0.0}, {"compute_infer", 0.0}, {"compute_output", 0.0}};
  nlohmann::json servers = nlohmann::json::array();
  nlohmann::json histogram = nlohmann::json::object();
  for (const auto& r : ranks) {
    if (r.value("role", "") == "server") {
      servers.push_back({{"rank", r["rank"]}, {"utilisation", r["utilisation"]}, {"requests", r["requests"]},
                         {"busy_s", r["busy_s"]}, {"wall_s", r["wall_s"]}, {"overhead_us", r["overhead_us"]},
                         {"measured_batch_sizes", r["measured_batch_sizes"]}});
      for (const auto& [model, h] : r["batch_rows_histogram"].items())
        for (const auto& [size, count] : h.items())
          histogram[model][size] = (histogram[model].contains(size) ? histogram[model][size].get<int64_t>() : 0) +
                                   count.get<int64_t>();
      continue;
    }
    if (r.value("role", "") != "client") continue;
    ++n_clients;
    events += r["events"].get<double>();
    rows += r["rows"].get<double>();
    wall = std::max(wall, r["wall_s"].get<double>());
    for (double v : r["latency_us"]) latency.push_back(v);
    for (double v : r["server_overhead_us"]) overhead.push_back(v);
    S += r["S_us"].get<double>();
    L += r["L_us"].get<double>();
    X += r["X_us"].get<double>();
    Y += r["Y_us"].get<double>();
    for (auto& [k, v] : breakdown.items()) v = v.get<double>() + r["breakdown_us"][k].get<double>();
  }
  const double nc = std::max(1, n_clients);
  S /= nc, L /= nc, X /= nc, Y /= nc;
  for (auto& [k, v] : breakdown.items()) v = v.get<double>() / nc;
  nlohmann::json out;
  out["model"] = config.serve.client.model;
  out["clients"] = n_clients;
  out["events"] = events;
  out["events_per_s"] = wall > 0 ? events / wall : 0.0;
  out["inferences_per_s"] = wall > 0 ? rows / wall : 0.0;
  out["latency_us"] = {{"p50", percentile(latency, 0.5)}, {"p90", percentile(latency, 0.9)},
                       {"p95", percentile(latency, 0.95)}, {"p99", percentile(latency, 0.99)}};
  out["server_overhead_us"] = {{"p50", percentile(overhead, 0.5)}, {"p90", percentile(overhead, 0.9)}};
  out["server_breakdown_us"] = breakdown;
  out["batch_rows_histogram"] = histogram;
  out["servers"] = servers;
  out["X_us"] = X;
  out["S_us"] = S;
  out["L_us"] = L;
  out["Y_us"] = Y;
  out["F_eq"] = Y > 0 ? (X - S - L) / Y : 0.0;
  return out;
}

void print_summary(const nlohmann::json& s) {
  std::printf("serve: %s: %d client(s), %.0f events, %.1f events/s, %.1f inferences/s\n",
              s["model"].get<std::string>().c_str(), s["clients"].get<int>(), s["events"].get<double>(),
              s["events_per_s"].get<double>(), s["inferences_per_s"].get<double>());
  const auto& l = s["latency_us"];
  std::printf("serve: latency us p50 %.1f  p90 %.1f  p95 %.1f  p99 %.1f\n", l["p50"].get<double>(),
              l["p90"].get<double>(), l["p95"].get<double>(), l["p99"].get<double>());
  const auto& b = s["server_breakdown_us"];
  std::printf("serve: server us/request: queue %.1f  compute_input %.1f  compute_infer %.1f  compute_output %.1f  "
              "overhead p50 %.1f\n",
              b["queue"].get<double>(), b["compute_input"].get<double>(), b["compute_infer"].get<double>(),
              b["compute_output"].get<double>(), s["server_overhead_us"]["p50"].get<double>());
  for (const auto& [model, h] : s["batch_rows_histogram"].items()) {
    std::printf("serve: batch rows (%s):", model.c_str());
    for (const auto& [size, count] : h.items()) std::printf(" %s x%lld", size.c_str(), static_cast<long long>(count.get<int64_t>()));
    std::printf("\n");
  }
  for (const auto& sv : s["servers"])
    std::printf("serve: server rank %d: utilisation %.1f%%, %lld requests\n", sv["rank"].get<int>(),
                100 * sv["utilisation"].get<double>(), static_cast<long long>(sv["requests"].get<int64_t>()));
  std::printf("serve: F_eq = (X - S - L) / Y = (%.1f - %.1f - %.1f) / %.1f = %.2f\n", s["X_us"].get<double>(),
              s["S_us"].get<double>(), s["L_us"].get<double>(), s["Y_us"].get<double>(), s["F_eq"].get<double>());
  std::fflush(stdout);
}

}  // namespace

collectives::BackendPtr mpi_world(Context& context, double timeout_s) {
  if (context.world && context.world->name() == "mpi") return context.world;
  collectives::BackendOptions options;
  options.timeout = std::chrono::milliseconds(static_cast<long>(timeout_s * 1000.0));
  options.name = "world";
  return collectives::make_backend("mpi", options);
}

int run_serve(Context& context, const ServeConfig& config) {
  const auto& s = config.serve;
  HPCML_CHECK_AS(ConfigError, !s.repository.empty(),
                 "config error: key 'serve.repository': expected the model repository directory, found nothing");
  const double timeout_s = config.runtime.collective_timeout_s;
  const collectives::BackendPtr world = mpi_world(context, timeout_s);
  const RolePlan plan = plan_world(*world, s.role_options(), timeout_s);
  const int rank = world_rank();
  if (rank == 0) {
    std::printf("serve: roles (%s): clients %s; servers %s\n", plan.source.c_str(), rank_list(plan.clients).c_str(),
                rank_list(plan.servers).c_str());
    std::fflush(stdout);
  }
  // The service's own communicator (ranks are world ranks). Oversized requests are
  // reported to the client, not fatal: the backend's errors come back as exceptions.
  const collectives::BackendPtr comm = world->dup("serve");
  // Metrics travel on a communicator of their own, so no serving thread takes them;
  // made now, while every rank is surely alive (dup is collective).
  const collectives::BackendPtr metrics_comm = world->dup("serve-metrics");
  int exit_code = 0;
  nlohmann::json mine;
  if (plan.roles[rank] == Role::kServer) {
    ServerOptions options = s.server_options();
    options.drain_timeout_s = timeout_s;
    options.device = context.device.device;
    const ServerReport report = run_server(comm, plan.clients, options);
    mine = nlohmann::json::parse(report.to_json());
    mine["role"] = "server";
    if (!report.vanished_clients.empty()) {
      std::string ranks;
      for (int c : report.vanished_clients) ranks += (ranks.empty() ? "" : ", ") + std::to_string(c);
      std::cerr << "hpcml: " << rank_tag() << " serve: client rank(s) " << ranks
                << " vanished (silent past serve.client_timeout_s); their queued work was dropped" << std::endl;
      exit_code = 1;
    }
  } else {
    mine = run_client(comm, plan, config, rank, exit_code);
  }
  // Metrics to the lowest client by point-to-point (no collective: a vanished peer
  // must not hang the others), under the collective deadline.
  const int collector = plan.clients.front();
  if (rank != collector) {
    // Kept alive past a send left unfinished at the deadline (MPI may still read it).
    auto text = std::make_shared<std::string>(mine.dump());
    const collectives::WorkPtr send =
        metrics_comm->send(text->data(), text->size(), collector, kTagMetrics, {/*async=*/true});
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
    while (!send->is_completed()) {
      if (Clock::now() > deadline) {
        std::cerr << "hpcml: " << rank_tag() << " serve: rank " << collector
                  << " did not take this rank's metrics in time; leaving" << std::endl;
        new std::shared_ptr<std::string>(text);  // the dropped Work detaches the send
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (send->is_completed() && send->exception()) std::rethrow_exception(send->exception());
  } else {
    std::vector<nlohmann::json> all{mine};
    const size_t expected = static_cast<size_t>(world_size());
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
    while (all.size() < expected && Clock::now() < deadline) {
      std::optional<collectives::Message> message = metrics_comm->improbe(collectives::kAnySource, kTagMetrics);
      if (!message) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        continue;
      }
      std::string text(message->bytes, '\0');
      metrics_comm->recv(*message, text.data(), text.size());
      all.push_back(nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false));
    }
    if (all.size() < expected)
      std::cerr << "hpcml: " << rank_tag() << " serve: metrics of " << expected - all.size()
                << " rank(s) missing after serve deadline (runtime.collective_timeout_s)" << std::endl;
    nlohmann::json summary = summarize(all, config);
    print_summary(summary);
    if (!s.client.metrics.empty()) {
      nlohmann::json out = {{"summary", summary}, {"ranks", all}};
      write_file_atomically(s.client.metrics, out.dump(1) + "\n");
      std::printf("wrote %s\n", s.client.metrics.c_str());
    }
  }
  return exit_code;
}

}  // namespace hpcml::launch::serve
