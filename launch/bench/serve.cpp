// `hpcml bench serve`: throughput and latency of hpcml serve against the number of
// concurrent request streams (in-flight request slots), with dynamic batching and
// with batch-1 serving, for FACILE (16 channel rows per request) and DeepCalo
// (5 images per request). Run with 2 ranks: rank 0 is the client, the last rank
// the server (Krupa et al. 2021, Figures 5-6). With more ranks, every rank but the
// last is a client; they run each point together and their throughputs add up.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "collectives/device.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "launch/cli/command.hpp"
#include "launch/serve/client.hpp"
#include "launch/serve/driver.hpp"
#include "launch/serve/repository.hpp"
#include "launch/serve/serve_config.hpp"
#include "launch/serve/server.hpp"
#include "models/registry.hpp"

namespace hpcml::launch::cli {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
constexpr int kTagBenchReport = 7106;

struct ServeBenchOptions {
  std::vector<int> streams{1, 2, 4, 8, 16, 32};
  double seconds = 1.0;
  double warmup_s = 0.2;
  std::vector<std::string> cases{"facile", "deepcalo"};
  std::string json_path;
  std::string client_progress = "caller";
  std::string server_device = "cpu";
};

struct Case {
  std::string model;
  int rows;  // per request
};

Case case_of(const std::string& name) {
  if (name == "facile") return {"facile", 16};
  if (name == "deepcalo") return {"deepcalo", 5};
  if (name == "particlenet-lite") return {"particlenet-lite", 8};
  HPCML_THROW(ConfigError, "bench serve: --cases: expected facile, deepcalo and/or particlenet-lite, found '", name,
              "'");
}

// This rank's repository: each case with dynamic batching and as batch-1 serving, each
// model's config.yaml written from its ModelConfig by the config writer.
std::string write_repository(const ServeBenchOptions& o, int max_streams) {
  const fs::path dir = fs::temp_directory_path() / ("hpcml-bench-serve-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  for (const auto& name : o.cases) {
    const Case c = case_of(name);
    for (const bool dynamic : {true, false}) {
      serve::ModelConfig model;
      model.platform = "zoo";
      model.zoo_model = name;
      model.seed = 1;
      model.max_batch_size = c.rows * max_streams;
      model.dynamic_batching = dynamic;
      model.max_queue_delay_us = 0;
      model.instances = 1;
      const fs::path m = dir / (name + (dynamic ? "" : "-batch1"));
      fs::create_directories(m);
      write_file_atomically((m / "config.yaml").string(), config::to_yaml(model));
    }
  }
  return dir.string();
}

// One request's inputs: the model's example inputs; jets as a ragged input (items of
// 4 features per jet), which the server pads per batch and masks.
serve::NamedInputs request_inputs(const std::string& name, int rows) {
  auto inputs = models::example_inputs(name, rows, /*seed=*/7);
  if (inputs.count("mask") == 0) return serve::fixed_inputs(inputs);
  const at::Tensor mask = inputs.at("mask").to(at::kBool);
  const at::Tensor particles = inputs.at("particles");
  serve::Input ragged;
  ragged.values = particles.masked_select(mask.unsqueeze(-1)).view({-1, particles.size(-1)}).contiguous();
  ragged.offsets = at::cat({at::zeros({1}, at::kLong), mask.sum(1).cumsum(0).to(at::kLong)});
  return {{"particles", ragged}};
}

nlohmann::json run_point(serve::Client& client, const std::string& model, const serve::NamedInputs& inputs,
                         int streams, double seconds, double warmup_s) {
  std::deque<std::future<serve::InferResult>> window;
  std::vector<double> latency, queue, input, infer, output, overhead;
  double batch_rows = 0;
  int64_t done = 0;
  const auto start = Clock::now();
  const auto measure_from =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(warmup_s));
  const auto stop = measure_from + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  Clock::time_point first = measure_from, last = measure_from;
  bool measuring = false;
  for (int i = 0; i < streams; ++i) window.push_back(client.infer_async(model, inputs));
  while (!window.empty()) {
    serve::InferResult r = client.wait(window.front());
    window.pop_front();
    const auto now = Clock::now();
    if (now < stop) window.push_back(client.infer_async(model, inputs));
    if (now < measure_from) continue;
    if (!measuring) {
      measuring = true;
      first = now;
    }
    if (now > stop) continue;
    last = now;
    ++done;
    latency.push_back(r.latency_us);
    queue.push_back(r.timing.queue_us);
    input.push_back(r.timing.input_us);
    infer.push_back(r.timing.infer_us);
    output.push_back(r.timing.output_us);
    overhead.push_back(r.timing.overhead_us);
    batch_rows += r.timing.batch_rows;
  }
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0.0 : s / static_cast<double>(v.size());
  };
  const double span = std::max(1e-9, std::chrono::duration<double>(last - first).count());
  const double per_s = static_cast<double>(std::max<int64_t>(0, done - 1)) / span;
  return {{"streams", streams},
          {"requests", done},
          {"events_per_s", per_s},
          {"latency_us",
           {{"p50", serve::percentile(latency, 0.5)}, {"p90", serve::percentile(latency, 0.9)},
            {"p95", serve::percentile(latency, 0.95)}, {"p99", serve::percentile(latency, 0.99)}}},
          {"breakdown_us",
           {{"queue", mean(queue)}, {"compute_input", mean(input)}, {"compute_infer", mean(infer)},
            {"compute_output", mean(output)}}},
          {"server_overhead_us_p50", serve::percentile(overhead, 0.5)},
          {"mean_batch_rows", done > 0 ? batch_rows / static_cast<double>(done) : 0.0}};
}

// The server rank: serves the repository until every client is done, then sends its
// report to rank 0.
void run_server_rank(Context& ctx, const collectives::BackendPtr& comm, const std::vector<int>& clients,
                     const std::string& repo, const std::string& server_device) {
  // The serve section in memory, converted as `hpcml serve` converts it.
  serve::ServeSection section;
  section.repository = repo;
  section.server_threads = 1;
  section.client_timeout_s = std::max(section.client_timeout_s, ctx.config.runtime.collective_timeout_s);
  serve::ServerOptions options = section.server_options();
  options.device = collectives::select_device(server_device, ctx.env.local_rank, "bench serve: --server-device").device;
  const auto report = serve::run_server(comm, clients, options);
  const std::string text = report.to_json();
  comm->send(text.data(), text.size(), 0, kTagBenchReport);
}

// What the client ranks share during the sweep, and the two collectives among them.
struct ClientRanks {
  serve::Client& client;
  collectives::BackendPtr comm;  // the client ranks only
  int rank;
  int count;

  // Every client rank runs every point at once; their throughputs add up, and the
  // latency percentiles are the worst client's.
  nlohmann::json together(nlohmann::json p) const {
    at::Tensor sum = at::tensor({p["events_per_s"].get<double>()}, at::kDouble);
    at::Tensor worst = at::tensor({p["latency_us"]["p50"].get<double>(), p["latency_us"]["p99"].get<double>()},
                                  at::kDouble);
    collectives::AllreduceOptions max_op;
    max_op.op = collectives::ReduceOp::kMax;
    comm->allreduce(sum);
    comm->allreduce(worst, max_op);
    if (count > 1) {
      p["events_per_s_rank0"] = p["events_per_s"];
      p["events_per_s"] = sum.item<double>();
      p["latency_us_worst_client"] = {{"p50", worst[0].item<double>()}, {"p99", worst[1].item<double>()}};
    }
    return p;
  }

  void barrier() const { comm->barrier(); }
};

// Rank 0: the result's header fields, and the table's header on stdout.
nlohmann::json start_result(const ServeBenchOptions& o, int size, int n_clients) {
  nlohmann::json result = {{"benchmark", "serve"}, {"ranks", size}, {"client_ranks", n_clients}, {"server_ranks", 1},
                           {"seconds_per_point", o.seconds}, {"server_intra_op_threads", 1},
                           {"client_progress", o.client_progress},
                           {"server_compute", "auto (inline when bound to one core)"},
                           {"server_device", o.server_device}};
  std::printf("%-9s %-8s %7s %11s %12s %9s %9s %9s %9s %9s %10s\n", "case", "batching", "streams", "events/s",
              "rows/s", "p50_us", "p99_us", "queue_us", "infer_us", "ovh_p50", "batch_rows");
  if (n_clients > 1)
    std::printf("(%d client ranks, each with `streams` in flight: events/s summed, p50/p99 of rank 0)\n", n_clients);
  return result;
}

// X: local inference of one request's rows at one thread, in microseconds.
double local_inference_us(const std::vector<serve::ModelEntry>& entries, const std::string& name,
                          const serve::NamedInputs& inputs) {
  const auto& entry = serve::find_entry(entries, name);
  auto model = serve::load_model(entry);
  for (int i = 0; i < 20; ++i) serve::run_local(*model, entry, inputs);
  const int reps = name == "facile" ? 2000 : 100;
  const auto l0 = Clock::now();
  for (int i = 0; i < reps; ++i) serve::run_local(*model, entry, inputs);
  return std::chrono::duration<double, std::micro>(Clock::now() - l0).count() / reps;
}

// One case's points, dynamic batching then batch-1, at every stream count (all client
// ranks together); rank 0 prints each and appends it to `sweep`, and its local
// inference time to `local`.
void sweep_case(const ClientRanks& ranks, const ServeBenchOptions& o, const std::vector<serve::ModelEntry>& entries,
                const std::string& name, nlohmann::json& sweep, nlohmann::json& local) {
  const Case c = case_of(name);
  const serve::NamedInputs inputs = request_inputs(name, c.rows);
  if (ranks.rank == 0) local[name] = local_inference_us(entries, name, inputs);
  for (const bool dynamic : {true, false}) {
    const std::string served = name + (dynamic ? "" : "-batch1");
    for (int streams : o.streams) {
      ranks.barrier();
      nlohmann::json p = ranks.together(run_point(ranks.client, served, inputs, streams, o.seconds, o.warmup_s));
      if (ranks.rank != 0) continue;
      p["case"] = name;
      p["rows_per_request"] = c.rows;
      p["batching"] = dynamic ? "dynamic" : "batch1";
      p["inferences_per_s"] = p["events_per_s"].get<double>() * c.rows;
      std::printf("%-9s %-8s %7d %11.0f %12.0f %9.1f %9.1f %9.1f %9.1f %9.2f %10.1f\n", name.c_str(),
                  dynamic ? "dynamic" : "batch1", streams, p["events_per_s"].get<double>(),
                  p["inferences_per_s"].get<double>(), p["latency_us"]["p50"].get<double>(),
                  p["latency_us"]["p99"].get<double>(), p["breakdown_us"]["queue"].get<double>(),
                  p["breakdown_us"]["compute_infer"].get<double>(), p["server_overhead_us_p50"].get<double>(),
                  p["mean_batch_rows"].get<double>());
      std::fflush(stdout);
      sweep.push_back(p);
    }
  }
}

// Gain of dynamic batching over batch-1 at each stream count, into `result` and on stdout.
void add_gains(nlohmann::json& result, const nlohmann::json& sweep) {
  nlohmann::json gains = nlohmann::json::object();
  for (const auto& a : sweep) {
    if (a["batching"] != "dynamic") continue;
    for (const auto& b : sweep)
      if (b["batching"] == "batch1" && b["case"] == a["case"] && b["streams"] == a["streams"])
        gains[a["case"].get<std::string>()][std::to_string(a["streams"].get<int>())] =
            a["events_per_s"].get<double>() / std::max(1e-9, b["events_per_s"].get<double>());
  }
  result["gains"] = gains;
  if (gains.contains("facile") && gains["facile"].contains("16")) result["dynamic_batching_gain"] = gains["facile"]["16"];
  for (const auto& [name, g] : gains.items()) {
    std::printf("dynamic batching gain (%s):", name.c_str());
    for (const auto& [st, v] : g.items()) std::printf(" %s streams %.2fx;", st.c_str(), v.get<double>());
    std::printf("\n");
  }
}

// Rank 0: the server's own overhead per request over the whole run, reply send
// included, as the server sends it at its end (under the collective deadline).
nlohmann::json receive_server_report(collectives::Backend& comm, int server, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    if (std::optional<collectives::Message> m = comm.improbe(server, kTagBenchReport)) {
      std::string text(m->bytes, '\0');
      comm.recv(*m, text.data(), text.size());
      const nlohmann::json report = nlohmann::json::parse(text);
      std::printf("server overhead per request over the run (receive, unpack, assembly, scatter, reply): "
                  "p50 %.2f us, p90 %.2f us\n",
                  report["overhead_us"]["p50"].get<double>(), report["overhead_us"]["p90"].get<double>());
      return report;
    }
    HPCML_CHECK_AS(CommError, Clock::now() < deadline, "bench serve: no report from server rank ", server);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// A client rank: the sweep over cases, batching and streams; rank 0 gathers the
// result, the server's report, and writes --json.
void run_client_rank(Context& ctx, const ServeBenchOptions& o, const collectives::BackendPtr& comm,
                     const collectives::BackendPtr& clients_comm, int server, const std::string& repo) {
  const int rank = ctx.env.rank;
  at::set_num_threads(1);
  serve::ClientOptions co;
  co.progress_thread = o.client_progress == "thread";
  serve::Client client(comm, {server}, co);
  const ClientRanks ranks{client, clients_comm, rank, /*count=*/server};
  nlohmann::json result;
  if (rank == 0) result = start_result(o, ctx.env.size, ranks.count);
  nlohmann::json sweep = nlohmann::json::array(), local = nlohmann::json::object();
  const auto entries = serve::read_repository(repo);
  for (const auto& name : o.cases) sweep_case(ranks, o, entries, name, sweep, local);
  if (rank == 0) {
    result["sweep"] = sweep;
    result["local_inference_us"] = local;
    add_gains(result, sweep);
  }
  client.finish();
  if (rank != 0) return;
  result["server_report"] = receive_server_report(*comm, server, ctx.config.runtime.collective_timeout_s);
  if (!o.json_path.empty()) {
    std::ofstream f(o.json_path);
    HPCML_CHECK_AS(IoError, static_cast<bool>(f), "bench serve: cannot write '", o.json_path, "'");
    f << result.dump(2) << "\n";
    std::printf("wrote %s\n", o.json_path.c_str());
  }
}

int run_bench(Context& ctx, const ServeBenchOptions& o) {
  const int rank = ctx.env.rank, size = ctx.env.size;
  HPCML_CHECK_AS(ConfigError, size >= 2, "bench serve: needs 2 ranks (client rank 0, server rank 1), found ", size,
                 "; run it as mpirun -n 2 hpcml bench serve");
  for (int s : o.streams)
    HPCML_CHECK_AS(ConfigError, s >= 1 && s <= 1024, "bench serve: --streams: expected 1 to 1024, found ", s);
  const int max_streams = *std::max_element(o.streams.begin(), o.streams.end());
  const std::string repo = write_repository(o, max_streams);
  const int server = size - 1;  // the server; comm's other ranks are clients
  std::vector<int> clients;
  for (int r = 0; r < server; ++r) clients.push_back(r);
  {
    // The service's communicator (world ranks) and the client ranks' own (null on the server).
    const collectives::BackendPtr comm = serve::mpi_world(ctx, ctx.config.runtime.collective_timeout_s)->dup("serve");
    const collectives::BackendPtr clients_comm = comm->split(rank == server ? -1 : 0, rank, "clients");
    if (rank == server) {
      run_server_rank(ctx, comm, clients, repo, o.server_device);
    } else {
      run_client_rank(ctx, o, comm, clients_comm, server, repo);
    }
  }
  fs::remove_all(repo);
  return 0;
}

}  // namespace

void add_bench_serve_command(CLI::App& bench, CommonOptions& common, Runner& selected) {
  auto* sub = bench.add_subcommand(
      "serve", "hpcml serve throughput and latency vs concurrent request streams, dynamic batching vs batch-1 serving "
               "(FACILE 16 rows/request, DeepCalo 5 images/request); run as mpirun -n 2 (client rank 0, server rank 1); "
               "with more ranks every rank but the last is a client and throughputs add up");
  add_common_options(sub, common);
  auto o = std::make_shared<ServeBenchOptions>();
  sub->add_option("--streams", o->streams, "In-flight request slots to sweep")->delimiter(',')->capture_default_str();
  sub->add_option("--seconds", o->seconds, "Measured seconds per point")->check(CLI::Range(0.01, 600.0))->capture_default_str();
  sub->add_option("--warmup-s", o->warmup_s, "Unmeasured seconds before each point")->check(CLI::Range(0.0, 60.0))->capture_default_str();
  sub->add_option("--cases", o->cases, "facile, deepcalo and/or particlenet-lite (8 jets per request)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--server-device", o->server_device,
                  "Where the server rank runs the models: cpu, cuda (its GPU: local rank % visible), cuda:N, auto; "
                  "the clients stay on the CPU")
      ->capture_default_str();
  sub->add_option("--client-progress", o->client_progress,
                  "caller: the bench loop drives the client's progress (no thread hand-off on the client's core); "
                  "thread: the client's progress thread")
      ->check(CLI::IsMember({"caller", "thread"}))
      ->capture_default_str();
  sub->add_option("--json", o->json_path, "Write the results as JSON (sweep, gains, dynamic_batching_gain)");
  sub->callback([&selected, o] { selected = [o](Context& c) { return run_bench(c, *o); }; });
}

}  // namespace hpcml::launch::cli
