// `hpcml bench io`: reading HDF5 in hpcml's layout. Per rank and in total: events/s
// and MB/s read, for fixed and ragged data, with and without prefetch; then a light
// stand-in training step (an MLP on the padded input) fed three ways, alternated:
// from batches already in memory, from HDF5 read on the step's thread, and from
// HDF5 with prefetch. Peak RSS is reported for the memory-bound check
// (bench/io_rss.py runs it on a dataset and on one 10x larger).
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <pthread.h>
#include <sched.h>

#include <random>
#include <thread>
#include <unistd.h>
#include <cstring>

#include "collectives/mpi_backend.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "io/h5_dataset.hpp"
#include "io/loader.hpp"
#include "io/table.hpp"
#include "launch/bench/stats.hpp"
#include "launch/cli/command.hpp"
#include "models/model.hpp"

namespace hpcml::launch::cli {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct IoBenchOptions {
  std::vector<std::string> inputs;
  std::string kind = "both";  // generated data: fixed, ragged or both
  int64_t events = 100000;    // generated events (all files)
  int files = 4;
  std::string generate_dir;   // only write the generated dataset there
  int batch = 256;
  int hidden = 64;
  int steps = 200;
  int reps = 7;
  int prefetch = -1;  // auto: one window of batches + 1
  std::string mpi_io = "off";
  int loader_cpu = -2;  // -2: auto (a CPU of this rank that the compute threads leave free), -1: none
  int64_t chunk_rows = 1024;
  int64_t window = 4096;
  bool read_only = false;
  std::string json_path;
};

// Peak resident set size of this process (VmHWM), in MiB.
double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0.0;
}

// Synthetic data of the two shapes that matter: a fixed-width row ("bench.fixed":
// x (64 features)) and jet-like ragged events ("bench.ragged": 20-100 constituents
// of 7 features), each with a label.
io::Table bench_table(const std::string& kind, int64_t first, int64_t rows, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal;
  io::Table t;
  t.schema = "hpcml.bench." + kind;
  t.rows = rows;
  t.attributes["generator"] = "hpcml bench io";
  std::vector<int64_t> label;
  for (int64_t r = 0; r < rows; ++r) label.push_back((first + r) % 2);
  t.fixed.push_back({"label", {rows}, label, {""}, {}});
  if (kind == "fixed") {
    std::vector<float> x(static_cast<size_t>(rows * 64));
    for (auto& v : x) v = normal(gen);
    t.fixed.push_back({"x", {rows, 64}, std::move(x), {""}, {}});
    return t;
  }
  std::vector<int64_t> offsets{0};
  std::vector<float> values;
  for (int64_t r = 0; r < rows; ++r) {
    const auto count = static_cast<int64_t>(20 + gen() % 81);
    for (int64_t i = 0; i < count * 7; ++i) values.push_back(normal(gen));
    offsets.push_back(offsets.back() + count);
  }
  const int64_t items = offsets.back();
  t.ragged.push_back({"constituents", std::move(offsets), {{"values", {items, 7}, std::move(values), {""}, {}}}});
  return t;
}

// Writes the generated dataset of `kind`; file k by rank k % size. Returns its glob.
std::string generate(Context& c, const IoBenchOptions& o, const std::string& kind, const std::string& dir) {
  if (c.env.rank == 0) fs::create_directories(dir);
  c.world->barrier();
  const int64_t per_file = (o.events + o.files - 1) / o.files;
  for (int k = c.env.rank; k < o.files; k += c.world->size()) {
    const int64_t first = k * per_file;
    const int64_t rows = std::max<int64_t>(0, std::min(per_file, o.events - first));
    char name[64];
    std::snprintf(name, sizeof name, "/bench-%s-%05d.h5", kind.c_str(), k);
    io::write_table(dir + name, bench_table(kind, first, rows, 1000 + static_cast<uint64_t>(k)));
  }
  c.world->barrier();
  return dir + "/bench-" + kind + "-*.h5";
}

// The fields to read: every dataset of the first file, and which one feeds the model.
struct Plan {
  io::layout::Expectation expect;
  std::string input;        // fixed float field, or "<collection>/<item>"
  std::string label;        // integer fixed field, "" for none
  bool ragged = false;
};

Plan plan_for(const std::vector<std::string>& patterns) {
  const auto files = io::expand_files(patterns);
  const io::layout::FileInfo info = io::layout::inspect(io::h5::File::open(files.front()));
  Plan plan;
  for (const auto& f : info.fields) {
    plan.expect.fields.push_back({f.name});
    const bool is_float = f.shape.kind == io::h5::Kind::kFloat;
    if (is_float && plan.input.empty()) {
      plan.input = f.name;
      plan.ragged = !f.collection.empty();
    }
    if (f.name == "label" && f.shape.kind == io::h5::Kind::kInteger) plan.label = f.name;
  }
  HPCML_CHECK_AS(ConfigError, !plan.input.empty(), "bench io: '", files.front(),
                 "' has no floating-point dataset to feed the stand-in model");
  return plan;
}

// With a spare CPU beyond the compute threads: the prefetch thread's CPU (the last
// of this rank's), after pinning this thread to the first. -1 when none is spare.
int pick_loader_cpu(const Context& c, int requested) {
  if (requested >= -1) return requested;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  if (static_cast<int>(cpus.size()) < c.threads.intra_op + 1 || c.threads.intra_op != 1) return -1;
  cpu_set_t first;
  CPU_ZERO(&first);
  CPU_SET(cpus.front(), &first);
  pthread_setaffinity_np(pthread_self(), sizeof first, &first);
  return cpus.back();
}

struct Mode {
  std::string name;
  std::vector<double> step_ms;  // one per rep
};

using bench::median;

// One dataset: read-only throughput, then the three ways of feeding the step.
nlohmann::json bench_dataset(Context& c, const IoBenchOptions& o, const std::string& label,
                             const std::vector<std::string>& patterns, int loader_cpu) {
  const Plan plan = plan_for(patterns);
  io::H5DatasetOptions dataset_options{patterns, plan.expect};
  dataset_options.mpi_io = o.mpi_io == "collective"    ? io::MpiIo::kCollective
                           : o.mpi_io == "independent" ? io::MpiIo::kIndependent
                                                       : io::MpiIo::kOff;
  // MPI-IO reads get a communicator of their own: they run on the prefetch thread.
  collectives::BackendPtr io_comm;
  if (dataset_options.mpi_io != io::MpiIo::kOff) {
    io_comm = c.world->dup("mpi-io");
    dataset_options.comm = collectives::mpi_comm_of(*io_comm);
  }
  auto dataset_holder = std::make_unique<io::H5Dataset>(dataset_options);
  io::H5Dataset& dataset = *dataset_holder;
  io::SamplerOptions so;
  so.dataset_size = dataset.size();
  so.batch_size = o.batch;
  so.rank = c.env.rank;
  so.world_size = c.world->size();
  so.seed = 1;
  so.chunk_rows = o.chunk_rows;
  so.window = o.window;
  io::DistributedSampler sampler(so);
  io::CollateOptions collate;
  collate.pad_to = 100;  // the stand-in model needs a fixed width
  const int64_t steps = std::min<int64_t>(o.read_only ? sampler.steps_per_epoch() : o.steps, sampler.steps_per_epoch());

  nlohmann::json result = {{"dataset", label}, {"events", dataset.size()}, {"files", dataset.files().size()},
                           {"steps", steps}, {"batch_per_rank", o.batch}};
  // Read-only throughput, without and with prefetch.
  for (int prefetch : {0, o.prefetch}) {
    sampler.set_epoch(prefetch + 1);
    io::Loader loader(dataset, sampler, collate, {prefetch, 600.0, loader_cpu});
    c.world->barrier();
    const auto t0 = Clock::now();
    loader.start();
    for (int64_t s = 0; s < steps; ++s) loader.next();
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    const auto stats = loader.stats();
    const double mine[2] = {static_cast<double>(steps) * o.batch / seconds, stats.bytes / seconds / 1e6};
    std::vector<at::Tensor> per_rank = c.world->allgather_varying(at::tensor({mine[0], mine[1]}, at::kDouble));
    double events_total = 0, mb_total = 0;
    nlohmann::json ranks = nlohmann::json::array();
    for (const auto& r : per_rank) {
      events_total += r[0].item<double>();
      mb_total += r[1].item<double>();
      ranks.push_back({{"events_per_s", r[0].item<double>()}, {"mb_per_s", r[1].item<double>()}});
    }
    result["read"][prefetch ? "prefetch" : "no_prefetch"] = {
        {"events_per_s_total", events_total}, {"mb_per_s_total", mb_total}, {"per_rank", ranks}};
  }
  if (o.read_only) return result;

  // The stand-in step: MLP(flattened input) -> 2 classes, SGD, at this rank's threads.
  sampler.set_epoch(0);
  io::Loader probe(dataset, sampler, collate, {0, 600.0});
  probe.start();
  std::vector<io::Batch> in_memory;
  for (int64_t s = 0; s < steps; ++s) in_memory.push_back(probe.next());
  const int64_t width = in_memory.front().at(plan.input).numel() / o.batch;
  auto model = models::make_mlp(width, {o.hidden, o.hidden}, 2, 0);
  auto train_step = [&](const io::Batch& batch) {
    const at::Tensor x = batch.at(plan.input).reshape({o.batch, -1});
    const at::Tensor y = plan.label.empty() ? at::zeros({o.batch}, at::kLong) : batch.at(plan.label).remainder(2);
    const at::Tensor loss = models::cross_entropy(model->forward(x), y);
    loss.backward();
    at::NoGradGuard no_grad;
    for (auto& [name, p] : model->named_parameters()) {
      p.sub_(p.grad(), 0.01);
      p.mutable_grad().reset();
    }
  };
  std::vector<Mode> modes{{"memory", {}}, {"hdf5", {}}, {"hdf5_prefetch", {}}};
  for (int rep = 0; rep < o.reps; ++rep) {
    for (auto& mode : modes) {
      const int prefetch = mode.name == "hdf5_prefetch" ? o.prefetch : 0;
      io::Loader loader(dataset, sampler, collate, {prefetch, 600.0, loader_cpu});
      if (mode.name != "memory") loader.start();
      if (prefetch > 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));  // as in training: the queue fills during start-up
      c.world->barrier();
      const auto t0 = Clock::now();
      for (int64_t s = 0; s < steps; ++s) {
        if (mode.name == "memory") train_step(in_memory[static_cast<size_t>(s)]);
        else train_step(loader.next());
      }
      mode.step_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / steps);
    }
  }
  const double memory = median(modes[0].step_ms), sync = median(modes[1].step_ms),
               prefetched = median(modes[2].step_ms);
  result["step_ms"] = {{"memory", memory}, {"hdf5", sync}, {"hdf5_prefetch", prefetched}};
  result["reps"] = {{"memory", modes[0].step_ms}, {"hdf5", modes[1].step_ms}, {"hdf5_prefetch", modes[2].step_ms}};
  // Ratios within each rep (the three feeds ran back to back), then their median:
  // robust to the machine's load changing between reps.
  std::vector<double> fraction, over;
  for (int rep = 0; rep < o.reps; ++rep) {
    const auto r = static_cast<size_t>(rep);
    fraction.push_back((modes[1].step_ms[r] - modes[0].step_ms[r]) / modes[1].step_ms[r]);
    over.push_back(modes[2].step_ms[r] / modes[0].step_ms[r]);
  }
  result["read_fraction_without_prefetch"] = median(fraction);
  result["prefetch_over_memory"] = median(over);
  result["loader_cpu"] = loader_cpu;
  result["model"] = "mlp " + std::to_string(width) + "-" + std::to_string(o.hidden) + "-" + std::to_string(o.hidden) + "-2";
  return result;
}

int run_bench_io(Context& c, const IoBenchOptions& o) {
  HPCML_CHECK_AS(ConfigError, o.batch >= 1 && o.steps >= 1 && o.reps >= 1 && o.files >= 1 && o.events >= 1,
                 "bench io: --batch, --steps, --reps, --files and --events must be >= 1");
  HPCML_CHECK_AS(ConfigError, o.mpi_io == "off" || o.mpi_io == "independent" || o.mpi_io == "collective",
                 "bench io: --mpi-io: expected one of [off, independent, collective], found '", o.mpi_io, "'");
  HPCML_CHECK_AS(ConfigError, o.kind == "fixed" || o.kind == "ragged" || o.kind == "both",
                 "bench io: --kind: expected one of [fixed, ragged, both], found '", o.kind, "'");
  const std::vector<std::string> kinds =
      o.kind == "both" ? std::vector<std::string>{"fixed", "ragged"} : std::vector<std::string>{o.kind};
  if (!o.generate_dir.empty()) {
    for (const auto& kind : kinds) {
      const auto glob = generate(c, o, kind, o.generate_dir);
      if (c.env.rank == 0) std::printf("bench io: wrote %s\n", glob.c_str());
    }
    return 0;
  }
  std::vector<std::pair<std::string, std::vector<std::string>>> datasets;
  std::string scratch;
  if (!o.inputs.empty()) {
    datasets.emplace_back("input", o.inputs);
  } else {
    scratch = (fs::temp_directory_path() / ("hpcml-bench-io-" + std::to_string(::getpid()))).string();
    // Every rank must use the same directory: rank 0's.
    at::Tensor name = at::empty({static_cast<int64_t>(scratch.size())}, at::kByte);
    std::memcpy(name.data_ptr(), scratch.data(), scratch.size());
    scratch = [&] {
      const auto t = c.world->allgather_varying(name)[0];
      return std::string(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()));
    }();
    for (const auto& kind : kinds) datasets.emplace_back(kind, std::vector<std::string>{generate(c, o, kind, scratch)});
  }
  nlohmann::json out = {{"ranks", c.world->size()}, {"threads", c.threads.intra_op}, {"prefetch", o.prefetch},
                        {"chunk_rows", o.chunk_rows}, {"window", o.window}, {"datasets", nlohmann::json::array()}};
  const int loader_cpu = pick_loader_cpu(c, o.loader_cpu);
  for (const auto& [label, patterns] : datasets)
    out["datasets"].push_back(bench_dataset(c, o, label, patterns, loader_cpu));
  const double rss = peak_rss_mib();
  std::vector<at::Tensor> rss_all = c.world->allgather_varying(at::tensor({rss}, at::kDouble));
  out["mpi_io"] = o.mpi_io;
  out["peak_rss_mib"] = nlohmann::json::array();
  for (const auto& r : rss_all) out["peak_rss_mib"].push_back(r.item<double>());
  c.world->barrier();
  if (!scratch.empty() && c.env.rank == 0) fs::remove_all(scratch);
  if (c.env.rank != 0) return 0;

  std::printf("bench io: %d rank(s), %d thread(s) each, batch %d per rank, prefetch %d, chunk %lld rows, window %lld\n",
              c.world->size(), c.threads.intra_op, o.batch, o.prefetch, static_cast<long long>(o.chunk_rows),
              static_cast<long long>(o.window));
  for (const auto& d : out["datasets"]) {
    std::printf("  %-7s %lld events in %d file(s)\n", d["dataset"].get<std::string>().c_str(),
                static_cast<long long>(d["events"].get<int64_t>()), static_cast<int>(d["files"].get<size_t>()));
    for (const char* mode : {"no_prefetch", "prefetch"}) {
      const auto& r = d["read"][mode];
      std::printf("    read %-12s %10.0f events/s %8.1f MB/s (all ranks); per rank:", mode,
                  r["events_per_s_total"].get<double>(), r["mb_per_s_total"].get<double>());
      for (const auto& rank : r["per_rank"])
        std::printf(" %.0f/s %.1f MB/s;", rank["events_per_s"].get<double>(), rank["mb_per_s"].get<double>());
      std::printf("\n");
    }
    if (d.contains("step_ms")) {
      const auto& s = d["step_ms"];
      std::printf("    step (%s): memory %.3f ms, hdf5 %.3f ms (reading %.0f%% of it), hdf5+prefetch %.3f ms = %.3fx "
                  "memory\n",
                  d["model"].get<std::string>().c_str(), s["memory"].get<double>(), s["hdf5"].get<double>(),
                  100.0 * d["read_fraction_without_prefetch"].get<double>(), s["hdf5_prefetch"].get<double>(),
                  d["prefetch_over_memory"].get<double>());
    }
  }
  std::printf("  peak RSS per rank (MiB):");
  for (const auto& r : out["peak_rss_mib"]) std::printf(" %.1f", r.get<double>());
  std::printf("\n%s\n", out.dump().c_str());
  std::fflush(stdout);
  if (!o.json_path.empty()) write_file_atomically(o.json_path, out.dump(2) + "\n");
  return 0;
}

}  // namespace

void add_bench_io_command(CLI::App& bench, CommonOptions& common, Runner& selected) {
  auto* sub = bench.add_subcommand(
      "io", "HDF5 reading: events/s and MB/s per rank and in total, fixed and ragged, with and without prefetch; "
            "then a stand-in training step fed from memory, from HDF5, and from HDF5 with prefetch; peak RSS");
  add_common_options(sub, common);
  auto o = std::make_shared<IoBenchOptions>();
  sub->add_option("--input", o->inputs, "Files or glob patterns in hpcml's layout (default: generated data)");
  sub->add_option("--kind", o->kind, "Generated data: fixed, ragged or both")->capture_default_str();
  sub->add_option("--events", o->events, "Generated events, all files together")->capture_default_str();
  sub->add_option("--files", o->files, "Generated files")->capture_default_str();
  sub->add_option("--generate", o->generate_dir, "Only write the generated dataset into this directory, then exit");
  sub->add_option("--batch", o->batch, "Events per rank per step")->capture_default_str();
  sub->add_option("--hidden", o->hidden, "Width of the stand-in MLP's two hidden layers")->capture_default_str();
  sub->add_option("--steps", o->steps, "Steps per measurement (at most one epoch)")->capture_default_str();
  sub->add_option("--reps", o->reps, "Alternating repetitions of the three feeds (medians of times and of per-repetition ratios reported)")
      ->capture_default_str();
  sub->add_option("--prefetch", o->prefetch, "Batches read ahead on the prefetch thread (-1: one shuffle window of batches + 1)")->capture_default_str();
  sub->add_option("--mpi-io", o->mpi_io,
                  "off (POSIX reads of each rank's hyperslabs), independent or collective (MPI-IO)")
      ->capture_default_str();
  sub->add_option("--loader-cpu", o->loader_cpu,
                  "CPU of the prefetch thread: -2 auto (with one compute thread and a spare CPU: the compute thread "
                  "on the rank's first CPU, the prefetch thread on its last), -1 unpinned, or a CPU number")
      ->capture_default_str();
  sub->add_option("--chunk-rows", o->chunk_rows, "Rows per shuffled chunk")->capture_default_str();
  sub->add_option("--window", o->window, "Rows per shuffle window")->capture_default_str();
  sub->add_flag("--read-only", o->read_only, "Only the read throughput over one epoch (no model): for RSS checks");
  sub->add_option("--json", o->json_path, "Also write the result as JSON to this file (rank 0)");
  sub->callback([&selected, o] { selected = [o](Context& c) { return run_bench_io(c, *o); }; });
}

}  // namespace hpcml::launch::cli
