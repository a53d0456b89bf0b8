// `hpcml bench allreduce`: hpcml's allreduce paths against raw MPI_Allreduce, in one run.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "collectives/gradient_reducer.hpp"
#include "collectives/mpi_reference.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "core/limits.hpp"
#include "core/watchdog.hpp"
#include "launch/bench/stats.hpp"
#include "launch/cli/command.hpp"

namespace hpcml::launch::cli {

namespace {

struct AllreduceBenchOptions {
  std::string min_size = "4K";
  std::string max_size = "64M";
  int reps = 7;
  double target_ms = 40.0;
  bool reducer = false;
  std::string json_path;
};

int64_t parse_size(const std::string& text, const char* option) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string suffix = text.substr(used);
  int64_t scale = 1;
  if (suffix == "K" || suffix == "KB" || suffix == "KiB") scale = 1024;
  else if (suffix == "M" || suffix == "MB" || suffix == "MiB") scale = 1024 * 1024;
  else if (suffix == "G" || suffix == "GB" || suffix == "GiB") scale = 1024LL * 1024 * 1024;
  else if (!suffix.empty()) used = 0;
  const auto bytes = static_cast<int64_t>(value * static_cast<double>(scale));
  HPCML_CHECK_AS(ConfigError, used > 0 && bytes >= 4, "bench allreduce: ", option,
                 ": expected a size of at least 4 bytes such as 4K, 1M or 65536; found '", text, "'");
  return bytes;
}

// One way of running an allreduce of `t` on every rank.
struct Impl {
  const char* impl;  // "hpcml", "mpi", "reducer-mpi" or "reducer-shm"
  const char* path;  // "blocking", "nonblocking" or "exposed_wait"
  std::function<void(at::Tensor&)> run;
  /// When set, the op's time is this (seconds) instead of the wall clock around run().
  std::function<double()> measured;
};

// The gradient reducer as the Trainer runs it, over one float32 parameter of the
// message's size: each op a backward of sum(p) and the bucket's reduction; its time is
// the reducer's exposed wait (what the Trainer logs as comm_wait), with the reduction
// after backward (overlap never), so it is the whole reduction. These rows are what
// `hpcml project fit` fits each transport's alpha and beta on (docs/scaling.md).
struct ReducerImpl {
  at::Tensor param;
  std::unique_ptr<collectives::GradientReducer> reducer;

  ReducerImpl(int64_t bytes, collectives::Transport transport, const collectives::BackendPtr& world)
      : param(at::zeros({bytes / 4}, at::kFloat).requires_grad_(true)) {
    collectives::ReducerOptions options;
    options.transport = transport;
    options.overlap = collectives::Overlap::kNever;
    reducer = std::make_unique<collectives::GradientReducer>(
        std::vector<collectives::NamedTensor>{{"p", param}}, std::vector<collectives::NamedTensor>{}, world,
        options);
  }
  void run() {
    reducer->zero_grad();
    reducer->backward(param.sum());
  }
  double seconds() const { return reducer->last_step().exposed_wait_ms / 1000.0; }
};

struct Row {
  std::string impl, path;
  int64_t bytes = 0;
  int iters = 0;
  std::vector<double> seconds;  // per-op times of this rank; after reduction, the slowest rank's median
};

using bench::median;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

int run_bench_allreduce(Context& c, const AllreduceBenchOptions& o) {
  HPCML_CHECK_AS(ConfigError, c.world->name() == "mpi", "bench allreduce: needs runtime.backend=mpi, found '",
                 c.world->name(), "'");
  HPCML_CHECK_AS(ConfigError, o.reps >= 1, "bench allreduce: --reps: expected >= 1, found ", o.reps);
  const int64_t min_bytes = parse_size(o.min_size, "--min-bytes");
  const int64_t max_bytes = parse_size(o.max_size, "--max-bytes");
  HPCML_CHECK_AS(ConfigError, min_bytes <= max_bytes, "bench allreduce: --min-bytes (", min_bytes,
                 ") exceeds --max-bytes (", max_bytes, ")");
  HPCML_CHECK_AS(ConfigError, max_bytes <= static_cast<int64_t>(limits::kMaxMessageBytes), "bench allreduce: ",
                 "--max-bytes: expected at most ", limits::format_bytes(static_cast<double>(limits::kMaxMessageBytes)),
                 "; found '", o.max_size, "'");
  HPCML_CHECK_AS(ConfigError, o.target_ms > 0 && o.target_ms <= 60000, "bench allreduce: --target-ms: expected a ",
                 "time in (0, 60000] ms; found ", o.target_ms);
  HPCML_CHECK_AS(ConfigError, o.reps <= 10000, "bench allreduce: --reps: expected at most 10000, found ", o.reps);
  // Each rank holds the message, its result and the MPI library's copy.
  limits::check_fits_in_memory(3.0 * static_cast<double>(max_bytes) * std::max(1, c.env.local_size),
                               "bench allreduce's largest message on every rank of this node", "--max-bytes");

  // Raw MPI runs on its own duplicate so it never interleaves with the backend's.
  collectives::RawMpiAllreduce raw(*c.world);
  const std::vector<Impl> base_impls = {
      {"mpi", "blocking", [&](at::Tensor& t) { raw.blocking(t); }},
      {"hpcml", "blocking", [&](at::Tensor& t) { c.world->allreduce(t); }},
      {"hpcml", "nonblocking",
       [&](at::Tensor& t) {
         collectives::AllreduceOptions async;
         async.async = true;
         c.world->allreduce(t, async)->wait();
       }},
      {"mpi", "nonblocking", [&](at::Tensor& t) { raw.nonblocking(t); }},
  };

  std::vector<Row> rows;
  for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
    // Zeros stay zeros under repeated in-place sums: no overflow, no denormals.
    at::Tensor t = at::zeros({bytes / 4}, at::kFloat);
    std::vector<Impl> impls = base_impls;
    std::vector<std::unique_ptr<ReducerImpl>> reducers;
    if (o.reducer && c.world->size() > 1) {  // one rank reduces nothing
      reducers.push_back(std::make_unique<ReducerImpl>(bytes, collectives::Transport::kMpi, c.world));
      if (c.env.num_nodes == 1) {
        reducers.push_back(std::make_unique<ReducerImpl>(bytes, collectives::Transport::kSharedMemory, c.world));
      }
      for (auto& r : reducers) {
        const bool shm = r->reducer->transport() == collectives::Transport::kSharedMemory;
        ReducerImpl* ri = r.get();
        impls.push_back({shm ? "reducer-shm" : "reducer-mpi", "exposed_wait", [ri](at::Tensor&) { ri->run(); },
                         [ri] { return ri->seconds(); }});
      }
    }
    // Calibrate the iteration count on raw MPI (rank 0 decides, all agree).
    double probe = 0;
    for (int i = 0; i < 3; ++i) {
      const auto t0 = Clock::now();
      base_impls[0].run(t);
      probe = seconds_since(t0);
    }
    int iters = std::clamp(static_cast<int>(o.target_ms * 1e-3 / std::max(probe, 1e-7)), 3, 2000);
    at::Tensor agreed = at::tensor({iters}, at::kInt);
    c.world->broadcast(agreed);
    iters = agreed.item<int>();

    std::vector<Row> size_rows;
    for (const auto& impl : impls) size_rows.push_back({impl.impl, impl.path, bytes, iters, {}});
    for (int rep = 0; rep < o.reps; ++rep) {
      // Rotate the order every rep, so no implementation always runs first.
      for (size_t k = 0; k < impls.size(); ++k) {
        const size_t i = (k + static_cast<size_t>(rep)) % impls.size();
        impls[i].run(t);  // warm-up
        c.world->barrier();
        // Each op is timed on its own: the median over all of them shrugs off the
        // stalls a shared 2-core machine throws in, which a block mean does not.
        for (int it = 0; it < iters; ++it) {
          const auto t0 = Clock::now();
          impls[i].run(t);
          const double wall = seconds_since(t0);
          size_rows[i].seconds.push_back(impls[i].measured ? impls[i].measured() : wall);
        }
      }
    }
    // Per implementation: this rank's median op time, then the slowest rank's.
    for (auto& row : size_rows) {
      at::Tensor local = at::tensor({median(row.seconds)}, at::kDouble);
      collectives::AllreduceOptions max_op;
      max_op.op = collectives::ReduceOp::kMax;
      c.world->allreduce(local, max_op);
      row.seconds = {local.item<double>()};
    }
    rows.insert(rows.end(), size_rows.begin(), size_rows.end());
  }
  if (c.env.rank != 0) return 0;

  const int n = c.world->size();
  const double bus_factor = n > 1 ? 2.0 * (n - 1) / n : 1.0;
  nlohmann::json out = nlohmann::json::array();
  std::printf("allreduce, float32 sum, %d ranks, %d alternating reps; latency: median op time of the slowest rank\n",
              n, o.reps);
  std::printf("%10s  %-6s %-12s %8s %12s %11s %11s %10s\n", "bytes", "impl", "path", "iters", "latency_us",
              "algbw_GB/s", "busbw_GB/s", "vs_mpi");
  double mpi_busbw = 0;
  for (const auto& r : rows) {
    const double sec = median(r.seconds);
    const double algbw = static_cast<double>(r.bytes) / sec / 1e9;
    const double busbw = algbw * bus_factor;
    if (r.impl == "mpi" && r.path == "blocking") mpi_busbw = busbw;
    const double ratio = mpi_busbw > 0 ? busbw / mpi_busbw : 0;
    std::printf("%10lld  %-6s %-12s %8d %12.2f %11.3f %11.3f %10.3f\n", static_cast<long long>(r.bytes),
                r.impl.c_str(), r.path.c_str(), r.iters, sec * 1e6, algbw, busbw, ratio);
    out.push_back({{"impl", r.impl},
                   {"path", r.path},
                   {"bytes", r.bytes},
                   {"ranks", n},
                   {"iters", r.iters},
                   {"reps", o.reps},
                   {"statistic", "median per-op time over iters*reps ops, slowest rank"},
                   {"latency_us", sec * 1e6},
                   {"algbw_gbps", algbw},
                   {"busbw_gbps", busbw},
                   {"busbw_vs_mpi_blocking", ratio}});
  }
  std::fflush(stdout);
  if (!o.json_path.empty()) write_file_atomically(o.json_path, out.dump(2) + "\n");
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, CommonOptions& common, Runner& selected) {
  auto* bench = app.add_subcommand("bench", "Benchmarks (JSON plus a readable table)");
  bench->require_subcommand(1);
  auto* sub = bench->add_subcommand(
      "allreduce",
      "Latency, algorithm and bus bandwidth of hpcml's allreduce (blocking; non-blocking with wait) and of raw "
      "MPI_Allreduce / MPI_Iallreduce+MPI_Wait, float32 sum, message sizes growing 4x from --min-bytes to "
      "--max-bytes, measured in alternating order in the same run. Latency is the median time of one op "
      "(over iterations x reps) on the slowest rank; bus bandwidth = algorithm bandwidth x 2(n-1)/n");
  add_common_options(sub, common);
  auto o = std::make_shared<AllreduceBenchOptions>();
  sub->add_option("--min-bytes", o->min_size, "Smallest message (bytes; K, M, G suffixes)")->capture_default_str();
  sub->add_option("--max-bytes", o->max_size, "Largest message (bytes; K, M, G suffixes)")->capture_default_str();
  sub->add_option("--reps", o->reps, "Alternating repetitions per size (each implementation runs once per rep)")
      ->capture_default_str();
  sub->add_option("--target-ms", o->target_ms, "Approximate time of one timed repetition, in ms")
      ->capture_default_str();
  sub->add_flag("--reducer", o->reducer,
                "Also time the gradient reducer as the Trainer runs it, over one parameter of each size: rows "
                "reducer-mpi and (all ranks on one node) reducer-shm, path exposed_wait (the Trainer's comm_wait, "
                "reduction after backward); what `hpcml project fit` fits a transport on");
  sub->add_option("--json", o->json_path,
                  "Write rows {impl, path, bytes, ranks, latency_us, algbw_gbps, busbw_gbps, ...} to this file (rank 0)");
  sub->callback([&selected, o] { selected = [o](Context& c) { return run_bench_allreduce(c, *o); }; });
  add_bench_ddp_command(*bench, common, selected);
  add_bench_io_command(*bench, common, selected);
  add_bench_model_command(*bench, common, selected);
  add_bench_infer_command(*bench, common, selected);
  add_bench_pack_command(*bench, common, selected);
  add_bench_scaling_command(*bench, common, selected);
}

}  // namespace hpcml::launch::cli
