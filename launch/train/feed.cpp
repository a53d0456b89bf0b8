#include "launch/train/feed.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "collectives/device.hpp"
#include "core/error.hpp"
#include "io/h5_dataset.hpp"
#include "io/loader.hpp"
#include "io/sampler.hpp"
#include "io/synthetic.hpp"

namespace hpcml::launch {

Example Example::narrow(int64_t begin, int64_t size) const {
  Example out;
  for (const auto& [name, t] : inputs) out.inputs.emplace(name, t.narrow(0, begin, size));
  out.target = target.narrow(0, begin, size);
  return out;
}

Example Example::to_device(const c10::Device& device) const {
  auto there = [&](const at::Tensor& t) { return !t.defined() || t.device() == device; };
  bool all_there = there(target);  // inference batches have no target
  for (const auto& [name, t] : inputs) all_there = all_there && there(t);
  if (all_there) return *this;
  Example out;
  for (const auto& [name, t] : inputs) out.inputs.emplace(name, collectives::to_device(t, device));
  out.target = collectives::to_device(target, device);
  return out;
}

DeviceBatches::DeviceBatches(Feed& feed, const c10::Device& device, int64_t total_steps)
    : feed_(feed), device_(device), total_steps_(total_steps), steps_per_epoch_(feed.steps_per_epoch()),
      copy_(device) {}

namespace {

// The inputs in name order, then the target.
std::vector<at::Tensor> tensors_of(const Example& e) {
  std::vector<at::Tensor> out;
  for (const auto& [name, t] : e.inputs) out.push_back(t);
  out.push_back(e.target);
  return out;
}

}  // namespace

Example DeviceBatches::start_copy(int64_t step) {
  const Example host = feed_.batch(step / steps_per_epoch_, step % steps_per_epoch_);
  const auto copied = copy_.start(tensors_of(host));
  Example out;
  size_t i = 0;
  for (const auto& [name, t] : host.inputs) out.inputs.emplace(name, copied[i++]);
  out.target = copied[i];
  return out;
}

Example DeviceBatches::batch(int64_t step) {
  if (!device_.is_cuda()) return feed_.batch(step / steps_per_epoch_, step % steps_per_epoch_).to_device(device_);
  Example current = next_step_ == step ? std::move(next_) : start_copy(step);
  copy_.wait(tensors_of(current));
  next_step_ = -1;
  if (step + 1 < total_steps_) {
    next_ = start_copy(step + 1);
    next_step_ = step + 1;
  }
  return current;
}

bool density_task(const TrainConfig& c) {
  if (c.model.name == "mlp" || c.model.name == "torchscript") return false;
  return models::zoo_entry(c.model.name).task == "density";
}

TrainConfig with_input_fields(TrainConfig c, const std::vector<std::string>& input_names) {
  const bool zoo = c.model.name != "mlp" && c.model.name != "torchscript";
  std::string names;
  for (const auto& n : input_names) names += (names.empty() ? "" : ", ") + n;
  for (const auto& [key, field] : c.data.inputs) {
    HPCML_CHECK_AS(ConfigError, std::find(input_names.begin(), input_names.end(), key) != input_names.end(),
                   "config error: key 'data.inputs.", key, "': model ", c.model.name, " has no input '", key,
                   "'; expected one of [", names, "]");
  }
  if (c.data.name != "hdf5") return c;
  HPCML_CHECK_AS(ConfigError, !c.data.files.empty(), "config error: key 'data.files': expected files or glob "
                 "patterns when data.name is hdf5, found none");
  std::map<std::string, std::string> resolved;
  for (const auto& name : input_names) {
    std::string field;
    if (auto it = c.data.inputs.find(name); it != c.data.inputs.end()) {
      field = it->second;
    } else if (input_names.size() == 1 && !c.data.input.empty()) {
      field = c.data.input;
    } else if (zoo) {
      for (const auto& spec : models::zoo_entry(c.model.name).inputs) {
        if (spec.name == name) field = spec.field;
      }
    }
    HPCML_CHECK_AS(ConfigError, !field.empty(), "config error: key 'data.inputs.", name,
                   "': expected the dataset field of input '", name, "' of model ", c.model.name, ", found none",
                   input_names.size() == 1 ? " (or set data.input)" : "");
    resolved[name] = field;
  }
  c.data.inputs = resolved;
  if (input_names.size() == 1) c.data.input = resolved.begin()->second;
  return c;
}

namespace {

// "c/mask" is made by padded collation of collection "c"; not a dataset in the file.
std::string mask_collection(const std::string& field) {
  const std::string suffix = "/mask";
  if (field.size() <= suffix.size() || field.compare(field.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return {};
  }
  return field.substr(0, field.size() - suffix.size());
}

std::string shape_text(const std::vector<int64_t>& dims) {
  std::string out = "[";
  for (size_t i = 0; i < dims.size(); ++i) out += (i ? ", " : "") + (dims[i] < 0 ? "any" : std::to_string(dims[i]));
  return out + "]";
}

// The per-sample shape a batch of `field` will have: a fixed field's dims after the
// row axis; a ragged collection's items padded to a length that varies (-1) before
// the item dims; its mask (-1).
std::vector<int64_t> sample_shape(const io::layout::FileInfo& file, const std::string& field) {
  const std::string collection = mask_collection(field);
  if (!collection.empty()) return {-1};
  const auto* info = file.field(field);
  if (info == nullptr) return {};
  std::vector<int64_t> dims(info->shape.dims.begin() + 1, info->shape.dims.end());
  if (!info->collection.empty()) dims.insert(dims.begin(), -1);
  return dims;
}

bool shape_matches(const std::vector<int64_t>& want, const std::vector<int64_t>& found) {
  if (want.size() != found.size()) return false;
  for (size_t i = 0; i < want.size(); ++i) {
    if (want[i] >= 0 && found[i] >= 0 && want[i] != found[i]) return false;
  }
  return true;
}

void check_input_shapes(const TrainConfig& c, const std::string& model, const std::vector<models::InputSpec>& specs,
                        const io::layout::FileInfo& file) {
  for (const auto& spec : specs) {
    const auto it = c.data.inputs.find(spec.name);
    if (it == c.data.inputs.end() || file.field(it->second) == nullptr) continue;  // checked where it is read
    const std::vector<int64_t> found = sample_shape(file, it->second);
    if (shape_matches(spec.shape, found)) continue;
    if (it->second != spec.field) {
      const std::string key = specs.size() == 1 && !c.data.input.empty() ? "data.input" : "data.inputs." + spec.name;
      HPCML_THROW(ConfigError, "config error: key '", key, "': model ", model, " reads input '", spec.name,
                  "' with per-event shape ", shape_text(spec.shape), ", but dataset '", it->second, "' of ", file.path,
                  " has per-event shape ", shape_text(found));
    }
    HPCML_THROW(IoError, "data error: ", file.path, ": dataset '", it->second, "' (model ", model, "'s input '",
                spec.name, "'): expected per-event shape ", shape_text(spec.shape), ", found ", shape_text(found));
  }
}

io::SamplerOptions sampler_options(const TrainConfig& c, int64_t size, int rank, int world) {
  io::SamplerOptions o;
  o.dataset_size = size;
  o.batch_size = c.train.batch_size;
  o.rank = rank;
  o.world_size = world;
  o.shuffle = c.train.shuffle;
  o.seed = static_cast<uint64_t>(c.train.seed);
  o.last_batch = c.train.last_batch == "pad" ? io::LastBatch::kPad : io::LastBatch::kDrop;
  o.slicing = c.train.slicing == "contiguous" ? io::RankSlicing::kContiguous : io::RankSlicing::kStrided;
  return o;
}

class SyntheticFeed final : public Feed {
 public:
  SyntheticFeed(const TrainConfig& c, int rank, int world)
      : train_(io::synthetic_classification(c.data.samples, c.data.features, c.data.classes,
                                            static_cast<uint64_t>(c.data.seed), c.data.seed + 100u)),
        validation_(io::synthetic_classification(c.data.validation_samples, c.data.features, c.data.classes,
                                                 c.data.seed + 1u, c.data.seed + 100u)),
        sampler_(sampler_options(c, train_.size(), rank, world)),
        rank_(rank),
        world_(world) {}
  int64_t steps_per_epoch() const override { return sampler_.steps_per_epoch(); }
  Example batch(int64_t epoch, int64_t step) override {
    sampler_.set_epoch(epoch);
    auto [x, y] = train_.gather(sampler_.batch(step));
    return {{{"x", x}}, y};
  }
  void for_each_validation(const std::function<void(const Example&)>& fn) override {
    if (validation_.size() < world_) return;
    for (int64_t i = rank_; i < validation_.size(); i += world_ * 256) {
      std::vector<int64_t> idx;
      for (int64_t k = i; k < std::min(validation_.size(), i + world_ * 256); k += world_) idx.push_back(k);
      auto [x, y] = validation_.gather(idx);
      fn({{{"x", x}}, y});
    }
  }
  int64_t validation_size() const override { return validation_.size() < world_ ? 0 : validation_.size(); }
  std::vector<int64_t> input_shape() const override { return train_.inputs.sizes().slice(1).vec(); }
  bool regression() const override { return false; }

 private:
  io::TensorDataset train_, validation_;
  io::DistributedSampler sampler_;
  int rank_, world_;
};

io::H5DatasetOptions dataset_options(const TrainConfig& c, const std::vector<std::string>& files) {
  io::H5DatasetOptions o;
  o.files = files;
  for (const auto& [name, field] : c.data.inputs) {
    if (mask_collection(field).empty()) o.expect.fields.push_back({field, io::layout::ElementKind::kFloat, -1});
  }
  // A density model's target may be one of its inputs (nsf-gw: the parameters), of any rank.
  bool listed = false;
  for (const auto& f : o.expect.fields) listed = listed || f.name == c.data.target;
  if (!listed) o.expect.fields.push_back({c.data.target, io::layout::ElementKind::kAny, density_task(c) ? -1 : 0});
  return o;
}

class H5Feed final : public Feed {
 public:
  H5Feed(const TrainConfig& c, int rank, int world)
      : c_(c),
        train_(dataset_options(c, c.data.files)),
        sampler_(chunked(sampler_options(c, train_.size(), rank, world), c)),
        loader_(train_, sampler_, collate_options(c), {c.data.prefetch, 600.0, -1}),
        rank_(rank),
        world_(world) {
    if (!c.data.validation_files.empty())
      validation_ = std::make_unique<io::H5Dataset>(dataset_options(c, c.data.validation_files));
    const auto& first = train_.files().front();
    regression_ = first.field(c.data.target)->shape.kind == io::h5::Kind::kFloat;
    for (const auto& [name, field] : c.data.inputs) {
      const std::string collection = mask_collection(field);
      HPCML_CHECK_AS(ConfigError, collection.empty() || first.collection(collection) != nullptr,
                     "config error: key 'data.inputs.", name, "': '", field, "' is the padding mask of collection '",
                     collection, "', which ", first.path, " does not have");
      if (name == "x" && collection.empty()) {
        const auto* input = first.field(field);
        input_shape_.assign(input->shape.dims.begin() + 1, input->shape.dims.end());
      }
    }
  }
  ~H5Feed() override { loader_.stop(); }

  int64_t steps_per_epoch() const override { return sampler_.steps_per_epoch(); }
  Example batch(int64_t epoch, int64_t step) override {
    if (epoch != epoch_ || step != next_step_) {
      loader_.stop();
      sampler_.set_epoch(epoch);
      loader_.start(step);
      epoch_ = epoch;
    }
    next_step_ = step + 1;
    return example(loader_.next());
  }
  void for_each_validation(const std::function<void(const Example&)>& fn) override {
    if (!validation_) return;
    const int64_t n = validation_->size();
    const int64_t begin = n * rank_ / world_, end = n * (rank_ + 1) / world_;
    // Batches of the training batch size: memory as in training (a ParticleNet edge
    // tensor is batch x particles x k x channels).
    const int64_t batch = c_.train.batch_size;
    for (int64_t i = begin; i < end; i += batch) {
      std::vector<int64_t> rows;
      for (int64_t r = i; r < std::min(end, i + batch); ++r) rows.push_back(r);
      fn(example(io::collate(validation_->read(rows), collate_options(c_))));
    }
  }
  int64_t validation_size() const override { return validation_ ? validation_->size() : 0; }
  std::vector<int64_t> input_shape() const override { return input_shape_; }
  bool regression() const override { return regression_; }
  void check_inputs(const std::string& model, const std::vector<models::InputSpec>& specs) const override {
    check_input_shapes(c_, model, specs, train_.files().front());
    if (validation_) check_input_shapes(c_, model, specs, validation_->files().front());
  }

 private:
  static io::CollateOptions collate_options(const TrainConfig& c) {
    io::CollateOptions o;
    o.pad_to = c.data.pad_to;
    return o;
  }
  Example example(const io::Batch& b) const {
    Example e;
    for (const auto& [name, field] : c_.data.inputs) e.inputs.emplace(name, b.at(field));
    e.target = b.at(c_.data.target);
    return e;
  }
  static io::SamplerOptions chunked(io::SamplerOptions o, const TrainConfig& c) {
    o.chunk_rows = c.data.chunk_rows;
    o.window = c.data.window;
    return o;
  }

  TrainConfig c_;
  io::H5Dataset train_;
  io::DistributedSampler sampler_;
  io::Loader loader_;
  std::unique_ptr<io::H5Dataset> validation_;
  int rank_, world_;
  int64_t epoch_ = -1, next_step_ = -1;
  bool regression_ = false;
  std::vector<int64_t> input_shape_;
};

}  // namespace

struct RowReader::Impl {
  TrainConfig c;
  std::vector<std::string> extra;
  std::unique_ptr<io::H5Dataset> dataset;
};

RowReader::RowReader(const TrainConfig& c, const std::string& file, std::vector<std::string> extra)
    : impl_(std::make_unique<Impl>()) {
  impl_->c = c;
  impl_->extra = std::move(extra);
  io::H5DatasetOptions o;
  o.files = {file};
  for (const auto& [name, field] : c.data.inputs) {
    if (mask_collection(field).empty()) o.expect.fields.push_back({field, io::layout::ElementKind::kFloat, -1});
  }
  for (const auto& field : impl_->extra) o.expect.fields.push_back({field, io::layout::ElementKind::kAny, -1});
  impl_->dataset = std::make_unique<io::H5Dataset>(o);
}

RowReader::~RowReader() = default;

int64_t RowReader::rows() const { return impl_->dataset->size(); }

bool RowReader::has_field(const std::string& name) const {
  return impl_->dataset->files().front().field(name) != nullptr;
}

std::vector<int64_t> RowReader::field_dims(const std::string& name) const {
  const auto& info = impl_->dataset->files().front();
  const auto* f = info.field(name);
  HPCML_CHECK_AS(IoError, f != nullptr, "file '", info.path, "': dataset '", name, "' not found");
  return f->shape.dims;
}

int64_t RowReader::chunk_rows() const {
  const auto& info = impl_->dataset->files().front();
  for (const auto& [name, field] : impl_->c.data.inputs) {
    if (!mask_collection(field).empty()) continue;  // a padding mask is made, not read
    const auto* f = info.field(field);
    if (f == nullptr) continue;
    if (!f->collection.empty()) {
      const auto* col = info.collection(f->collection);
      return col != nullptr && !col->offsets.chunk.empty() ? col->offsets.chunk.front() : 0;
    }
    return f->shape.chunk.empty() ? 0 : f->shape.chunk.front();
  }
  return 0;
}

Example RowReader::read(int64_t first, int64_t count, std::map<std::string, at::Tensor>* extra_out) const {
  std::vector<int64_t> rows(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) rows[static_cast<size_t>(i)] = first + i;
  io::CollateOptions o;
  o.pad_to = impl_->c.data.pad_to;
  const io::Batch b = io::collate(impl_->dataset->read(rows), o);
  Example e;
  for (const auto& [name, field] : impl_->c.data.inputs) e.inputs.emplace(name, b.at(field));
  if (extra_out != nullptr)
    for (const auto& field : impl_->extra) (*extra_out)[field] = b.at(field);
  return e;
}

std::unique_ptr<Feed> make_feed(const TrainConfig& c, const Context& ctx) {
  const int rank = ctx.world->rank(), world = ctx.world->size();
  if (c.data.name == "synthetic") return std::make_unique<SyntheticFeed>(c, rank, world);
  HPCML_CHECK_AS(ConfigError, !c.data.files.empty(), "config error: key 'data.files': expected files or glob "
                 "patterns when data.name is hdf5, found none");
  HPCML_CHECK_AS(ConfigError, !c.data.inputs.empty(), "config error: key 'data.inputs': expected the model's input "
                 "fields (data.input for a one-input model) when data.name is hdf5, found none");
  HPCML_CHECK_AS(ConfigError, !c.data.target.empty(), "config error: key 'data.target': expected a dataset field "
                 "name when data.name is hdf5, found ''");
  return std::make_unique<H5Feed>(c, rank, world);
}

at::Tensor task_loss(const std::string& loss, bool regression, const at::Tensor& output, const at::Tensor& target) {
  const std::string name = loss == "auto" ? (regression ? "mse" : "cross_entropy") : loss;
  if (name == "nll") return -output.mean();
  if (name == "cross_entropy") {
    HPCML_CHECK_AS(ConfigError, !regression, "config error: key 'train.loss': cross_entropy needs an integer "
                   "(class) target, found a floating-point one");
    return at::cross_entropy_loss(output, target);
  }
  HPCML_CHECK_AS(ConfigError, regression, "config error: key 'train.loss': ", name,
                 " needs a floating-point target, found an integer one");
  HPCML_CHECK_AS(ConfigError, output.numel() == target.numel(), "regression: the model gives ", output.numel() / std::max<int64_t>(1, target.size(0)),
                 " outputs per sample, expected 1");
  const at::Tensor prediction = output.reshape(target.sizes());
  if (name == "relative_mse") return ((prediction - target) / target).pow(2).mean();
  return (prediction - target).pow(2).mean();
}

double metric_sum(bool regression, const at::Tensor& output, const at::Tensor& target) {
  if (!regression) return static_cast<double>(output.argmax(1).eq(target).sum().item<int64_t>());
  const at::Tensor relative = (output.detach().reshape(target.sizes()) - target) / target;
  return relative.pow(2).sum().item<double>();
}

const char* metric_name(bool regression) { return regression ? "resolution" : "accuracy"; }

double metric_value(bool regression, double sum, double samples) {
  if (samples <= 0) return 0.0;
  return regression ? std::sqrt(sum / samples) : sum / samples;
}

}  // namespace hpcml::launch

namespace hpcml::launch {

Scores::Scores(bool regression, bool binary, bool density)
    : regression_(regression && !density), binary_(binary && !regression && !density), density_(density), sums_(at::zeros({3 + (binary_ ? 2 * kBins : 0)}, at::kDouble)) {}

void Scores::add(const at::Tensor& output, const at::Tensor& target, double mean_loss) {
  const double n = static_cast<double>(target.size(0));
  auto s = sums_.accessor<double, 1>();
  s[0] += mean_loss * n;
  s[1] += density_ ? output.detach().to(at::kDouble).sum().item<double>() : metric_sum(regression_, output, target);
  s[2] += n;
  if (!binary_ || n == 0) return;
  HPCML_CHECK_AS(ConfigError, output.dim() == 2 && output.size(1) == 2, "validation: a binary classifier gives "
                 "(batch, 2) logits, found ", output.sizes());
  // Bins uniform in asinh(1000 s) of the logit difference s: fine near 0 (an untrained
  // model's scores), relative resolution ~ 1e-3 for |s| >> 1e-3.
  const at::Tensor logit = (output.select(1, 1) - output.select(1, 0)).to(at::kDouble);
  const at::Tensor u = at::asinh(logit * 1000.0).clamp(-kRange, kRange);
  const at::Tensor bin = ((u + kRange) * (kBins / (2 * kRange))).to(at::kLong).clamp(0, kBins - 1);
  const at::Tensor signal = target.to(at::kLong).eq(1);
  sums_.narrow(0, 3, kBins).index_add_(0, bin, signal.to(at::kDouble));
  sums_.narrow(0, 3 + kBins, kBins).index_add_(0, bin, signal.logical_not().to(at::kDouble));
}

double Scores::samples() const { return sums_[2].item<double>(); }

std::map<std::string, double> Scores::metrics() const {
  const auto s = sums_.accessor<double, 1>();
  const double samples = s[2];
  std::map<std::string, double> out{{"loss", samples > 0 ? s[0] / samples : 0.0},
                                    {density_ ? "log_prob" : metric_name(regression_),
                                     density_ ? (samples > 0 ? s[1] / samples : 0.0) : metric_value(regression_, s[1], samples)},
                                    {"samples", samples}};
  if (!binary_) return out;
  // From the highest score down: AUC = P(score_signal > score_background) (ties count
  // half); the working point where the signal efficiency reaches 30% is interpolated
  // linearly within its bin.
  double total_signal = 0, total_background = 0;
  for (int64_t b = 0; b < kBins; ++b) {
    total_signal += s[3 + b];
    total_background += s[3 + kBins + b];
  }
  if (total_signal <= 0 || total_background <= 0) return out;
  double signal_above = 0, background_above = 0, auc = 0, background_at_30 = -1;
  for (int64_t b = kBins - 1; b >= 0; --b) {
    const double sig = s[3 + b], bkg = s[3 + kBins + b];
    auc += sig * ((total_background - background_above - bkg) + 0.5 * bkg);
    const double target_signal = 0.3 * total_signal;
    if (background_at_30 < 0 && signal_above + sig >= target_signal && sig > 0) {
      background_at_30 = background_above + bkg * (target_signal - signal_above) / sig;
    }
    signal_above += sig;
    background_above += bkg;
  }
  out["auc"] = auc / (total_signal * total_background);
  // No background above the working point: the rejection is at least the background count.
  out["rejection_30"] = total_background / std::max(background_at_30, 0.5);
  return out;
}

}  // namespace hpcml::launch
