/// @file
/// The model repository of `hpcml serve`: one folder per model, each with a
/// config.yaml (as Triton's layout), and what the server does with a model:
/// load it, check requests against it, assemble batches and split outputs.
///
/// @code
/// <repository>/facile/config.yaml
///   platform: zoo              # zoo | torchscript
///   zoo_model: facile          # default: the folder name
///   checkpoint: ""             # a `hpcml train` checkpoint (relative to the folder); empty: seeded weights
///   max_batch_size: 256        # rows (events, images, jets) per batch
///   preferred_batch_sizes: []  # run as soon as a batch of one of these sizes can be formed
///   measure_batch_sizes: auto  # none given: on a GPU, the sizes that fill it (fill.hpp)
///   max_queue_delay_us: 0      # how long the oldest request may wait for a fuller batch
///   instances: 1               # model copies, each on its own thread
///   inputs: {x: "float32 [15]"}  # per-row shape; "float32 [4] ragged mask=mask" for ragged items
/// @endcode
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "launch/serve/batcher.hpp"
#include "launch/serve/protocol.hpp"
#include "models/model.hpp"

namespace hpcml::launch::serve {

/// One input a model reads, as requests must carry it.
struct InputSpec {
  std::string name;
  DType dtype = DType::kFloat32;
  /// Shape of one row after the batch dimension (fixed), or of one item (ragged);
  /// -1 accepts any size.
  std::vector<std::int64_t> shape;
  bool ragged = false;
  /// For a ragged input: the model input the server fills with the validity mask
  /// (batch, longest row) when padding to the batch's own longest row; "" for none.
  std::string mask;
};

/// A model's config.yaml.
struct ModelConfig {
  std::string platform = "zoo";
  std::string zoo_model;
  std::string checkpoint;
  std::string file = "model.pt";
  std::int64_t seed = 1;
  int max_batch_size = kDefaultMaxBatchSize;
  bool dynamic_batching = true;
  std::vector<int> preferred_batch_sizes;
  std::string measure_batch_sizes = "auto";
  int max_queue_delay_us = 0;
  int instances = 1;
  std::map<std::string, std::string> inputs;

  template <typename V>
  void describe(V& v) {
    v.field("platform", platform, "zoo (a model of `hpcml models`) or torchscript", config::one_of({"zoo", "torchscript"}));
    v.field("zoo_model", zoo_model, "zoo model name (default: the folder name)");
    v.field("checkpoint", checkpoint, "zoo: an `hpcml train` checkpoint, relative to the folder; empty: seeded weights");
    v.field("seed", seed, "zoo: weight seed when there is no checkpoint");
    v.field("file", file, "torchscript: the TorchScript file, relative to the folder");
    v.field("max_batch_size", max_batch_size, "rows per batch at most (also the largest request)",
            config::in_range(1, 1 << 20));
    v.field("dynamic_batching", dynamic_batching, "false: every request is its own batch (batch-1 serving)");
    v.field("preferred_batch_sizes", preferred_batch_sizes,
            "run a batch at once when its rows reach one of these sizes (the largest reachable)");
    v.field("measure_batch_sizes", measure_batch_sizes,
            "with no preferred_batch_sizes: yes (or auto, on a GPU server) times the model at start-up at 1, 2, 4, "
            "... max_batch_size rows and prefers the sizes whose throughput is within 10% of the best (fill.hpp)",
            config::one_of({"auto", "yes", "no"}));
    v.field("max_queue_delay_us", max_queue_delay_us, "how long the oldest queued request may wait for a fuller batch",
            config::in_range(0, 10000000));
    v.field("instances", instances, "model copies, each on its own thread", config::in_range(1, 64));
    v.field("inputs", inputs,
            "input name -> \"dtype [per-row shape]\" (-1: any size), or \"dtype [per-item shape] ragged mask=NAME\"; "
            "default for zoo models: from the zoo");
  }

  /// How the server groups this model's requests (the one conversion of the batching keys).
  BatchPolicy batch_policy() const {
    BatchPolicy policy;
    policy.max_batch_size = max_batch_size;
    policy.dynamic = dynamic_batching;
    policy.preferred = preferred_batch_sizes;
    policy.max_delay = std::chrono::microseconds(max_queue_delay_us);
    return policy;
  }
};

/// A model of the repository, with its config resolved.
struct ModelEntry {
  std::string name;  ///< the folder name: what requests ask for
  std::string dir;
  ModelConfig config;
  std::vector<InputSpec> inputs;  ///< what requests carry (masks excluded)
};

/// Reads `<dir>/config.yaml`. Throws ConfigError naming the file and key.
ModelEntry read_model_entry(const std::string& dir);
/// Every sub-folder with a config.yaml, by name. Throws ConfigError when there is none.
std::vector<ModelEntry> read_repository(const std::string& dir);
/// The entry named `name` of `repository` (ConfigError listing the names otherwise).
const ModelEntry& find_entry(const std::vector<ModelEntry>& repository, const std::string& name);

/// Loads one instance of the model (evaluation mode). Throws ConfigError / IoError
/// naming the model and file.
std::unique_ptr<models::Model> load_model(const ModelEntry& entry);

/// Checks a request's inputs against the model: names, dtypes, per-row shapes,
/// rows <= max_batch_size. Throws RequestError naming the model and input, with
/// expected vs found.
void validate_inputs(const ModelEntry& entry, const NamedInputs& inputs, std::int64_t rows);

/// The model's inputs for a batch of requests' inputs, in order: fixed inputs
/// concatenated on the batch dimension; ragged ones padded to the batch's own
/// longest row, with their masks.
models::Inputs assemble_batch(const ModelEntry& entry, const std::vector<const NamedInputs*>& parts);

/// Runs the model on one request's inputs (no grad): what a client's local
/// fallback and the verification compute.
at::Tensor run_local(models::Model& model, const ModelEntry& entry, const NamedInputs& inputs);

}  // namespace hpcml::launch::serve
