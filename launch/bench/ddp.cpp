// `hpcml bench ddp`: data-parallel training throughput on synthetic data, with the
// time breakdown per step; `--plain` runs the same loop in plain LibTorch (no
// hpcml) for the 1-rank overhead comparison.
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "collectives/gradient_reducer.hpp"
#include "collectives/device.hpp"
#include "collectives/module_params.hpp"
#include "collectives/torch_compat.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "launch/cli/command.hpp"
#include "launch/train/optim.hpp"
#include "launch/train/train_config.hpp"
#include "models/registry.hpp"

namespace hpcml::launch::cli {

namespace {

struct DdpBenchOptions {
  std::string model = "mlp";
  int batch = 128;
  int steps = 50;
  int warmup = 5;
  /// --compression, --transport, --overlap and --bucket-cap-mb: the train config's
  /// reducer keys, with their defaults and checks.
  ReducerSection reducer;
  int direct_min_kb = static_cast<int>(collectives::ReducerOptions{}.direct_min_bytes / 1024);
  bool plain = false;
  bool step_in_reduction = true;
  std::string device;     ///< "" = runtime.device; else sets it (and runtime.backend auto)
  std::string precision = "fp32";
  std::string json_path;
};

// The workload: the MLP of ../shared/anchors/ddp_reference.py, layer for layer, or a
// zoo model (models::make) fed models::example_inputs. Either way a fixed random batch
// per rank, built once.
struct Workload {
  std::function<at::Tensor()> loss;  ///< one forward and its loss
  std::vector<collectives::NamedTensor> parameters, buffers;
  std::vector<at::Tensor> trainable;  ///< for the optimizer
  std::shared_ptr<void> keep;         ///< owns the model
};

Workload make_workload(const std::string& name, int batch, uint64_t data_seed, const c10::Device& device) {
  Workload w;
  auto gen = at::detail::createCPUGenerator(data_seed);
  if (name == "mlp") {
    torch::manual_seed(0);
    auto model = std::make_shared<torch::nn::Sequential>(
        torch::nn::Linear(256, 1024), torch::nn::ReLU(), torch::nn::Linear(1024, 1024), torch::nn::ReLU(),
        torch::nn::Linear(1024, 10));
    (*model)->to(device);
    const auto x = torch::randn({batch, 256}, gen).to(device);
    const auto y = torch::randint(0, 10, {batch}, gen).to(device);
    w.loss = [model, x, y] { return torch::nn::functional::cross_entropy((*model)->forward(x), y); };
    w.parameters = collectives::named_parameters(**model);
    w.buffers = collectives::named_buffers(**model);
    w.keep = model;
  } else {
    std::string names = "mlp";
    for (const auto& e : models::zoo()) names += ", " + e.name;
    bool known = false;
    for (const auto& e : models::zoo()) known = known || e.name == name;
    HPCML_CHECK_AS(ConfigError, known, "bench ddp: --model: expected one of [", names, "], found '", name, "'");
    const auto& entry = models::zoo_entry(name);
    std::shared_ptr<models::Model> model = models::make(name, 0);
    model->to(device);
    auto inputs = models::example_inputs(name, batch, data_seed);
    for (auto& [input_name, t] : inputs) t = t.to(device);
    const bool regression = entry.task == "regression";
    const auto y = (regression ? torch::randn({batch, 1}, gen) : torch::randint(0, 2, {batch}, gen)).to(device);
    w.loss = [model, inputs, y, regression] {
      const auto out = model->forward(inputs);
      return regression ? torch::mse_loss(out, y) : torch::nn::functional::cross_entropy(out, y);
    };
    w.parameters = model->named_parameters();
    w.buffers = model->named_buffers();
    w.keep = model;
  }
  for (const auto& [n, p] : w.parameters) w.trainable.push_back(p);
  return w;
}

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

int run_bench_ddp(Context& c, const DdpBenchOptions& o) {
  HPCML_CHECK_AS(ConfigError, o.batch >= 1 && o.steps >= 1 && o.warmup >= 0, "bench ddp: --batch and --steps must be "
                 ">= 1 and --warmup >= 0; found ", o.batch, ", ", o.steps, ", ", o.warmup);
  config::check_section(o.reducer, "reducer",
                        {{"compression", "bench ddp --compression"}, {"transport", "bench ddp --transport"},
                         {"overlap", "bench ddp --overlap"}, {"bucket_cap_mb", "bench ddp --bucket-cap-mb"}});
  collectives::ReducerOptions reducer_options = o.reducer.options();
  reducer_options.direct_min_bytes = int64_t{o.direct_min_kb} * 1024;

  const c10::Device device = c.device.device;
  const auto precision = o.precision == "bf16"   ? at::kBFloat16
                         : o.precision == "fp16" ? at::kHalf
                                                 : at::kFloat;
  HPCML_CHECK_AS(ConfigError, o.precision == "fp32" || o.precision == "bf16" || o.precision == "fp16",
                 "bench ddp: --precision: expected fp32, bf16 or fp16, found '", o.precision, "'");
  {
    std::string why;
    HPCML_CHECK_AS(ConfigError, compat::autocast_supported(device.type(), precision, &why),
                   "bench ddp: --precision ", o.precision, " on ", device.str(), ": ", why);
  }
  // The step inside the reduction reads gradients through CPU pointers.
  const bool step_in_reduction = o.step_in_reduction && device.is_cpu();
  // Fixed random data per rank, as the reference does.
  Workload work = make_workload(o.model, o.batch, 1 + c.env.rank, device);
  std::unique_ptr<collectives::GradientReducer> reducer;
  if (!o.plain) {
    reducer = std::make_unique<collectives::GradientReducer>(work.parameters, work.buffers, c.world,
                                                             reducer_options);
  }
  // hpcml: its SGD (the Trainer's; the same results as torch's), stepped per bucket
  // inside the reduction unless --no-step-in-reduction. Plain: torch's SGD.
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  const auto sgd_options = torch::optim::SGDOptions(0.01);
  if (reducer) {
    auto fused = std::make_unique<FusedSgd>(work.trainable, sgd_options);
    if (step_in_reduction) reducer->set_bucket_update(bucket_update(*fused), fused->updates_ranges());
    optimizer = std::move(fused);
  } else {
    optimizer = std::make_unique<torch::optim::SGD>(work.trainable, sgd_options);
  }
  const bool in_reduction = reducer && step_in_reduction;

  double t_forward = 0, t_backward = 0, t_wait = 0, t_optimizer = 0, t_reduce = 0;
  float first_loss = 0;  // rank 0's loss before the first update
  at::Tensor last_loss_t;  // and at the last step (read once at the end: .item() would sync a GPU each step)
  bool first = true;
  auto step = [&](bool timed) {
    auto t0 = Clock::now();
    if (reducer) {
      reducer->zero_grad();
    } else {
      // The fastest plain loop: fresh gradients each step. (optimizer.zero_grad()
      // zeroes in place and then accumulates, which is slower; see docs/benchmarks.md.)
      for (auto& p : work.trainable) p.mutable_grad().reset();
    }
    at::Tensor loss;
    {
      compat::AutocastScope autocast(device.type(), precision);
      loss = work.loss();
    }
    const double forward = ms_since(t0);
    auto t1 = Clock::now();
    if (reducer) reducer->backward(loss);
    else loss.backward();
    const double backward_total = ms_since(t1);
    const double wait = reducer ? reducer->last_step().exposed_wait_ms : 0.0;
    const double update = reducer ? reducer->last_step().update_ms : 0.0;  // the step, in the reduction
    double reduce_work = 0;  // this rank's own allreduce or summing time
    if (reducer) {
      for (const auto& b : reducer->last_step().buckets) reduce_work += static_cast<double>(b.end_us - b.start_us);
    }
    auto t2 = Clock::now();
    if (!in_reduction) optimizer->step();
    if (timed) {
      t_forward += forward;
      t_backward += backward_total - wait - update;
      t_wait += wait;
      t_reduce += reduce_work / 1000.0;
      t_optimizer += ms_since(t2) + update;
    }
    last_loss_t = loss.detach();
    if (first) first_loss = last_loss_t.item<float>();
    first = false;
  };
  for (int i = 0; i < o.warmup; ++i) step(false);
  c.world->barrier();
  const auto start = Clock::now();
  for (int i = 0; i < o.steps; ++i) step(true);
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
  c.world->barrier();
  const double seconds = ms_since(start) / 1000.0;
  const float last_loss = last_loss_t.item<float>();

  // Breakdown: the mean over ranks; loss: rank 0's (all ranks hold the same model).
  at::Tensor parts = at::tensor({t_forward, t_backward, t_wait, t_optimizer, t_reduce}, at::kDouble) / o.steps;
  collectives::AllreduceOptions avg;
  avg.op = collectives::ReduceOp::kAvg;
  c.world->allreduce(parts, avg);
  if (c.env.rank != 0) return 0;
  const int n = c.world->size();
  const double samples_per_s = static_cast<double>(o.steps) * o.batch * n / seconds;
  const auto p = parts.accessor<double, 1>();
  nlohmann::json out = {{"impl", o.plain ? "libtorch-plain" : "hpcml"},
                        {"model", o.model},
                        {"device", device.str()},
                        {"backend", c.world->name()},
                        {"breakdown_note", device.is_cuda() ? "host time: GPU work is asynchronous, so forward and "
                                                              "backward show launch time and the wait lands in the step"
                                                            : "wall time per part"},
                        {"device_name", collectives::describe_device(device)},
                        {"precision", o.precision},
                        {"libtorch", compat::libtorch_version()},
                        {"ranks", n},
                        {"batch_per_rank", o.batch},
                        {"threads", c.threads.intra_op},
                        {"steps", o.steps},
                        {"compression", o.reducer.compression},
                        {"transport", o.plain ? "n/a" : collectives::to_string(reducer->transport())},
                        {"overlap", o.plain ? "n/a" : reducer->overlap_mode()},
                        {"buckets", reducer ? reducer->num_buckets() : 0},
                        {"step_in_reduction", in_reduction},
                        {"parameters_shared", reducer != nullptr && reducer->parameters_shared()},
                        {"step_ms", 1000.0 * seconds / o.steps},
                        {"samples_per_s", samples_per_s},
                        {"first_loss", first_loss},
                        {"final_loss", last_loss},
                        {"breakdown_ms",
                         {{"data_wait", 0.0},
                          {"forward", p[0]},
                          {"backward", p[1]},
                          {"comm_wait", p[2]},
                          {"reduce_work", p[4]},
                          {"optimizer", p[3]}}}};
  std::printf("bench ddp: %s, %s on %s (%s), %d rank(s) x batch %d, %d thread(s), transport %s, compression %s, "
              "overlap %s, optimizer step %s\n",
              o.plain ? "plain LibTorch" : "hpcml", o.model.c_str(), device.str().c_str(), o.precision.c_str(), n,
              o.batch, c.threads.intra_op,
              out["transport"].get<std::string>().c_str(), o.reducer.compression.c_str(),
              out["overlap"].get<std::string>().c_str(), reducer ? reducer->update_placement().c_str() : "after it");
  if (reducer && !reducer->transport_note().empty() && n > 1) {
    std::printf("  (%s)\n", reducer->transport_note().c_str());
  }
  std::printf("  samples/s %.0f   step %.3f ms   (forward %.3f, backward %.3f, exposed comm wait %.3f, optimizer "
              "%.3f; data wait 0: synthetic; this rank's reduction work %.3f)   final loss %.6f\n",
              samples_per_s, 1000.0 * seconds / o.steps, p[0], p[1], p[2], p[3], p[4], last_loss);
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  if (!o.json_path.empty()) write_file_atomically(o.json_path, out.dump(2) + "\n");
  return 0;
}

}  // namespace

void add_bench_ddp_command(CLI::App& bench, CommonOptions& common, Runner& selected) {
  auto* sub = bench.add_subcommand(
      "ddp", "Data-parallel training throughput on synthetic data: samples/s, step time and its breakdown "
             "(forward, backward, exposed communication wait, optimizer). --model mlp is the workload of "
             "../shared/anchors/ddp_reference.py (MLP 256-1024-1024-10, SGD lr 0.01, fixed random batch per rank)");
  add_common_options(sub, common);
  auto o = std::make_shared<DdpBenchOptions>();
  sub->add_option("--model", o->model,
                  "Workload: mlp, or a zoo model (hpcml models) fed random inputs of its shape (MSE or "
                  "cross-entropy loss)")
      ->capture_default_str();
  sub->add_option("--batch", o->batch, "Samples per rank per step")->capture_default_str();
  sub->add_option("--steps", o->steps, "Timed steps")->capture_default_str();
  sub->add_option("--warmup", o->warmup, "Untimed steps before timing")->capture_default_str();
  sub->add_option("--compression", o->reducer.compression, "Gradients on the wire: none (float32), bf16 or fp16")
      ->capture_default_str();
  sub->add_option("--transport", o->reducer.transport,
                  "How gradients reach the other ranks: auto (shm when every rank is on this node), shm (one "
                  "shared-memory segment; idle ranks sum for all), mpi (bucketed MPI allreduce)")
      ->capture_default_str();
  sub->add_option("--overlap", o->reducer.overlap,
                  "MPI transport: when bucket allreduces run: auto (during backward only if the rank has a core to "
                  "spare), always, never")
      ->capture_default_str();
  sub->add_option("--bucket-cap-mb", o->reducer.bucket_cap_mb, "Size of gradient buckets after the first (MiB)")
      ->capture_default_str();
  sub->add_option("--direct-min-kb", o->direct_min_kb,
                  "Gradients of at least this many KiB are allreduced in place instead of copied into a bucket")
      ->capture_default_str();
  sub->add_flag("--step-in-reduction,!--no-step-in-reduction", o->step_in_reduction,
                "hpcml: update each bucket's parameters inside the reduction as soon as its averages are final "
                "(optimizer.step_in_reduction; default; over shared memory the ranks then share one copy of the "
                "parameters, each updating 1/N, as the bench's SGD has no momentum), or step after the reduction")
      ->capture_default_str();
  sub->add_flag("--plain", o->plain,
                "Plain LibTorch loop without hpcml: no gradient averaging. At 1 rank, the overhead baseline; at N "
                "ranks, N independent loops: this machine's scaling ceiling without communication");
  sub->add_option("--device", o->device,
                  "Where to train: cpu, cuda (GPU local_rank % visible), auto. Sets runtime.device, and "
                  "runtime.backend auto (nccl when every rank has a GPU); default: runtime.device (cpu)");
  sub->add_option("--precision", o->precision,
                  "fp32, or autocast to bf16 / fp16 for eligible ops (matmul, convolution) as torch.autocast; "
                  "fp16 on the CPU needs LibTorch 2.x")
      ->capture_default_str();
  sub->add_option("--json", o->json_path, "Also write the result as JSON to this file (rank 0)");
  sub->callback([&selected, &common, o] {
    if (!o->device.empty()) {
      // Before the user's own --set, so those still win.
      common.overrides.insert(common.overrides.begin(),
                              {"runtime.device=" + o->device, "runtime.backend=auto"});
    }
    selected = [o](Context& c) { return run_bench_ddp(c, *o); };
  });
}

}  // namespace hpcml::launch::cli
