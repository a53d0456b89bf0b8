/// @file
/// The config of `hpcml train` (keys: `hpcml config --reference`).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "collectives/gradient_reducer.hpp"
#include "core/config.hpp"
#include "core/limits.hpp"
#include "launch/run_config.hpp"
#include "launch/serve/client.hpp"
#include "launch/serve/roles.hpp"
#include "launch/serve/server.hpp"
#include "models/registry.hpp"

namespace hpcml::launch {

/// mlp, torchscript and the zoo's models.
inline std::vector<std::string> model_names() {
  std::vector<std::string> names{"mlp", "torchscript"};
  for (const auto& entry : models::zoo()) names.push_back(entry.name);
  return names;
}

/// model.flow: the neural spline flow (model nsf-gw, docs/flows.md).
struct FlowSection {
  int steps = 5;
  int bins = 8;
  double tail_bound = 3.0;
  int hidden = 128;
  int hidden_layers = 2;
  std::string linear = "lu";
  int basis = 64;
  std::vector<int> embedding_hidden{256, 128};
  int context = 32;
  int svd_waveforms = 1000;
  int posterior_samples = 1000;
  bool fresh_noise = false;
  bool marginalize_phase = false;
  bool align_time = false;
  template <typename V>
  void describe(V& v) {
    v.field("steps", steps, "coupling steps", config::in_range(1, limits::kMaxDepth));
    v.field("bins", bins, "rational-quadratic spline bins", config::in_range(2, limits::kMaxBins));
    v.field("tail_bound", tail_bound, "spline interval [-B, B] in standardised parameter units (identity outside)",
            config::positive<double>());
    v.field("hidden", hidden, "width of each coupling's conditioner MLP", config::in_range(1, limits::kMaxWidth));
    v.field("hidden_layers", hidden_layers, "hidden layers of each coupling's conditioner MLP",
            config::in_range(1, limits::kMaxDepth));
    v.field("linear", linear, "between couplings: a permutation, or a permutation then an LU-linear layer",
            config::one_of({"lu", "permutation"}));
    v.field("basis", basis, "outputs of the strain projection (initialised from the SVD of training waveforms)",
            config::in_range(1, limits::kMaxWidth));
    v.field("embedding_hidden", embedding_hidden, "hidden widths of the embedding MLP after the projection",
            config::each(config::in_range(1, limits::kMaxWidth)));
    v.field("context", context, "embedding output: the context the couplings are conditioned on",
            config::in_range(1, limits::kMaxWidth));
    v.field("svd_waveforms", svd_waveforms,
            "noise-free whitened templates, of the first training rows' parameters, whose SVD initialises the "
            "projection (at least basis)",
            config::in_range(1, limits::kMaxWidth));
    v.field("posterior_samples", posterior_samples,
            "eval: posterior draws per validation event for the calibration (P-P) statistics",
            config::in_range(2, static_cast<int>(limits::kMaxDraws)));
    v.field("fresh_noise", fresh_noise,
            "train: re-pair every batch's signals with other events' noise (noise = strain - template(theta)), so "
            "the flow never sees one (signal, noise) pair twice, as DINGO adds fresh noise; off: the files' pairs");
    v.field("marginalize_phase", marginalize_phase,
            "learn q(chirp_mass, mass_ratio, distance, t_c | strain) without the phase; infer draws the phase from "
            "its exact conditional given the other four (the toy waveform is linear in cos and sin of the phase), "
            "so importance weights still target the full likelihood (docs/flows.md)");
    v.field("align_time", align_time,
            "roll each strain so its matched-filter time estimate t-hat (against a fixed mid-prior reference) sits "
            "at the prior's middle t_c, and learn t_c - t-hat; t-hat is a function of the strain, so the proposal "
            "density stays exact (docs/flows.md)");
  }
};

struct ModelSection {
  std::string name = "mlp";
  std::vector<int> hidden{256, 256};
  std::string torchscript;
  int seed = 0;
  bool sync_batch_norm = false;
  FlowSection flow;
  template <typename V>
  void describe(V& v) {
    v.field("name", name,
            "model: mlp, torchscript (a file scripted by Python, see model.torchscript), or a zoo model (`hpcml "
            "models`; data.inputs and data.target default to the zoo model's fields)",
            config::one_of(model_names()));
    v.field("hidden", hidden, "mlp: hidden layer widths", config::each(config::in_range(1, limits::kMaxWidth)));
    v.field("torchscript", torchscript,
            "torchscript: path of the .pt file; forward's tensor arguments are its inputs, by name (data.inputs), "
            "and it returns one tensor (logits, or the regressed value)");
    v.field("seed", seed, "seed of the initial weights (rank 0's are broadcast)", config::at_least(0));
    v.field("sync_batch_norm", sync_batch_norm,
            "SyncBatchNorm: batch-norm layers of zoo models normalise with the statistics of the whole global batch "
            "(allreduced every forward and backward; uneven per-rank batches allowed) instead of each rank's own");
    v.section("flow", flow, "nsf-gw: the neural spline flow's architecture and calibration");
  }
};

struct DataSection {
  std::string name = "synthetic";
  int samples = 8192;
  int validation_samples = 1024;
  int features = 64;
  int classes = 10;
  int seed = 1;
  std::vector<std::string> files;
  std::vector<std::string> validation_files;
  std::string input = "";
  std::map<std::string, std::string> inputs;
  std::string target = "";
  int pad_to = 0;
  int chunk_rows = 1024;
  int window = 8192;
  int prefetch = -1;
  template <typename V>
  void describe(V& v) {
    v.field("name", name,
            "dataset: synthetic (a learnable classification task generated from the seed) or hdf5 (files in "
            "hpcml's layout, docs/data-layout.md)",
            config::one_of({"synthetic", "hdf5"}));
    v.field("samples", samples, "synthetic: training samples", config::in_range(1, limits::kMaxRows));
    v.field("validation_samples", validation_samples, "synthetic: validation samples (0: no validation)",
            config::in_range(0, limits::kMaxRows));
    v.field("features", features, "synthetic: input features", config::in_range(1, limits::kMaxFeatures));
    v.field("classes", classes, "classes of a classification target (synthetic and hdf5)", config::in_range(2, limits::kMaxClasses));
    v.field("seed", seed, "synthetic: seed of the data", config::at_least(0));
    v.field("files", files, "hdf5: training files or glob patterns");
    v.field("validation_files", validation_files, "hdf5: validation files or glob patterns (none: no validation)");
    v.field("input", input, "hdf5: the dataset field fed to a one-input model (e.g. inputs, images)");
    v.field("inputs", inputs,
            "hdf5: the model's inputs by name -> dataset field, e.g. {particles: constituents/values, mask: "
            "constituents/mask}; a ragged collection's items are padded and '<collection>/mask' is its mask; "
            "zoo models default to their fields, a TorchScript model's names are its forward arguments");
    v.field("target", target,
            "hdf5: the target field; integer: classification (cross-entropy, accuracy), floating-point: regression "
            "(see train.loss; resolution = RMS of (prediction - target) / target)");
    v.field("pad_to", pad_to,
            "hdf5: ragged collections are padded to the longest event of each batch (0) or to this length "
            "(longer events keep their first pad_to items)",
            config::in_range(0, limits::kMaxWidth));
    v.field("chunk_rows", chunk_rows, "hdf5: rows per shuffled chunk", config::in_range(1, limits::kMaxRows));
    v.field("window", window, "hdf5: rows per shuffle window (memory holds about two windows)",
            config::in_range(1, limits::kMaxRows));
    v.field("prefetch", prefetch, "hdf5: batches read ahead on a thread (0: none, -1: a window of batches + 1)",
            config::in_range(-1, 1 << 16));
  }
};

struct OptimizerSection {
  std::string name = "sgd";
  double lr = 0.05;
  double momentum = 0.9;
  bool nesterov = false;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  bool step_in_reduction = true;
  template <typename V>
  void describe(V& v) {
    v.field("name", name, "optimizer", config::one_of({"sgd", "adam", "adamw"}));
    v.field("lr", lr, "base learning rate (before schedule and scaling)", config::positive<double>());
    v.field("momentum", momentum, "sgd: momentum", config::in_range(0.0, 1.0));
    v.field("nesterov", nesterov, "sgd: Nesterov momentum");
    v.field("weight_decay", weight_decay, "weight decay (decoupled for adamw)", config::at_least(0.0));
    v.field("beta1", beta1, "adam/adamw: beta1", config::in_range(0.0, 1.0));
    v.field("beta2", beta2, "adam/adamw: beta2", config::in_range(0.0, 1.0));
    v.field("eps", eps, "adam/adamw: epsilon", config::positive<double>());
    v.field("step_in_reduction", step_in_reduction,
            "without train.clip_grad_norm: update each bucket's parameters as soon as its averaged gradients are "
            "final, inside the gradient reduction (same results as a step after it; with 16-bit compression over "
            "shared memory the 16-bit averages are read directly; with SGD without momentum over shared memory the "
            "ranks share one copy of the parameters, each updating 1/N of it)");
  }
};

struct ScheduleSection {
  std::string name = "constant";
  int warmup_steps = 0;
  int step_size = 1000;
  double gamma = 0.1;
  double min_lr_ratio = 0.0;
  bool scale_with_batch = false;
  template <typename V>
  void describe(V& v) {
    v.field("name", name, "learning-rate schedule after warmup", config::one_of({"constant", "cosine", "step"}));
    v.field("warmup_steps", warmup_steps, "linear warmup from 0 over this many steps", config::at_least(0));
    v.field("step_size", step_size, "step: multiply by gamma every step_size steps", config::at_least(1));
    v.field("gamma", gamma, "step: factor", config::in_range(0.0, 1.0));
    v.field("min_lr_ratio", min_lr_ratio, "cosine: final lr as a fraction of the peak", config::in_range(0.0, 1.0));
    v.field("scale_with_batch", scale_with_batch,
            "linear scaling: multiply lr by the number of ranks (global batch / per-rank batch)");
  }
};

struct TrainSection {
  int epochs = 2;
  int max_steps = 0;
  int batch_size = 64;
  int gradient_accumulation = 1;
  double clip_grad_norm = 0.0;
  std::string last_batch = "drop";
  bool shuffle = true;
  std::string slicing = "strided";
  int seed = 1234;
  int log_every = 20;
  bool allow_unused_parameters = false;
  std::string loss = "auto";
  std::string on_nonfinite = "error";
  int pack = 1;
  std::string precision = "fp32";
  template <typename V>
  void describe(V& v) {
    v.field("epochs", epochs, "epochs (ignored when max_steps > 0)", config::at_least(1));
    v.field("max_steps", max_steps, "stop after this many optimizer steps (0: run all epochs)", config::at_least(0));
    v.field("batch_size", batch_size, "samples per rank per optimizer step", config::in_range(1, limits::kMaxBatch));
    v.field("gradient_accumulation", gradient_accumulation,
            "micro-batches per step (batch_size is split; gradients reduced once per step)",
            config::in_range(1, limits::kMaxBatch));
    v.field("clip_grad_norm", clip_grad_norm, "clip gradients to this global L2 norm after averaging (0: off)",
            config::at_least(0.0));
    v.field("last_batch", last_batch,
            "samples that do not fill a global batch: drop them, or pad from the epoch's start",
            config::one_of({"drop", "pad"}));
    v.field("shuffle", shuffle, "shuffle every epoch (same order on every rank)");
    v.field("slicing", slicing,
            "rank r's part of a global batch: strided (r, r+N, ...) or contiguous (the r-th slice)",
            config::one_of({"strided", "contiguous"}));
    v.field("seed", seed, "seed of the data order and of dropout", config::at_least(0));
    v.field("log_every", log_every, "write metrics every this many steps", config::at_least(1));
    v.field("allow_unused_parameters", allow_unused_parameters,
            "parameters without a gradient in a step count as zero instead of an error");
    v.field("loss", loss,
            "auto (cross_entropy for an integer target, mse for a floating-point one), cross_entropy, mse, or "
            "relative_mse (mean of ((prediction - target) / target)^2: minimises the resolution), or nll (a "
            "density model's -mean log q; auto for nsf-gw)",
            config::one_of({"auto", "cross_entropy", "mse", "relative_mse", "nll"}));
    v.field("on_nonfinite", on_nonfinite,
            "a NaN or Inf training loss or validation metric: error (stop at that step, exit 1, keep the last "
            "checkpoint, which holds finite parameters) or warn (log it once and go on)",
            config::one_of({"error", "warn"}));
    v.field("pack", pack,
            "packed members: train this many members of one model (mlp, facile) as one model in one process, "
            "member k being the run with model.seed + k and train.seed + k (its weights and data order); metrics "
            "per member; at the end run.dir/member-<k>/ holds member k as an ordinary run for hpcml eval and infer "
            "(docs/training.md#packed-members); 1: off",
            config::in_range(1, limits::kMaxMembers));
    v.field("precision", precision,
            "fp32, or mixed precision as torch.autocast: bf16 or fp16 for matmuls and convolutions in the forward "
            "pass of training, validation, eval and infer (losses and outputs in float32); fp16 adds a dynamic "
            "loss scale (skipped steps on Inf/NaN gradients) kept in checkpoints; fp16 on the CPU needs LibTorch "
            "2.x (docs/gpu.md#mixed-precision)",
            config::one_of({"fp32", "bf16", "fp16"}));
  }
};

/// The gradient reducer's keys. Their defaults are ReducerOptions' (in MiB); `hpcml train`
/// and `bench ddp` (whose flags map onto these keys) convert them with options().
struct ReducerSection {
  double first_bucket_mb = config::bytes_to_mib(collectives::ReducerOptions{}.first_bucket_bytes);
  double bucket_cap_mb = config::bytes_to_mib(collectives::ReducerOptions{}.bucket_cap_bytes);
  std::string overlap = "auto";
  std::string transport = "auto";
  std::string compression = "none";
  std::string buffers = "broadcast";
  template <typename V>
  void describe(V& v) {
    v.field("first_bucket_mb", first_bucket_mb, "size of the first gradient bucket (MiB)",
            config::in_range(0.001, 4096.0));
    v.field("bucket_cap_mb", bucket_cap_mb, "size of later gradient buckets (MiB)", config::in_range(0.001, 4096.0));
    v.field("overlap", overlap,
            "launch bucket allreduces during backward: auto (only when the rank has a spare core), always, never",
            config::one_of({"auto", "always", "never"}));
    v.field("transport", transport,
            "how gradients reach the other ranks: auto (shm when every rank is on this node, else mpi), shm "
            "(one shared-memory segment; idle ranks sum for all), mpi (bucketed MPI allreduce)",
            config::one_of({"auto", "shm", "mpi"}));
    v.field("compression", compression, "gradients on the wire: none (float32), bf16 or fp16 (sums in float32)",
            config::one_of({"none", "bf16", "fp16"}));
    v.field("buffers", buffers, "buffers (batch-norm statistics): broadcast from rank 0 each step, or per_rank",
            config::one_of({"broadcast", "per_rank"}));
  }

  /// The reducer's options from these keys (checked): MiB to bytes, names to enums.
  /// The others (allow_unused, direct_min_bytes) keep ReducerOptions' defaults.
  collectives::ReducerOptions options() const {
    collectives::ReducerOptions o;
    o.first_bucket_bytes = config::mib_to_bytes(first_bucket_mb);
    o.bucket_cap_bytes = config::mib_to_bytes(bucket_cap_mb);
    o.overlap = collectives::parse_overlap(overlap, "config error: key 'reducer.overlap'");
    o.transport = collectives::parse_transport(transport, "config error: key 'reducer.transport'");
    o.compression = collectives::parse_compression(compression, "config error: key 'reducer.compression'");
    o.buffers = buffers == "per_rank" ? collectives::BufferPolicy::kPerRank : collectives::BufferPolicy::kBroadcast;
    return o;
  }
};

struct CheckpointSection {
  int every_steps = 0;
  int keep = 3;
  template <typename V>
  void describe(V& v) {
    v.field("every_steps", every_steps, "write a checkpoint every this many steps (0: at the end of each epoch)",
            config::at_least(0));
    v.field("keep", keep, "keep the newest K checkpoints", config::at_least(1));
  }
};

struct RunSection {
  std::string dir;
  std::string resume = "no";
  bool overwrite = false;
  bool trace = false;
  std::string progress = "auto";
  template <typename V>
  void describe(V& v) {
    v.field("dir", dir,
            "run directory: config.yaml, metrics.jsonl, summary.json, trace.json, checkpoints/; empty: "
            "runs/<Slurm job id> inside a Slurm job (a requeued job finds its checkpoints), else runs/train");
    v.field("resume", resume, "auto: continue from the newest valid checkpoint in dir, if any; no: start fresh",
            config::one_of({"no", "auto"}));
    v.field("overwrite", overwrite,
            "a fresh run (resume: no) into a dir that holds another run: false refuses; true moves that run aside "
            "to <dir>.replaced-<UTC time> once start-up has succeeded (nothing is deleted)");
    v.field("trace", trace, "write trace.json (Chrome trace of every rank's phases and bucket allreduces)");
    v.field("progress", progress, "progress display: auto (a bar on a terminal, log lines otherwise), bar, lines",
            config::one_of({"auto", "bar", "lines"}));
  }
};

/// `hpcml infer -c`: a batch-inference campaign (launch/infer/campaign.hpp, docs/campaigns.md).
/// infer.service: the server ranks of a campaign run through the in-job inference
/// service (infer.via: service; docs/campaigns.md). Defaults as `hpcml serve`'s.
struct InferServiceSection {
  std::string roles = serve::RoleOptions{}.mode;
  int servers = serve::RoleOptions{}.servers;
  double server_ratio = serve::RoleOptions{}.server_ratio;
  int server_threads = serve::ServerOptions{}.intra_op_threads;
  std::string server_compute = serve::ServerOptions{}.compute;
  int instances = 1;
  int max_queue_delay_us = 0;
  double server_timeout_s = serve::ClientOptions{}.server_timeout_s;
  double retry_s = 10;
  double client_timeout_s = serve::ServerOptions{}.client_timeout_s;
  bool fallback = false;
  template <typename V>
  void describe(V& v) {
    v.field("roles", roles, "auto: a Slurm het job's last group or an mpirun MPMD line's last app context serves, "
            "else the count; count: always the last infer.service.servers ranks", config::one_of({"auto", "count"}));
    v.field("servers", servers, "server ranks (the last ranks) when the launch does not decide", config::at_least(1));
    v.field("server_ratio", server_ratio, "> 0: round(ratio * ranks) servers instead of infer.service.servers",
            config::in_range(0.0, 1.0));
    v.field("server_threads", server_threads, "LibTorch intra-op threads per server rank", config::in_range(1, 1024));
    v.field("server_compute", server_compute, "where a server runs batches: threads, inline or auto (as "
            "serve.server_compute)", config::one_of({"auto", "threads", "inline"}));
    v.field("instances", instances, "model copies per server, each on its own thread", config::in_range(1, 64));
    v.field("max_queue_delay_us", max_queue_delay_us, "how long a server's oldest queued request may wait for a "
            "fuller batch (dynamic batching of every worker's batches)", config::in_range(0, 10000000));
    v.field("server_timeout_s", server_timeout_s, "a server silent this long while holding a worker's requests is "
            "suspect: its requests are re-sent to another live server", config::in_range(0.01, 86400.0));
    v.field("retry_s", retry_s, "a suspect server gets requests again after this long (or as soon as it is heard)",
            config::in_range(0.0, 86400.0));
    v.field("client_timeout_s", client_timeout_s, "a server drops the queued work of a worker silent this long",
            config::in_range(0.01, 86400.0));
    v.field("fallback", fallback, "when no server is live, workers run the model themselves (else the unit fails "
            "with one line naming the server ranks)");
  }
};

struct InferSection {
  std::vector<std::string> inputs;
  std::string output_dir;
  std::string checkpoint;
  int batch_size = 256;
  int64_t unit_rows = 4096;
  std::string task = "auto";
  std::vector<std::string> copy_fields = {"auto"};
  double lease_s = 60;
  int64_t samples = 5000;
  int64_t seed = 1;
  std::string via = "local";
  bool members = false;
  InferServiceSection service;
  template <typename V>
  void describe(V& v) {
    v.field("inputs", inputs, "HDF5 files or glob patterns to run the model over (a campaign; empty: the GW "
            "posterior mode of -i/-o)");
    v.field("output_dir", output_dir, "where the campaign writes one predictions file per input, its journal, "
            "campaign.json and summary.json; empty: <run.dir>/infer");
    v.field("checkpoint", checkpoint, "checkpoint file; empty: the newest in run.dir at the campaign's first run, "
            "then pinned (recorded in campaign.json)");
    v.field("batch_size", batch_size, "rows per forward pass", config::in_range(1, 1 << 20));
    v.field("unit_rows", unit_rows, "rows per unit of work, rounded up to whole HDF5 chunks of the first input",
            config::in_range(int64_t{1}, int64_t{1} << 40));
    v.field("task", task, "what the output is: auto (the model's task; classification for a TorchScript model "
            "with an integer target), classification (scores: softmax probabilities), regression (prediction); a "
            "density model (nsf-gw) writes importance-weighted posterior samples whatever this says",
            config::one_of({"auto", "classification", "regression"}));
    v.field("copy_fields", copy_fields, "input fields copied to the output next to each prediction; [auto]: "
            "data.target when the input has it; []: none");
    v.field("lease_s", lease_s, "several jobs on one campaign: a unit's claim whose heartbeat (renewed every second) "
            "has not changed for this long is taken over by another job (at once when its job ran on this host and its "
            "process is gone)", config::in_range(10.0, 86400.0));
    v.field("samples", samples, "density models (nsf-gw): proposal draws per event, importance-weighted",
            config::in_range(int64_t{2}, int64_t{1} << 24));
    v.field("seed", seed, "density models: event (file k of the input list, row i) draws from a generator seeded "
            "by (seed, k, i), so the draws depend on neither ranks nor units", config::in_range(int64_t{0},
            int64_t{1} << 62));
    v.field("via", via, "local: each worker rank runs the model; service: the last ranks serve the model and the "
            "workers send them every batch (zoo classifiers and regressors; docs/campaigns.md)",
            config::one_of({"local", "service"}));
    v.field("members", members, "an ensemble's campaign (run.dir an `hpcml ensemble` directory): also write every "
            "member's own output (<value>_members: rows x members x ...) beside the ensemble's mean and variance");
    v.section("service", service, "infer.via: service: the server ranks");
  }
};

struct TrainConfig {
  RuntimeOptions runtime;
  LogSection log;
  ModelSection model;
  DataSection data;
  OptimizerSection optimizer;
  ScheduleSection schedule;
  TrainSection train;
  ReducerSection reducer;
  CheckpointSection checkpoint;
  RunSection run;
  InferSection infer;
  template <typename V>
  void describe(V& v) {
    v.section("runtime", runtime, "ranks, threads and deadlines");
    v.section("log", log, "logging");
    v.section("model", model, "the model");
    v.section("data", data, "the data");
    v.section("optimizer", optimizer, "the optimizer");
    v.section("schedule", schedule, "the learning-rate schedule");
    v.section("train", train, "the training loop");
    v.section("reducer", reducer, "gradient averaging across ranks");
    v.section("checkpoint", checkpoint, "checkpoints");
    v.section("run", run, "the run directory");
    v.section("infer", infer, "hpcml infer: a batch-inference campaign over many files");
  }

  /// Sizes that multiply: what the synthetic data set and an MLP allocate must fit in
  /// half of this node's memory (limits::check_fits_in_memory). Every key is within
  /// its own range by then. Throws ConfigError naming the keys.
  void check() const {
    if (data.name == "synthetic") {
      const double rows = static_cast<double>(data.samples) + data.validation_samples;
      limits::check_fits_in_memory(rows * (4.0 * data.features + 8.0), "the synthetic data set",
                                   "data.samples + data.validation_samples times data.features");
      if (model.name == "mlp") {
        // Parameters with their gradients and two optimizer states, and a batch's activations.
        double parameters = 0, activations = 0;
        int in = data.features;
        for (int width : model.hidden) {
          parameters += (static_cast<double>(in) + 1.0) * width;
          activations += static_cast<double>(width) * train.batch_size;
          in = width;
        }
        parameters += (static_cast<double>(in) + 1.0) * data.classes;
        limits::check_fits_in_memory(train.pack * (16.0 * parameters + 8.0 * activations),
                                     "the MLP's parameters and state",
                                     "model.hidden, data.features, data.classes and train.pack");
      }
    }
  }
};

}  // namespace hpcml::launch
