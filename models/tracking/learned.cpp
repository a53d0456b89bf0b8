// The learned stages of the tracking pipeline (models/tracking/learned.hpp, docs/tracking.md).
// Python twin: models/twins/tracking.py (same module and parameter names).
#include "models/tracking/learned.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/error.hpp"
#include "io/h5_tensors.hpp"
#include "io/hdf5.hpp"
#include "io/table.hpp"

namespace hpcml::models::tracking {

namespace {

void check_float_matrix(const char* op, const char* name, const at::Tensor& t, int64_t columns) {
  HPCML_CHECK_AS(ConfigError, t.defined() && t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 2,
                 op, ": tensor '", name, "' must be a 2-D float32 CPU tensor; found ",
                 t.defined() ? c10::toString(t.scalar_type()) : "undefined", " of shape ",
                 t.defined() ? t.sizes() : at::IntArrayRef{});
  HPCML_CHECK_AS(ConfigError, columns < 0 || t.size(1) == columns, op, ": tensor '", name, "' has shape ", t.sizes(),
                 "; expected (N, ", columns, ")");
}

void check_edges(const char* op, const at::Tensor& edges, int64_t num_nodes) {
  HPCML_CHECK_AS(ConfigError, edges.defined() && edges.scalar_type() == at::kLong && edges.dim() == 2 &&
                                  edges.size(0) == 2,
                 op, ": tensor 'edges' must be (2, E) int64; found ",
                 edges.defined() ? c10::toString(edges.scalar_type()) : "undefined", " of shape ",
                 edges.defined() ? edges.sizes() : at::IntArrayRef{});
  if (edges.numel() > 0) {
    const int64_t lo = edges.min().item<int64_t>(), hi = edges.max().item<int64_t>();
    HPCML_CHECK_AS(ConfigError, lo >= 0 && hi < num_nodes, op, ": tensor 'edges' holds node indices in [", lo, ", ",
                   hi, "]; expected [0, ", num_nodes, ")");
  }
}

torch::nn::Sequential make_mlp(int64_t in, const std::vector<int64_t>& hidden, int64_t out) {
  torch::nn::Sequential net;
  int64_t width = in;
  for (const int64_t h : hidden) {
    net->push_back(torch::nn::Linear(width, h));
    net->push_back(torch::nn::LayerNorm(torch::nn::LayerNormOptions({h})));
    net->push_back(torch::nn::ReLU());
    width = h;
  }
  net->push_back(torch::nn::Linear(width, out));
  return net;
}

struct MlpImpl : torch::nn::Module {
  MlpImpl(int64_t in, const std::vector<int64_t>& hidden, int64_t out) {
    net = register_module("net", make_mlp(in, hidden, out));
  }
  at::Tensor forward(const at::Tensor& x) { return net->forward(x); }
  torch::nn::Sequential net{nullptr};
};
TORCH_MODULE(Mlp);

// The interaction network: encoders, then `iterations` rounds of a residual edge update
// from (source, target, edge) and a residual node update from (node, sum of incoming
// edge states, sum of outgoing edge states), with the same two networks every round;
// then an edge classifier. Sums are index_add over the packed edge list.
struct InteractionNetworkImpl : torch::nn::Module {
  InteractionNetworkImpl(int64_t hidden, int64_t iterations) : iterations(iterations) {
    const std::vector<int64_t> h{hidden};
    node_encoder = register_module("node_encoder", Mlp(kNodeFeatures, h, hidden));
    edge_encoder = register_module("edge_encoder", Mlp(kEdgeFeatures, h, hidden));
    edge_network = register_module("edge_network", Mlp(3 * hidden, h, hidden));
    node_network = register_module("node_network", Mlp(3 * hidden, h, hidden));
    output = register_module("output", Mlp(3 * hidden, h, 1));
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& edges) {
    const at::Tensor src = edges[0], dst = edges[1];
    at::Tensor h = node_encoder->forward(x);
    at::Tensor e = edge_encoder->forward(edge_features(x, edges));
    for (int64_t t = 0; t < iterations; ++t) {
      e = e + edge_network->forward(at::cat({h.index_select(0, src), h.index_select(0, dst), e}, 1));
      const at::Tensor incoming = at::zeros_like(h).index_add(0, dst, e);
      const at::Tensor outgoing = at::zeros_like(h).index_add(0, src, e);
      h = h + node_network->forward(at::cat({h, incoming, outgoing}, 1));
    }
    return output->forward(at::cat({h.index_select(0, src), h.index_select(0, dst), e}, 1)).squeeze(-1);
  }
  int64_t iterations;
  Mlp node_encoder{nullptr}, edge_encoder{nullptr}, edge_network{nullptr}, node_network{nullptr}, output{nullptr};
};
TORCH_MODULE(InteractionNetwork);

std::vector<NamedTensor> named(const torch::nn::Module& m) {
  std::vector<NamedTensor> out;
  for (const auto& item : m.named_parameters(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  return out;
}

std::string join(const std::vector<int64_t>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
  return out;
}

}  // namespace

const char* stage_name(Stage stage) {
  switch (stage) {
    case Stage::kEmbedding: return "embedding";
    case Stage::kFilter: return "filter";
    case Stage::kGnn: return "gnn";
  }
  return "?";
}

// --- features -----------------------------------------------------------------------------

at::Tensor node_features(const TrackingEvent& event) {
  check_float_matrix("node_features", "hits", event.hits, 3);
  const at::Tensor h = event.hits.contiguous();
  const at::Tensor x = h.select(1, 0), y = h.select(1, 1), z = h.select(1, 2).div(1000.0);
  const at::Tensor r = at::sqrt(x * x + y * y).div(1000.0);
  const at::Tensor phi = at::atan2(y, x);
  const at::Tensor eta = at::asinh(z / r.clamp_min(1e-6));
  return at::stack({r, phi.div(M_PI), z, at::cos(phi), at::sin(phi), eta.mul(0.5)}, 1);
}

at::Tensor edge_features(const at::Tensor& x, const at::Tensor& edges) {
  check_float_matrix("edge_features", "x", x, kNodeFeatures);
  check_edges("edge_features", edges, x.size(0));
  const at::Tensor a = x.index_select(0, edges[0]), b = x.index_select(0, edges[1]);
  const at::Tensor d = b - a;
  const at::Tensor dr = d.select(1, 0);
  const at::Tensor dphi = at::remainder(d.select(1, 1) + 1.0, 2.0) - 1.0;
  const at::Tensor dz = d.select(1, 2), deta = d.select(1, 5);
  const at::Tensor safe_dr = dr.clamp_min(0.01);
  const at::Tensor slope = (dphi * 0.2 / safe_dr).clamp(-20.0, 20.0);
  const at::Tensor z0 = ((a.select(1, 2) - a.select(1, 0) * dz / safe_dr) * 10.0).clamp(-20.0, 20.0);
  return at::cat({a, b, at::stack({dr, dphi, dz, deta, slope, z0}, 1)}, 1);
}

at::Tensor edge_truth(const TrackingEvent& event, const at::Tensor& edges) {
  const int64_t n = event.hits.size(0);
  check_edges("edge_truth", edges, n);
  const at::Tensor truth = true_edges(event);
  auto keys_of = [n](const at::Tensor& e) { return at::minimum(e[0], e[1]) * n + at::maximum(e[0], e[1]); };
  const at::Tensor true_keys = std::get<0>(keys_of(truth).sort());
  const at::Tensor keys = keys_of(edges).contiguous();
  if (true_keys.numel() == 0) return at::zeros({edges.size(1)}, at::kBool);
  const at::Tensor pos = at::searchsorted(true_keys, keys).clamp_max(true_keys.numel() - 1);
  return true_keys.index_select(0, pos).eq(keys);
}

// --- modules ---------------------------------------------------------------------------------

struct LearnedPipeline::Modules {
  Mlp embedding{nullptr};
  Mlp filter{nullptr};
  InteractionNetwork gnn{nullptr};
};

LearnedPipeline::LearnedPipeline(const Architecture& a) : architecture_(a), modules_(std::make_unique<Modules>()) {
  HPCML_CHECK_AS(ConfigError, a.embedding_dim >= 1 && a.gnn_hidden >= 1 && a.gnn_iterations >= 0,
                 "tracking pipeline: embedding dim ", a.embedding_dim, ", gnn hidden ", a.gnn_hidden,
                 ", gnn iterations ", a.gnn_iterations, "; expected >= 1, >= 1, >= 0");
  for (const auto* hidden : {&a.embedding_hidden, &a.filter_hidden}) {
    for (const int64_t h : *hidden) HPCML_CHECK_AS(ConfigError, h >= 1, "tracking pipeline: hidden width ", h, "; expected >= 1");
  }
  torch::manual_seed(a.seed);
  modules_->embedding = Mlp(kNodeFeatures, a.embedding_hidden, a.embedding_dim);
  modules_->filter = Mlp(kEdgeFeatures, a.filter_hidden, 1);
  modules_->gnn = InteractionNetwork(a.gnn_hidden, a.gnn_iterations);
}

LearnedPipeline::~LearnedPipeline() = default;

at::Tensor LearnedPipeline::embed(const at::Tensor& x) const {
  check_float_matrix("embed", "x", x, kNodeFeatures);
  return modules_->embedding->forward(x);
}

at::Tensor LearnedPipeline::filter_logits(const at::Tensor& x, const at::Tensor& edges) const {
  return modules_->filter->forward(edge_features(x, edges)).squeeze(-1);
}

at::Tensor LearnedPipeline::gnn_logits(const at::Tensor& x, const at::Tensor& edges) const {
  check_float_matrix("gnn_logits", "x", x, kNodeFeatures);
  check_edges("gnn_logits", edges, x.size(0));
  return modules_->gnn->forward(x, edges);
}

std::vector<NamedTensor> LearnedPipeline::parameters(Stage stage) const {
  switch (stage) {
    case Stage::kEmbedding: return named(*modules_->embedding);
    case Stage::kFilter: return named(*modules_->filter);
    case Stage::kGnn: return named(*modules_->gnn);
  }
  return {};
}

std::vector<NamedTensor> LearnedPipeline::state() const {
  std::vector<NamedTensor> out;
  for (const Stage s : {Stage::kEmbedding, Stage::kFilter, Stage::kGnn}) {
    for (auto& [name, t] : parameters(s)) out.emplace_back(std::string(stage_name(s)) + "." + name, t);
  }
  return out;
}

void LearnedPipeline::load_state(const std::vector<NamedTensor>& state, const std::string& source) {
  std::map<std::string, at::Tensor> given(state.begin(), state.end());
  at::NoGradGuard no_grad;
  for (auto& [name, p] : this->state()) {
    const auto it = given.find(name);
    HPCML_CHECK_AS(ConfigError, it != given.end(), source, ": tensor '", name,
                   "' is missing; the weights do not match the configured architecture");
    HPCML_CHECK_AS(ConfigError, it->second.sizes() == p.sizes(), source, ": tensor '", name, "' has shape ",
                   it->second.sizes(), "; expected ", p.sizes());
    p.copy_(it->second);
    given.erase(it);
  }
  HPCML_CHECK_AS(ConfigError, given.empty(), source, ": tensor '", given.empty() ? "" : given.begin()->first,
                 "' is not a parameter of the pipeline");
}

void LearnedPipeline::set_training(bool on) {
  modules_->embedding->train(on);
  modules_->filter->train(on);
  modules_->gnn->train(on);
}

// --- graph construction -----------------------------------------------------------------------

at::Tensor embedding_graph(const at::Tensor& embedding, const at::Tensor& x, const EmbeddingGraphOptions& options) {
  check_float_matrix("embedding_graph", "embedding", embedding, -1);
  check_float_matrix("embedding_graph", "x", x, kNodeFeatures);
  HPCML_CHECK_AS(ConfigError, embedding.size(0) == x.size(0), "embedding_graph: tensor 'embedding' has ",
                 embedding.size(0), " rows; expected ", x.size(0), " (one per hit)");
  const int64_t n = x.size(0);
  RadiusGraphOptions ro;
  ro.radius = options.radius;
  ro.direction = EdgeDirection::kBoth;
  ro.max_neighbours = options.max_neighbours;
  const at::Tensor pairs = radius_graph(embedding.detach().contiguous(), ro);
  if (pairs.size(1) == 0) return pairs;
  // Unique unordered pairs (a kept neighbour in either direction makes the edge).
  const at::Tensor lo = at::minimum(pairs[0], pairs[1]), hi = at::maximum(pairs[0], pairs[1]);
  const at::Tensor keys = std::get<0>(at::_unique(lo * n + hi, /*sorted=*/true));
  at::Tensor a = keys.div(n, "floor"), b = keys.remainder(n);
  // Inner hit first: by radius, then index.
  const at::Tensor r = x.select(1, 0).contiguous();
  const at::Tensor ra = r.index_select(0, a), rb = r.index_select(0, b);
  const at::Tensor swap = ra.gt(rb);
  const at::Tensor src = at::where(swap, b, a), dst = at::where(swap, a, b);
  const at::Tensor order = (src * n + dst).argsort();
  return at::stack({src.index_select(0, order), dst.index_select(0, order)});
}

// --- losses -----------------------------------------------------------------------------------

at::Tensor embedding_loss(const LearnedPipeline& pipeline, const at::Tensor& x, const TrackingEvent& event,
                          const at::Tensor& truth_edges, const EmbeddingLossOptions& o, at::Generator generator) {
  const int64_t n = x.size(0);
  const at::Tensor e = pipeline.embed(x);
  // Negative candidates: random pairs and the current neighbours (hard negatives).
  std::vector<at::Tensor> candidates;
  if (o.random_pairs > 0 && n > 1) candidates.push_back(at::randint(n, {2, o.random_pairs}, generator, at::kLong));
  if (o.hard_neighbours > 0) {
    RadiusGraphOptions ro;
    ro.radius = o.hard_radius;
    ro.max_neighbours = o.hard_neighbours;
    ro.direction = EdgeDirection::kOnce;
    candidates.push_back(radius_graph(e.detach().contiguous(), ro));
  }
  at::Tensor negatives = candidates.empty() ? at::empty({2, 0}, at::kLong) : at::cat(candidates, 1);
  const at::Tensor pid = event.particle_id;
  const at::Tensor pa = pid.index_select(0, negatives[0]), pb = pid.index_select(0, negatives[1]);
  const at::Tensor keep = pa.ne(pb).logical_or(pa.eq(0)).logical_and(negatives[0].ne(negatives[1]));
  negatives = negatives.index_select(1, keep.nonzero().squeeze(1));

  at::Tensor loss = at::zeros({}, e.options());
  if (truth_edges.size(1) > 0) {
    const at::Tensor d = e.index_select(0, truth_edges[0]) - e.index_select(0, truth_edges[1]);
    loss = loss + d.pow(2).sum(1).mean();
  }
  if (negatives.size(1) > 0) {
    const at::Tensor d = e.index_select(0, negatives[0]) - e.index_select(0, negatives[1]);
    const at::Tensor dist = (d.pow(2).sum(1) + 1e-12).sqrt();
    loss = loss + o.negative_weight * (o.margin - dist).clamp_min(0).pow(2).mean();
  }
  return loss;
}

at::Tensor edge_loss(const at::Tensor& logits, const at::Tensor& truth, double pos_weight) {
  if (logits.numel() == 0) return logits.sum();
  const at::Tensor weight = at::full({1}, pos_weight, logits.options());
  return at::binary_cross_entropy_with_logits(logits, truth.to(at::kFloat), /*weight=*/{}, weight);
}

// --- inference --------------------------------------------------------------------------------

PipelineOutput run_pipeline(const LearnedPipeline& pipeline, const TrackingEvent& event, const PipelineCuts& cuts) {
  at::NoGradGuard no_grad;
  PipelineOutput out;
  out.x = node_features(event);
  out.embedding = pipeline.embed(out.x);
  out.graph_edges = embedding_graph(out.embedding, out.x, cuts.graph);
  out.filter_scores = out.graph_edges.size(1) ? pipeline.filter_logits(out.x, out.graph_edges).sigmoid()
                                              : at::empty({0}, at::kFloat);
  out.filter_edges = out.graph_edges.index_select(1, out.filter_scores.gt(cuts.filter).nonzero().squeeze(1));
  out.gnn_scores = out.filter_edges.size(1) ? pipeline.gnn_logits(out.x, out.filter_edges).sigmoid()
                                            : at::empty({0}, at::kFloat);
  out.labels = connected_components(out.x.size(0), out.filter_edges, out.gnn_scores.contiguous(), cuts.gnn);
  return out;
}

// --- files ------------------------------------------------------------------------------------

std::map<std::string, std::string> architecture_attributes(const Architecture& a) {
  return {{"embedding_dim", std::to_string(a.embedding_dim)},
          {"embedding_hidden", join(a.embedding_hidden)},
          {"filter_hidden", join(a.filter_hidden)},
          {"gnn_hidden", std::to_string(a.gnn_hidden)},
          {"gnn_iterations", std::to_string(a.gnn_iterations)}};
}

Architecture architecture_from_attributes(const std::map<std::string, std::string>& attributes,
                                          const std::string& source) {
  auto get = [&](const std::string& key) {
    const auto it = attributes.find(key);
    HPCML_CHECK_AS(IoError, it != attributes.end(), source, ": attribute '", key,
                   "' is missing; expected a weights file written by `hpcml tracking train`");
    return it->second;
  };
  auto integer = [&](const std::string& key, const std::string& text) {
    try {
      size_t used = 0;
      const int64_t v = std::stoll(text, &used);
      if (used == text.size()) return v;
    } catch (const std::exception&) {
    }
    HPCML_THROW(IoError, source, ": attribute '", key, "' is '", text, "'; expected an integer list");
  };
  auto list = [&](const std::string& key) {
    std::vector<int64_t> out;
    std::stringstream in(get(key));
    std::string item;
    while (std::getline(in, item, ',')) {
      if (!item.empty()) out.push_back(integer(key, item));
    }
    return out;
  };
  Architecture a;
  a.embedding_dim = integer("embedding_dim", get("embedding_dim"));
  a.embedding_hidden = list("embedding_hidden");
  a.filter_hidden = list("filter_hidden");
  a.gnn_hidden = integer("gnn_hidden", get("gnn_hidden"));
  a.gnn_iterations = integer("gnn_iterations", get("gnn_iterations"));
  return a;
}

void save_weights(const std::string& path, const LearnedPipeline& pipeline,
                  const std::map<std::string, std::string>& attributes) {
  auto all = architecture_attributes(pipeline.architecture());
  for (const auto& [k, v] : attributes) all[k] = v;
  all["format"] = "hpcml.tracking.weights";
  io::write_tensors_h5(path, pipeline.state(), all);
}

namespace {

herr_t collect_attribute_name(hid_t, const char* name, const H5A_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->push_back(name);
  return 0;
}

}  // namespace

std::map<std::string, std::string> read_weight_attributes(const std::string& path) {
  const io::h5::File file = io::h5::File::open(path);
  const std::string what = "weights file '" + path + "'";
  std::vector<std::string> names;
  {
    io::h5::Lock lock(io::h5::library_mutex());
    hsize_t index = 0;
    HPCML_CHECK_AS(IoError,
                   H5Aiterate2(file.get(), H5_INDEX_NAME, H5_ITER_INC, &index, collect_attribute_name, &names) >= 0,
                   what, ": cannot list the root attributes");
  }
  std::map<std::string, std::string> out;
  for (const auto& name : names) out[name] = io::h5::read_string_attribute(file.get(), name, what);
  return out;
}

std::vector<NamedTensor> read_weights(const std::string& path) {
  const io::h5::File file = io::h5::File::open(path);
  std::vector<NamedTensor> out;
  for (const auto& name : io::h5::list_group(file, "/")) {
    if (name.rfind("__", 0) == 0) continue;
    const std::string what = "weights file '" + path + "' dataset '" + name + "'";
    const io::h5::Id ds = io::h5::open_dataset(file, name);
    const io::h5::Shape shape = io::h5::shape_of(ds.get(), what);
    HPCML_CHECK_AS(IoError, shape.kind == io::h5::Kind::kFloat && !shape.dims.empty(), what, " is ",
                   shape.describe(), "; expected a float array");
    at::Tensor t = at::empty(shape.dims, at::kFloat);
    io::h5::read_rows(ds.get(), shape, 0, shape.dims[0], H5T_NATIVE_FLOAT, t.data_ptr(), what);
    out.emplace_back(name, t);
  }
  return out;
}

namespace {

template <typename T>
io::Column read_column(const io::h5::File& file, const std::string& group, const std::string& name,
                       hid_t memory_type, int64_t width) {
  const std::string dataset = group + "/" + name;
  const std::string what = "file '" + file.path() + "' dataset /" + dataset;
  const io::h5::Id ds = io::h5::open_dataset(file, dataset);
  const io::h5::Shape shape = io::h5::shape_of(ds.get(), what);
  int64_t elements = 1;
  for (size_t i = 1; i < shape.dims.size(); ++i) elements *= shape.dims[i];
  HPCML_CHECK_AS(IoError, !shape.dims.empty() && elements == width, what, " is ", shape.describe(), "; expected ",
                 width, " value(s) per row (docs/datasets.md \"## tracking\")");
  std::vector<T> data(static_cast<size_t>(shape.dims[0] * width));
  io::h5::read_rows(ds.get(), shape, 0, shape.dims[0], memory_type, data.data(), what);
  io::Column c;
  c.name = name;
  c.shape = width > 1 ? std::vector<int64_t>{shape.dims[0], width} : std::vector<int64_t>{shape.dims[0]};
  c.data = std::move(data);
  return c;
}

std::vector<int64_t> read_offsets(const io::h5::File& file, const std::string& group) {
  io::Column c = read_column<int64_t>(file, group, "offsets", H5T_NATIVE_INT64, 1);
  return std::get<std::vector<int64_t>>(std::move(c.data));
}

}  // namespace

std::vector<TrackingEvent> read_tracking_file(const std::string& path) {
  const io::h5::File file = io::h5::File::open(path);
  io::Table table;
  table.schema = "hpcml.tracking";
  io::Ragged hits;
  hits.name = "hits";
  hits.offsets = read_offsets(file, "hits");
  hits.items.push_back(read_column<float>(file, "hits", "values", H5T_NATIVE_FLOAT, 3));
  hits.items.push_back(read_column<int32_t>(file, "hits", "layer", H5T_NATIVE_INT32, 1));
  hits.items.push_back(read_column<int64_t>(file, "hits", "particle_id", H5T_NATIVE_INT64, 1));
  io::Ragged particles;
  particles.name = "particles";
  particles.offsets = read_offsets(file, "particles");
  particles.items.push_back(read_column<float>(file, "particles", "values", H5T_NATIVE_FLOAT, 7));
  particles.items.push_back(read_column<int64_t>(file, "particles", "particle_id", H5T_NATIVE_INT64, 1));
  table.rows = static_cast<int64_t>(hits.offsets.size()) - 1;
  table.ragged.push_back(std::move(hits));
  table.ragged.push_back(std::move(particles));
  try {
    io::check_table(table);
  } catch (const IoError& e) {
    HPCML_THROW(IoError, "file '", path, "': ", e.message());
  }
  return events_from_table(table);
}

}  // namespace hpcml::models::tracking
