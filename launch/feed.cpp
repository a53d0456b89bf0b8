#include "launch/feed.hpp"

#include <ATen/ATen.h>

#include <cmath>

#include "core/error.hpp"
#include "io/h5_dataset.hpp"
#include "io/loader.hpp"
#include "io/sampler.hpp"
#include "io/synthetic.hpp"

namespace hpcml::launch {

namespace {

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
  std::pair<at::Tensor, at::Tensor> batch(int64_t epoch, int64_t step) override {
    sampler_.set_epoch(epoch);
    return train_.gather(sampler_.batch(step));
  }
  void for_each_validation(const std::function<void(const at::Tensor&, const at::Tensor&)>& fn) override {
    if (validation_.size() < world_) return;
    for (int64_t i = rank_; i < validation_.size(); i += world_ * 256) {
      std::vector<int64_t> idx;
      for (int64_t k = i; k < std::min(validation_.size(), i + world_ * 256); k += world_) idx.push_back(k);
      auto [x, y] = validation_.gather(idx);
      fn(x, y);
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
  o.expect.fields = {{c.data.input, io::layout::ElementKind::kFloat, -1}, {c.data.target, io::layout::ElementKind::kAny, 0}};
  return o;
}

class H5Feed final : public Feed {
 public:
  H5Feed(const TrainConfig& c, int rank, int world)
      : c_(c),
        train_(dataset_options(c, c.data.files)),
        sampler_(chunked(sampler_options(c, train_.size(), rank, world), c)),
        loader_(train_, sampler_, {}, {c.data.prefetch, 600.0, -1}),
        rank_(rank),
        world_(world) {
    if (!c.data.validation_files.empty())
      validation_ = std::make_unique<io::H5Dataset>(dataset_options(c, c.data.validation_files));
    const auto* target = train_.files().front().field(c.data.target);
    regression_ = target->shape.kind == io::h5::Kind::kFloat;
    const auto* input = train_.files().front().field(c.data.input);
    input_shape_.assign(input->shape.dims.begin() + 1, input->shape.dims.end());
    HPCML_CHECK_AS(ConfigError, input->collection.empty(), "config error: key 'data.input': '", c.data.input,
                   "' is a ragged item dataset; the Trainer feeds fixed fields today");
  }
  ~H5Feed() override { loader_.stop(); }

  int64_t steps_per_epoch() const override { return sampler_.steps_per_epoch(); }
  std::pair<at::Tensor, at::Tensor> batch(int64_t epoch, int64_t step) override {
    if (epoch != epoch_ || step != next_step_) {
      loader_.stop();
      sampler_.set_epoch(epoch);
      loader_.start(step);
      epoch_ = epoch;
    }
    next_step_ = step + 1;
    const io::Batch b = loader_.next();
    return {b.at(c_.data.input), b.at(c_.data.target)};
  }
  void for_each_validation(const std::function<void(const at::Tensor&, const at::Tensor&)>& fn) override {
    if (!validation_) return;
    const int64_t n = validation_->size();
    const int64_t begin = n * rank_ / world_, end = n * (rank_ + 1) / world_;
    for (int64_t i = begin; i < end; i += 1024) {
      std::vector<int64_t> rows;
      for (int64_t r = i; r < std::min(end, i + 1024); ++r) rows.push_back(r);
      const io::Block block = validation_->read(rows);
      fn(block.fixed.at(c_.data.input), block.fixed.at(c_.data.target));
    }
  }
  int64_t validation_size() const override { return validation_ ? validation_->size() : 0; }
  std::vector<int64_t> input_shape() const override { return input_shape_; }
  bool regression() const override { return regression_; }

 private:
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

std::unique_ptr<Feed> make_feed(const TrainConfig& c, const Context& ctx) {
  const int rank = ctx.world->rank(), world = ctx.world->size();
  if (c.data.name == "synthetic") return std::make_unique<SyntheticFeed>(c, rank, world);
  HPCML_CHECK_AS(ConfigError, !c.data.files.empty(), "config error: key 'data.files': expected files or glob "
                 "patterns when data.name is hdf5, found none");
  HPCML_CHECK_AS(ConfigError, !c.data.input.empty() && !c.data.target.empty(), "config error: keys 'data.input' "
                 "and 'data.target': expected dataset field names when data.name is hdf5, found '", c.data.input,
                 "' and '", c.data.target, "'");
  return std::make_unique<H5Feed>(c, rank, world);
}

at::Tensor task_loss(const std::string& loss, bool regression, const at::Tensor& output, const at::Tensor& target) {
  const std::string name = loss == "auto" ? (regression ? "mse" : "cross_entropy") : loss;
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
