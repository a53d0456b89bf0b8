// ParticleNet and ParticleNet-Lite: dynamic-graph CNN jet taggers (Qu & Gouskos 2020)
// (Python twin: models/twins/particlenet.py; see docs/models.md#particlenet).
//
// Layout is channels-last: particles (B, P, C), edges (B, P, k, C); a bias-free 1x1
// convolution is a bias-free Linear on the last axis, and BatchNorm runs over the
// flattened rows, which gives the statistics of BatchNorm2d over (B, C, P, k).
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "core/error.hpp"
#include "models/registry.hpp"
#include "models/zoo/module_model.hpp"

namespace hpcml::models::detail {

namespace {

constexpr int64_t kFeatures = 7;  // per particle, computed from (E, px, py, pz) below
constexpr int64_t kClasses = 2;

struct BlockSpec {
  int64_t k;
  std::vector<int64_t> channels;
};

/// BatchNorm over the last axis of a (..., C) tensor.
at::Tensor batch_norm_last(BatchNorm& bn, const at::Tensor& x) {
  const auto shape = x.sizes().vec();
  return bn->forward(x.reshape({-1, shape.back()})).view(shape);
}

/// Indices (B, P, k) of each particle's k nearest other particles in `points`
/// (B, P, D); padded particles (mask false) are never neighbours of real ones. One
/// (B, P, P) distance matrix per call: ||a||^2 + ||b||^2 - 2 a.b, no (B, P, P, D) difference.
at::Tensor knn(const at::Tensor& points, const at::Tensor& mask, int64_t k) {
  at::NoGradGuard no_grad;
  HPCML_CHECK_AS(ConfigError, points.size(1) > k, "particlenet: k = ", k, " nearest neighbours need more than ", k,
                 " particles per jet (padded length), found ", points.size(1));
  const at::Tensor p = points.detach();
  const at::Tensor sq = p.pow(2).sum(-1);  // (B, P)
  at::Tensor d = at::baddbmm(sq.unsqueeze(2) + sq.unsqueeze(1), p, p.transpose(1, 2), /*beta=*/1, /*alpha=*/-2);
  d.masked_fill_(mask.logical_not().unsqueeze(1), 1e9f);  // padded columns: far from everything
  d.diagonal(0, 1, 2).fill_(std::numeric_limits<float>::infinity());  // not its own neighbour
  return std::get<1>(d.topk(k, -1, /*largest=*/false, /*sorted=*/true));
}

/// Rows (B, P, k, C) of `x` (B, P, C) at `index` (B, P, k).
at::Tensor gather_neighbours(const at::Tensor& x, const at::Tensor& index) {
  const int64_t b = x.size(0), p = x.size(1), c = x.size(2), k = index.size(2);
  const at::Tensor offsets = at::arange(b, index.options()).mul_(p).view({b, 1, 1});
  return x.reshape({b * p, c}).index_select(0, (index + offsets).reshape(-1)).view({b, p, k, c});
}

/// One EdgeConv block: edge features [x_i, x_j - x_i] over the k nearest neighbours,
/// three bias-free 1x1 convolutions with BN and ReLU, the mean over the neighbours,
/// plus a bias-free 1x1 shortcut with BN, then ReLU. state_dict: convs.N.weight,
/// bns.N.*, sc.weight, sc_bn.*.
struct EdgeConvImpl : torch::nn::Module {
  EdgeConvImpl(int64_t k, int64_t in, const std::vector<int64_t>& channels) : k(k) {
    int64_t width = 2 * in;
    for (int64_t c : channels) {
      convs->push_back(torch::nn::Linear(torch::nn::LinearOptions(width, c).bias(false)));
      bns->push_back(BatchNorm(c));
      width = c;
    }
    register_module("convs", convs);
    register_module("bns", bns);
    sc = register_module("sc", torch::nn::Linear(torch::nn::LinearOptions(in, width).bias(false)));
    sc_bn = register_module("sc_bn", BatchNorm(width));
  }

  /// x (B, P, C) features, points (B, P, D) for the kNN, mask (B, P), m (B, P, 1) float mask.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& points, const at::Tensor& mask, const at::Tensor& m) {
    const at::Tensor index = knn(points, mask, k);
    // The first convolution of [x_i, x_j - x_i] is (W_a - W_b) x_i + W_b x_j: computed per
    // particle and then gathered, k times fewer multiply-adds than on the edges.
    const int64_t in = x.size(2);
    const at::Tensor w = convs[0]->as<torch::nn::Linear>()->weight;
    const at::Tensor w_b = w.narrow(1, in, in);
    const at::Tensor centre = at::matmul(x, (w.narrow(1, 0, in) - w_b).t());  // (B, P, C1)
    const at::Tensor neighbour = at::matmul(x, w_b.t());                       // (B, P, C1)
    at::Tensor h = centre.unsqueeze(2) + gather_neighbours(neighbour, index);  // (B, P, k, C1)
    for (size_t i = 0; i < convs->size(); ++i) {
      if (i > 0) h = convs[i]->as<torch::nn::Linear>()->forward(h);
      auto* bn = bns[i]->as<BatchNormImpl>();
      h = at::relu(bn->forward(h.reshape({-1, h.size(-1)})).view(h.sizes()));
    }
    const at::Tensor shortcut = batch_norm_last(sc_bn, sc->forward(x));
    return at::relu(h.mean(2) + shortcut) * m;
  }

  int64_t k;
  torch::nn::ModuleList convs, bns;
  torch::nn::Linear sc{nullptr};
  BatchNorm sc_bn{nullptr};
};
TORCH_MODULE(EdgeConv);

/// state_dict: bn_fts.*, edge_convs.N.*, fc.0 (Linear), fc.3 (Linear).
struct ParticleNetImpl : torch::nn::Module {
  ParticleNetImpl(const std::vector<BlockSpec>& blocks, int64_t fc) {
    bn_fts = register_module("bn_fts", BatchNorm(kFeatures));
    int64_t width = kFeatures;
    for (const auto& b : blocks) {
      edge_convs->push_back(EdgeConv(b.k, width, b.channels));
      width = b.channels.back();
    }
    register_module("edge_convs", edge_convs);
    head->push_back(torch::nn::Linear(width, fc));
    head->push_back(torch::nn::ReLU());
    head->push_back(torch::nn::Dropout(0.1));
    head->push_back(torch::nn::Linear(fc, kClasses));
    register_module("fc", head);
  }

  at::Tensor forward(const Inputs& inputs) {
    const at::Tensor& particles = inputs.at("particles");  // (B, P, 4): E, px, py, pz
    const at::Tensor mask = inputs.at("mask").to(at::kBool);
    HPCML_CHECK_AS(ConfigError, particles.dim() == 3 && particles.size(2) == 4, "particlenet: input 'particles': "
                   "expected (batch, particles, 4) four-momenta (E, px, py, pz), found ", particles.sizes());
    HPCML_CHECK_AS(ConfigError, mask.sizes() == particles.sizes().slice(0, 2), "particlenet: input 'mask': "
                   "expected shape ", particles.sizes().slice(0, 2), " (batch, particles), found ", mask.sizes());
    const at::Tensor m = mask.unsqueeze(-1).to(particles.scalar_type());
    const auto [features, points] = jet_features(particles, m);
    at::Tensor x = batch_norm_last(bn_fts, features) * m;
    for (size_t i = 0; i < edge_convs->size(); ++i) {
      x = edge_convs[i]->as<EdgeConvImpl>()->forward(x, i == 0 ? points : x, mask, m);
    }
    const at::Tensor pooled = x.sum(1) / m.sum(1).clamp_min(1);  // mean over real particles
    return head->forward(pooled);
  }

  /// The 7 features of each particle relative to the jet (the sum of the real
  /// particles): d_eta, d_phi, log pT, log E, log pT/pT_jet, log E/E_jet, dR; and the
  /// points (d_eta, d_phi) of the first kNN. Padded particles get zeros.
  static std::pair<at::Tensor, at::Tensor> jet_features(const at::Tensor& p4, const at::Tensor& m) {
    constexpr double kTiny = 1e-8;
    const at::Tensor v = p4 * m;
    const at::Tensor e = v.select(2, 0), px = v.select(2, 1), py = v.select(2, 2), pz = v.select(2, 3);
    const at::Tensor jet = v.sum(1);  // (B, 4)
    const at::Tensor jet_e = jet.select(1, 0).unsqueeze(1), jet_px = jet.select(1, 1).unsqueeze(1);
    const at::Tensor jet_py = jet.select(1, 2).unsqueeze(1), jet_pz = jet.select(1, 3).unsqueeze(1);
    const at::Tensor jet_pt = (jet_px * jet_px + jet_py * jet_py).sqrt().clamp_min(kTiny);
    const at::Tensor pt = (px * px + py * py).sqrt().clamp_min(kTiny);
    const at::Tensor d_eta = at::asinh(pz / pt) - at::asinh(jet_pz / jet_pt);
    const at::Tensor d_phi = at::remainder(at::atan2(py, px) - at::atan2(jet_py, jet_px) + M_PI, 2 * M_PI) - M_PI;
    const at::Tensor log_pt = pt.log(), log_e = e.clamp_min(kTiny).log();
    const at::Tensor mask = m.squeeze(-1);
    const at::Tensor features =
        at::stack({d_eta, d_phi, log_pt, log_e, log_pt - jet_pt.log(), log_e - jet_e.clamp_min(kTiny).log(),
                   (d_eta * d_eta + d_phi * d_phi).sqrt()},
                  -1) *
        mask.unsqueeze(-1);
    return {features, at::stack({d_eta, d_phi}, -1) * mask.unsqueeze(-1)};
  }

  BatchNorm bn_fts{nullptr};
  torch::nn::ModuleList edge_convs;
  torch::nn::Sequential head;
};

std::unique_ptr<Model> make(const char* name, uint64_t seed, const std::vector<BlockSpec>& blocks, int64_t fc) {
  torch::manual_seed(seed);
  return std::make_unique<ModuleModel<ParticleNetImpl>>(name, std::make_shared<ParticleNetImpl>(blocks, fc),
                                                        std::vector<std::string>{"particles", "mask"});
}

}  // namespace

Inputs jet_example_inputs(int64_t batch, uint64_t seed) {
  constexpr int64_t kPadded = 100;
  auto gen = at::detail::createCPUGenerator(seed);
  const at::Tensor count = at::randint(20, kPadded + 1, {batch, 1}, gen, at::kLong);
  const at::Tensor mask = at::arange(kPadded, at::kLong).unsqueeze(0).lt(count);
  const at::Tensor pt = -at::log1p(-at::rand({batch, kPadded}, gen)) * 10.0;  // exponential, mean 10 GeV
  const at::Tensor eta = at::randn({batch, kPadded}, gen) * 0.3 + at::randn({batch, 1}, gen);
  const at::Tensor phi = at::randn({batch, kPadded}, gen) * 0.3;
  const at::Tensor p4 = at::stack({pt * at::cosh(eta), pt * at::cos(phi), pt * at::sin(phi), pt * at::sinh(eta)}, -1);
  return {{"particles", p4 * mask.unsqueeze(-1)}, {"mask", mask}};
}

std::unique_ptr<Model> make_particlenet(uint64_t seed) {
  return make("particlenet", seed, {{16, {64, 64, 64}}, {16, {128, 128, 128}}, {16, {256, 256, 256}}}, 256);
}

std::unique_ptr<Model> make_particlenet_lite(uint64_t seed) {
  return make("particlenet-lite", seed, {{7, {32, 32, 32}}, {7, {64, 64, 64}}}, 128);
}

}  // namespace hpcml::models::detail
