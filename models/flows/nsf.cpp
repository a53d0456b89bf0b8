// The neural spline flow of models/flows/nsf.hpp: RQ splines, couplings, LU-linear
// layers, the strain embedding, importance sampling and the toy GW likelihood.
// docs/flows.md describes the math; models/twins/nsf.py is the Python twin.
#include "models/flows/nsf.hpp"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/error.hpp"

namespace hpcml::models::flows {

namespace {

std::string shape_of(const at::Tensor& t) {
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

c10::optional<at::Generator> to_c10(const std::optional<at::Generator>& g) {
  return g ? c10::optional<at::Generator>(*g) : c10::nullopt;
}

/// Normalised knot positions along the last axis: (..., K+1) from -B to B, with
/// every bin at least `min_size` of the interval.
at::Tensor knots(const at::Tensor& unnormalised, double min_size, double bound) {
  const int64_t k = unnormalised.size(-1);
  auto sizes = at::softmax(unnormalised, -1);
  sizes = min_size + (1 - min_size * static_cast<double>(k)) * sizes;
  auto cum = 2 * bound * at::cumsum(sizes, -1) - bound;
  auto lead = cum.sizes().vec();
  lead.back() = 1;
  return at::cat(
      {at::full(lead, -bound, cum.options()), cum.narrow(-1, 0, k - 1), at::full(lead, bound, cum.options())}, -1);
}

struct Knots {
  at::Tensor cumwidths, widths, cumheights, heights, derivatives;  // (..., K+1), (..., K), ..., (..., K+1)
};

Knots make_knots(const at::Tensor& inputs, const at::Tensor& params, const SplineOptions& o, const char* what) {
  const int64_t k = o.num_bins;
  HPCML_CHECK_AS(ConfigError, k >= 2, what, ": num_bins: expected >= 2, found ", k);
  HPCML_CHECK_AS(ConfigError, o.tail_bound > 0, what, ": tail_bound: expected > 0, found ", o.tail_bound);
  HPCML_CHECK_AS(ConfigError,
                 o.min_bin_width * static_cast<double>(k) < 1 && o.min_bin_height * static_cast<double>(k) < 1, what,
                 ": min_bin_width/height * num_bins must be < 1");
  auto expected = inputs.sizes().vec();
  expected.push_back(3 * k - 1);
  HPCML_CHECK_AS(ConfigError, params.sizes().vec() == expected, what, ": params: expected shape ",
                 c10::IntArrayRef(expected), " (inputs shape + 3*num_bins-1), found ", shape_of(params));
  Knots kn;
  kn.cumwidths = knots(params.narrow(-1, 0, k), o.min_bin_width, o.tail_bound);
  kn.widths = kn.cumwidths.narrow(-1, 1, k) - kn.cumwidths.narrow(-1, 0, k);
  kn.cumheights = knots(params.narrow(-1, k, k), o.min_bin_height, o.tail_bound);
  kn.heights = kn.cumheights.narrow(-1, 1, k) - kn.cumheights.narrow(-1, 0, k);
  auto interior = o.min_derivative + at::softplus(params.narrow(-1, 2 * k, k - 1));
  auto lead = interior.sizes().vec();
  lead.back() = 1;
  // Unit derivatives at ±B match the identity tails.
  kn.derivatives = at::cat({at::ones(lead, interior.options()), interior, at::ones(lead, interior.options())}, -1);
  return kn;
}

/// Bin index (..., 1) of x among the knots: how many interior knots are <= x.
at::Tensor bin_index(const at::Tensor& x, const at::Tensor& cum, int64_t k) {
  return at::ge(x.unsqueeze(-1), cum.narrow(-1, 1, k - 1)).sum(-1, /*keepdim=*/true);
}

at::Tensor gather_bin(const at::Tensor& t, const at::Tensor& idx) { return t.gather(-1, idx).squeeze(-1); }

TransformResult rq_spline(const at::Tensor& inputs, const at::Tensor& params, const SplineOptions& o, bool inverse) {
  const char* what = inverse ? "rq_spline_inverse" : "rq_spline_forward";
  HPCML_CHECK_AS(ConfigError, inputs.is_floating_point() && params.scalar_type() == inputs.scalar_type(), what,
                 ": inputs and params: expected the same floating dtype, found ", inputs.scalar_type(), " and ",
                 params.scalar_type());
  const Knots kn = make_knots(inputs, params, o, what);
  const double b = o.tail_bound;
  const int64_t k = o.num_bins;
  const auto inside = at::logical_and(at::ge(inputs, -b), at::le(inputs, b));
  // Clamped, so the spline formulas stay finite (and their gradients NaN-free) in the tails.
  const auto v = at::clamp(inputs, -b, b);
  const auto idx = bin_index(v, inverse ? kn.cumheights : kn.cumwidths, k);
  const auto xk = gather_bin(kn.cumwidths, idx), wk = gather_bin(kn.widths, idx);
  const auto yk = gather_bin(kn.cumheights, idx), hk = gather_bin(kn.heights, idx);
  const auto dk = gather_bin(kn.derivatives, idx), dk1 = gather_bin(kn.derivatives, idx + 1);
  const auto s = hk / wk;
  const auto curvature = dk1 + dk - 2 * s;
  at::Tensor out, xi;
  if (!inverse) {
    xi = (v - xk) / wk;
    const auto t = xi * (1 - xi);
    out = yk + hk * (s * xi * xi + dk * t) / (s + curvature * t);
  } else {
    // Solve a xi² + b xi + c = 0 for xi in [0, 1]; 2c / (-b - sqrt(b² - 4ac)) avoids cancellation.
    const auto dy = v - yk;
    const auto qa = hk * (s - dk) + dy * curvature;
    const auto qb = hk * dk - dy * curvature;
    const auto qc = -s * dy;
    const auto disc = at::clamp_min(qb * qb - 4 * qa * qc, 0);
    xi = (2 * qc) / (-qb - at::sqrt(disc));
    out = xi * wk + xk;
  }
  const auto t = xi * (1 - xi);
  const auto denom = s + curvature * t;
  const auto deriv_num = s * s * (dk1 * xi * xi + 2 * s * t + dk * (1 - xi) * (1 - xi));
  auto lad = at::log(deriv_num) - 2 * at::log(denom);
  if (inverse) lad = -lad;
  return {at::where(inside, out, inputs), at::where(inside, lad, at::zeros_like(lad))};
}

}  // namespace

TransformResult rq_spline_forward(const at::Tensor& inputs, const at::Tensor& params, const SplineOptions& options) {
  return rq_spline(inputs, params, options, /*inverse=*/false);
}

TransformResult rq_spline_inverse(const at::Tensor& inputs, const at::Tensor& params, const SplineOptions& options) {
  return rq_spline(inputs, params, options, /*inverse=*/true);
}

// --- modules (names = the twin's state_dict names) -------------------------------------

namespace detail {

namespace {

constexpr double kLuEps = 1e-3;

torch::nn::Sequential mlp(int64_t in, const std::vector<int64_t>& hidden, int64_t out) {
  torch::nn::Sequential net;
  for (const int64_t h : hidden) {
    net->push_back(torch::nn::Linear(in, h));
    net->push_back(torch::nn::ELU());
    in = h;
  }
  net->push_back(torch::nn::Linear(in, out));
  return net;
}

}  // namespace

/// Strain (B, T) -> projection (B, n_basis) -> MLP -> context (B, context_dim).
struct EmbeddingImpl : torch::nn::Module {
  EmbeddingImpl(const NsfOptions& o)
      : projection(register_module("projection", torch::nn::Linear(o.strain_length, o.n_basis))),
        net(register_module("net", mlp(o.n_basis, o.embedding_hidden, o.context_dim))) {}
  at::Tensor forward(const at::Tensor& strain) { return net->forward(projection->forward(strain)); }
  torch::nn::Linear projection;
  torch::nn::Sequential net;
};

/// y = L U x + b, L unit lower triangular, U upper with diagonal softplus(u) + eps.
struct LuLinearImpl : torch::nn::Module {
  explicit LuLinearImpl(int64_t d) {
    lower = register_parameter("lower", torch::zeros({d, d}));
    upper = register_parameter("upper", torch::zeros({d, d}));
    // Identity at initialisation: softplus(u) + eps = 1.
    unconstrained_diag = register_parameter("unconstrained_diag", torch::full({d}, std::log(std::expm1(1 - kLuEps))));
    bias = register_parameter("bias", torch::zeros({d}));
  }
  at::Tensor diag() const { return at::softplus(unconstrained_diag) + kLuEps; }
  at::Tensor l() const { return at::tril(lower, -1) + at::eye(lower.size(0), lower.options()); }
  at::Tensor u() const { return at::triu(upper, 1) + at::diag(diag()); }
  TransformResult forward(const at::Tensor& x) const {
    const auto y = at::matmul(x, at::matmul(l(), u()).t()) + bias;
    return {y, at::log(diag()).sum().expand({x.size(0)})};
  }
  TransformResult inverse(const at::Tensor& y) const {
    const auto rhs = (y - bias).t();
    const auto w = at::linalg_solve_triangular(l(), rhs, /*upper=*/false, /*left=*/true, /*unitriangular=*/true);
    const auto x = at::linalg_solve_triangular(u(), w, /*upper=*/true, /*left=*/true, /*unitriangular=*/false);
    return {x.t(), -at::log(diag()).sum().expand({y.size(0)})};
  }
  at::Tensor lower, upper, unconstrained_diag, bias;
};

/// Transforms the features of one parity by an RQ spline whose parameters come from
/// the other features and the context. D = 1: the one feature, from the context alone.
struct CouplingImpl : torch::nn::Module {
  CouplingImpl(const NsfOptions& o, int64_t step) : spline(o.spline) {
    std::vector<int64_t> ident, trans;
    for (int64_t j = 0; j < o.theta_dim; ++j) {
      const bool transformed = o.theta_dim == 1 || j % 2 == step % 2;
      (transformed ? trans : ident).push_back(j);
    }
    identity_idx = torch::tensor(ident, torch::kLong);
    transform_idx = torch::tensor(trans, torch::kLong);
    const int64_t per = 3 * o.spline.num_bins - 1;
    net = register_module("net", mlp(static_cast<int64_t>(ident.size()) + o.context_dim,
                                     std::vector<int64_t>(static_cast<size_t>(o.hidden_layers), o.hidden),
                                     static_cast<int64_t>(trans.size()) * per));
  }
  TransformResult forward(const at::Tensor& x, const at::Tensor& context, bool inverse) {
    // The index lists are not buffers (the checkpoint and twin names stay as they
    // are), so they follow the input to its device here; a no-op on the CPU.
    const auto identity = identity_idx.to(x.device());
    const auto transform = transform_idx.to(x.device());
    const auto cond = at::cat({x.index_select(1, identity), context}, 1);
    const int64_t nt = transform.size(0);
    const auto params = net->forward(cond).view({x.size(0), nt, 3 * spline.num_bins - 1});
    const auto r = inverse ? rq_spline_inverse(x.index_select(1, transform), params, spline)
                           : rq_spline_forward(x.index_select(1, transform), params, spline);
    return {x.index_copy(1, transform, r.outputs), r.logabsdet.sum(1)};
  }
  SplineOptions spline;
  at::Tensor identity_idx, transform_idx;
  torch::nn::Sequential net{nullptr};
};

/// permutation -> (LU-linear) -> coupling, in the θ -> z direction.
struct FlowStepImpl : torch::nn::Module {
  FlowStepImpl(const NsfOptions& o, int64_t step) {
    permutation = register_buffer("permutation", torch::randperm(o.theta_dim, torch::kLong));
    if (o.linear == "lu") lu = register_module("lu", std::make_shared<LuLinearImpl>(o.theta_dim));
    coupling = register_module("coupling", std::make_shared<CouplingImpl>(o, step));
  }
  TransformResult forward(at::Tensor x, const at::Tensor& context) {
    x = x.index_select(1, permutation);
    at::Tensor lad = at::zeros({x.size(0)}, x.options());
    if (lu) {
      auto r = lu->forward(x);
      x = r.outputs, lad = lad + r.logabsdet;
    }
    auto r = coupling->forward(x, context, /*inverse=*/false);
    return {r.outputs, lad + r.logabsdet};
  }
  TransformResult inverse(const at::Tensor& z, const at::Tensor& context) {
    auto r = coupling->forward(z, context, /*inverse=*/true);
    at::Tensor x = r.outputs, lad = r.logabsdet;
    if (lu) {
      auto l = lu->inverse(x);
      x = l.outputs, lad = lad + l.logabsdet;
    }
    return {x.index_select(1, at::argsort(permutation)), lad};
  }
  at::Tensor permutation;
  std::shared_ptr<LuLinearImpl> lu;
  std::shared_ptr<CouplingImpl> coupling;
};

struct NsfModule : torch::nn::Module {
  explicit NsfModule(const NsfOptions& o) {
    theta_mean = register_buffer("theta_mean", torch::zeros({o.theta_dim}));
    theta_std = register_buffer("theta_std", torch::ones({o.theta_dim}));
    embedding = register_module("embedding", std::make_shared<EmbeddingImpl>(o));
    auto list = torch::nn::ModuleList();
    for (int64_t s = 0; s < o.num_steps; ++s) {
      steps.push_back(std::make_shared<FlowStepImpl>(o, s));
      list->push_back(steps.back());
    }
    register_module("steps", list);
  }
  at::Tensor theta_mean, theta_std;
  std::shared_ptr<EmbeddingImpl> embedding;
  std::vector<std::shared_ptr<FlowStepImpl>> steps;
};

}  // namespace detail

// --- NeuralSplineFlow ------------------------------------------------------------------

NeuralSplineFlow::NeuralSplineFlow(const NsfOptions& o) : options_(o) {
  const char* what = "NeuralSplineFlow";
  for (const auto& [name, value] : {std::pair<const char*, int64_t>{"theta_dim", o.theta_dim},
                                    {"strain_length", o.strain_length},
                                    {"num_steps", o.num_steps},
                                    {"hidden", o.hidden},
                                    {"hidden_layers", o.hidden_layers},
                                    {"n_basis", o.n_basis},
                                    {"context_dim", o.context_dim}}) {
    HPCML_CHECK_AS(ConfigError, value >= 1, what, ": ", name, ": expected >= 1, found ", value);
  }
  for (const int64_t h : o.embedding_hidden) {
    HPCML_CHECK_AS(ConfigError, h >= 1, what, ": embedding_hidden: expected widths >= 1, found ", h);
  }
  HPCML_CHECK_AS(ConfigError, o.linear == "lu" || o.linear == "permutation", what,
                 ": linear: expected one of [lu, permutation], found '", o.linear, "'");
  HPCML_CHECK_AS(ConfigError, o.spline.num_bins >= 2, what, ": num_bins: expected >= 2, found ", o.spline.num_bins);
  HPCML_CHECK_AS(ConfigError, o.spline.tail_bound > 0, what, ": tail_bound: expected > 0, found ", o.spline.tail_bound);
  torch::manual_seed(o.seed);
  module_ = std::make_shared<detail::NsfModule>(o);
}

void NeuralSplineFlow::check_strain(const at::Tensor& strain, const char* what) const {
  HPCML_CHECK_AS(ConfigError, strain.dim() == 2 && strain.size(1) == options_.strain_length, what,
                 ": strain: expected shape (B, ", options_.strain_length, "), found ", shape_of(strain));
}

at::Tensor NeuralSplineFlow::embed(const at::Tensor& strain) {
  check_strain(strain, "NeuralSplineFlow::embed");
  return module_->embedding->forward(strain.to(dtype()));
}

TransformResult NeuralSplineFlow::forward_transform(const at::Tensor& theta, const at::Tensor& context) {
  HPCML_CHECK_AS(ConfigError, theta.dim() == 2 && theta.size(1) == options_.theta_dim,
                 "NeuralSplineFlow::forward_transform: theta: expected shape (B, ", options_.theta_dim, "), found ",
                 shape_of(theta));
  HPCML_CHECK_AS(ConfigError,
                 context.dim() == 2 && context.size(0) == theta.size(0) && context.size(1) == options_.context_dim,
                 "NeuralSplineFlow::forward_transform: context: expected shape (", theta.size(0), ", ",
                 options_.context_dim, "), found ", shape_of(context));
  const auto& m = *module_;
  at::Tensor x = (theta.to(dtype()) - m.theta_mean) / m.theta_std;
  at::Tensor lad = (-at::log(m.theta_std).sum()).expand({x.size(0)});
  for (const auto& step : m.steps) {
    auto r = step->forward(x, context);
    x = r.outputs, lad = lad + r.logabsdet;
  }
  return {x, lad};
}

TransformResult NeuralSplineFlow::inverse_transform(const at::Tensor& z, const at::Tensor& context) {
  HPCML_CHECK_AS(ConfigError, z.dim() == 2 && z.size(1) == options_.theta_dim,
                 "NeuralSplineFlow::inverse_transform: z: expected shape (B, ", options_.theta_dim, "), found ",
                 shape_of(z));
  HPCML_CHECK_AS(ConfigError,
                 context.dim() == 2 && context.size(0) == z.size(0) && context.size(1) == options_.context_dim,
                 "NeuralSplineFlow::inverse_transform: context: expected shape (", z.size(0), ", ",
                 options_.context_dim, "), found ", shape_of(context));
  const auto& m = *module_;
  at::Tensor x = z.to(dtype());
  at::Tensor lad = at::zeros({x.size(0)}, x.options());
  for (auto it = m.steps.rbegin(); it != m.steps.rend(); ++it) {
    auto r = (*it)->inverse(x, context);
    x = r.outputs, lad = lad + r.logabsdet;
  }
  return {x * m.theta_std + m.theta_mean, lad + at::log(m.theta_std).sum()};
}

namespace {
at::Tensor standard_normal_log_prob(const at::Tensor& z) {
  return -0.5 * (z * z).sum(1) - 0.5 * static_cast<double>(z.size(1)) * std::log(2 * M_PI);
}
}  // namespace

at::Tensor NeuralSplineFlow::log_prob(const at::Tensor& theta, const at::Tensor& strain) {
  HPCML_CHECK_AS(ConfigError, theta.dim() == 2 && theta.size(1) == options_.theta_dim,
                 "NeuralSplineFlow::log_prob: theta: expected shape (B, ", options_.theta_dim, "), found ",
                 shape_of(theta));
  check_strain(strain, "NeuralSplineFlow::log_prob");
  HPCML_CHECK_AS(ConfigError, theta.size(0) == strain.size(0), "NeuralSplineFlow::log_prob: theta ", shape_of(theta),
                 " and strain ", shape_of(strain), ": expected the same batch size");
  const auto r = forward_transform(theta, embed(strain));
  return standard_normal_log_prob(r.outputs) + r.logabsdet;
}

FlowSamples NeuralSplineFlow::sample_and_log_prob(const at::Tensor& strain, int64_t n,
                                                  std::optional<at::Generator> generator) {
  check_strain(strain, "NeuralSplineFlow::sample");
  HPCML_CHECK_AS(ConfigError, n >= 1, "NeuralSplineFlow::sample: n: expected >= 1, found ", n);
  const int64_t b = strain.size(0), d = options_.theta_dim;
  const auto context = embed(strain).repeat_interleave(n, 0);
  const auto z = at::randn({b * n, d}, to_c10(generator), at::TensorOptions().dtype(dtype()));
  const auto r = inverse_transform(z, context);
  return {r.outputs.view({b, n, d}), (standard_normal_log_prob(z) - r.logabsdet).view({b, n})};
}

at::Tensor NeuralSplineFlow::sample(const at::Tensor& strain, int64_t n, std::optional<at::Generator> generator) {
  at::NoGradGuard no_grad;
  return sample_and_log_prob(strain, n, std::move(generator)).samples;
}

void NeuralSplineFlow::set_standardization(const at::Tensor& mean, const at::Tensor& std) {
  const int64_t d = options_.theta_dim;
  HPCML_CHECK_AS(ConfigError, mean.dim() == 1 && mean.size(0) == d,
                 "NeuralSplineFlow::set_standardization: mean: expected shape (", d, "), found ", shape_of(mean));
  HPCML_CHECK_AS(ConfigError, std.dim() == 1 && std.size(0) == d,
                 "NeuralSplineFlow::set_standardization: std: expected shape (", d, "), found ", shape_of(std));
  HPCML_CHECK_AS(
      ConfigError,
      at::isfinite(mean).all().item<bool>() && (std > 0).all().item<bool>() && at::isfinite(std).all().item<bool>(),
      "NeuralSplineFlow::set_standardization: expected finite mean and finite std > 0");
  at::NoGradGuard no_grad;
  module_->theta_mean.copy_(mean);
  module_->theta_std.copy_(std);
}

void NeuralSplineFlow::set_standardization_from(const at::Tensor& theta) {
  HPCML_CHECK_AS(ConfigError, theta.dim() == 2 && theta.size(1) == options_.theta_dim && theta.size(0) >= 2,
                 "NeuralSplineFlow::set_standardization_from: theta: expected shape (N >= 2, ", options_.theta_dim,
                 "), found ", shape_of(theta));
  const auto t = theta.to(at::kDouble);
  set_standardization(t.mean(0), t.std(0, /*unbiased=*/false));
}

void NeuralSplineFlow::init_projection_from_svd(const at::Tensor& waveforms) {
  const int64_t nb = options_.n_basis, len = options_.strain_length;
  HPCML_CHECK_AS(ConfigError, waveforms.dim() == 2 && waveforms.size(1) == len && waveforms.size(0) >= nb,
                 "NeuralSplineFlow::init_projection_from_svd: waveforms: expected shape (N >= ", nb, ", ", len,
                 "), found ", shape_of(waveforms));
  const auto svd = at::linalg_svd(waveforms.to(at::kDouble), /*full_matrices=*/false);
  const auto& vh = std::get<2>(svd);  // (min(N, T), T), rows by decreasing singular value
  at::NoGradGuard no_grad;
  auto& proj = module_->embedding->projection;
  proj->weight.copy_(vh.narrow(0, 0, nb));
  proj->bias.zero_();
}

std::vector<NamedTensor> NeuralSplineFlow::named_parameters() const {
  std::vector<NamedTensor> out;
  for (const auto& item : module_->named_parameters(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  return out;
}

std::vector<NamedTensor> NeuralSplineFlow::named_buffers() const {
  std::vector<NamedTensor> out;
  for (const auto& item : module_->named_buffers(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  return out;
}

std::vector<at::Tensor> NeuralSplineFlow::parameters() const { return module_->parameters(/*recurse=*/true); }

void NeuralSplineFlow::train(bool on) { module_->train(on); }

void NeuralSplineFlow::to(at::ScalarType dtype) {
  // Module::to(dtype) would also convert the int64 permutation buffers.
  at::NoGradGuard no_grad;
  for (auto& item : module_->named_parameters(/*recurse=*/true)) item.value().set_data(item.value().to(dtype));
  for (auto& item : module_->named_buffers(/*recurse=*/true)) {
    if (item.value().is_floating_point()) item.value().set_data(item.value().to(dtype));
  }
}

at::ScalarType NeuralSplineFlow::dtype() const { return module_->theta_mean.scalar_type(); }

std::shared_ptr<torch::nn::Module> NeuralSplineFlow::module() const { return module_; }

// --- importance sampling ---------------------------------------------------------------

ImportanceResult summarize_weights(at::Tensor samples, at::Tensor log_weights) {
  HPCML_CHECK_AS(ConfigError, log_weights.dim() == 1 && log_weights.size(0) >= 1,
                 "summarize_weights: log_weights: expected shape (n >= 1), found ", shape_of(log_weights));
  ImportanceResult r;
  r.samples = std::move(samples);
  r.log_weights = log_weights.to(at::kDouble);
  HPCML_CHECK(!at::isnan(r.log_weights).any().item<bool>(), "summarize_weights: log_weights: found NaN");
  const auto n = static_cast<double>(r.log_weights.size(0));
  const double lse = at::logsumexp(r.log_weights, 0).item<double>();
  if (!std::isfinite(lse)) {  // every sample outside the support
    r.weights = at::zeros_like(r.log_weights);
    r.log_evidence = -std::numeric_limits<double>::infinity();
    return r;
  }
  r.weights = at::exp(r.log_weights - lse);
  r.ess = 1.0 / (r.weights * r.weights).sum().item<double>();
  r.efficiency = r.ess / n;
  r.log_evidence = lse - std::log(n);
  return r;
}

ImportanceResult importance_sample(NeuralSplineFlow& flow, const at::Tensor& strain, int64_t n,
                                   const LogTarget& log_target, std::optional<at::Generator> generator) {
  const at::Tensor s = strain.dim() == 1 ? strain.unsqueeze(0) : strain;
  HPCML_CHECK_AS(ConfigError, s.dim() == 2 && s.size(0) == 1,
                 "importance_sample: strain: expected shape (T) or (1, T), found ", shape_of(strain));
  at::NoGradGuard no_grad;
  const auto drawn = flow.sample_and_log_prob(s, n, std::move(generator));
  const auto samples = drawn.samples[0];
  const auto target = log_target(samples).to(at::kDouble);
  HPCML_CHECK_AS(ConfigError, target.dim() == 1 && target.size(0) == n,
                 "importance_sample: log_target: expected shape (", n, "), found ", shape_of(target));
  ImportanceResult r = summarize_weights(samples, target - drawn.log_prob[0].to(at::kDouble));
  r.log_prob = drawn.log_prob[0];
  return r;
}

// --- the toy GW model ------------------------------------------------------------------

namespace {

void check_gw_theta(const at::Tensor& theta, const char* what) {
  HPCML_CHECK_AS(ConfigError, theta.dim() == 2 && theta.size(1) == 5, what,
                 ": theta: expected shape (n, 5) [chirp_mass, mass_ratio, distance, t_c, phase], found ",
                 shape_of(theta));
}

}  // namespace

at::Tensor GwPrior::log_prob(const at::Tensor& theta) const {
  check_gw_theta(theta, "GwPrior::log_prob");
  const auto t = theta.to(at::kDouble);
  const auto mc = t.select(1, 0), q = t.select(1, 1), d = t.select(1, 2), tc = t.select(1, 3), ph = t.select(1, 4);
  auto between = [](const at::Tensor& x, double a, double b) { return at::logical_and(x >= a, x <= b); };
  auto inside = between(mc, o_.chirp_mass_min, o_.chirp_mass_max);
  inside = at::logical_and(inside, between(q, o_.mass_ratio_min, o_.mass_ratio_max));
  inside = at::logical_and(inside, between(d, o_.distance_min, o_.distance_max));
  inside = at::logical_and(inside, between(tc, o_.tc_min, o_.tc_max));
  inside = at::logical_and(inside, at::logical_and(ph >= 0, ph < 2 * M_PI));
  const double volume = std::pow(o_.distance_max, 3) - std::pow(o_.distance_min, 3);
  const double constant = -std::log(o_.chirp_mass_max - o_.chirp_mass_min) -
                          std::log(o_.mass_ratio_max - o_.mass_ratio_min) - std::log(o_.tc_max - o_.tc_min) -
                          std::log(2 * M_PI) + std::log(3.0 / volume);
  const auto value = constant + 2 * at::log(at::clamp_min(d, 1e-300));
  return at::where(inside, value, at::full_like(value, -std::numeric_limits<double>::infinity()));
}

at::Tensor GwPrior::sample(int64_t n, std::optional<at::Generator> generator) const {
  const auto g = to_c10(generator);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  auto u = [&](double a, double b) { return at::rand({n}, g, opts) * (b - a) + a; };
  const auto mc = u(o_.chirp_mass_min, o_.chirp_mass_max), q = u(o_.mass_ratio_min, o_.mass_ratio_max);
  const auto d = at::pow(u(std::pow(o_.distance_min, 3), std::pow(o_.distance_max, 3)), 1.0 / 3.0);
  const auto tc = u(o_.tc_min, o_.tc_max), ph = u(0, 2 * M_PI);
  return at::stack({mc, q, d, tc, ph}, 1);
}

at::Tensor gw_whitened_template(const at::Tensor& theta, const io::gw::GwOptions& o) {
  check_gw_theta(theta, "gw_whitened_template");
  const int64_t len = o.length;
  HPCML_CHECK_AS(ConfigError, len > 1 && (len & (len - 1)) == 0,
                 "gw_whitened_template: length: expected a power of two >= 2, found ", len);
  const auto t = theta.to(at::kDouble).contiguous();
  const int64_t n = t.size(0);
  const double fs = o.sample_rate, df = fs / static_cast<double>(len);
  std::vector<double> scale(static_cast<size_t>(len / 2 + 1));
  for (int64_t k = 0; k <= len / 2; ++k) {
    const double f = static_cast<double>(k) * df;
    scale[static_cast<size_t>(k)] = f < o.f_low ? 0.0 : 1.0 / std::sqrt(fs * io::gw::gw_psd(f, o.f_low) / 2);
  }
  const auto window = io::gw::tukey_window(len, 0.1);  // as datagen gw
  auto out = at::empty({n, len}, at::TensorOptions().dtype(at::kDouble));
  const double* p = t.data_ptr<double>();
  double* w = out.data_ptr<double>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> re(static_cast<size_t>(len)), im(static_cast<size_t>(len));
    for (int64_t e = begin; e < end; ++e) {
      const double* th = p + 5 * e;
      io::gw::gw_waveform(th[0], th[1], th[2], th[3], th[4], fs, /*f_min=*/o.f_low * 0.5, re);
      for (int64_t i = 0; i < len; ++i) re[static_cast<size_t>(i)] *= window[static_cast<size_t>(i)];
      std::fill(im.begin(), im.end(), 0.0);
      io::gw::fft(re, im, /*inverse=*/false);
      for (int64_t k = 0; k < len; ++k) {
        const double s = scale[static_cast<size_t>(k <= len / 2 ? k : len - k)];
        re[static_cast<size_t>(k)] *= s, im[static_cast<size_t>(k)] *= s;
      }
      io::gw::fft(re, im, /*inverse=*/true);
      for (int64_t i = 0; i < len; ++i) w[e * len + i] = re[static_cast<size_t>(i)] / static_cast<double>(len);
    }
  });
  return out;
}

at::Tensor gw_log_likelihood(const at::Tensor& theta, const at::Tensor& strain, const io::gw::GwOptions& o) {
  const at::Tensor d = strain.dim() == 2 && strain.size(0) == 1 ? strain[0] : strain;
  HPCML_CHECK_AS(ConfigError, d.dim() == 1 && d.size(0) == o.length, "gw_log_likelihood: strain: expected shape (",
                 o.length, ") or (1, ", o.length, "), found ", shape_of(strain));
  const auto r = d.to(at::kDouble).unsqueeze(0) - gw_whitened_template(theta, o);
  return -0.5 * (r * r).sum(1) - 0.5 * static_cast<double>(o.length) * std::log(2 * M_PI);
}

PhaseDraws gw_draw_phase(const at::Tensor& theta4, const at::Tensor& strain, const io::gw::GwOptions& o,
                         int64_t cells, at::Generator& generator) {
  HPCML_CHECK_AS(ConfigError, theta4.dim() == 2 && theta4.size(1) == 4, "gw_draw_phase: theta4: expected shape (n, 4) "
                 "[chirp_mass, mass_ratio, distance, t_c], found ", shape_of(theta4));
  HPCML_CHECK_AS(ConfigError, cells >= 2, "gw_draw_phase: cells: expected at least 2, found ", cells);
  const at::Tensor d = (strain.dim() == 2 && strain.size(0) == 1 ? strain[0] : strain).to(at::kDouble);
  HPCML_CHECK_AS(ConfigError, d.dim() == 1 && d.size(0) == o.length, "gw_draw_phase: strain: expected shape (",
                 o.length, ") or (1, ", o.length, "), found ", shape_of(strain));
  at::NoGradGuard no_grad;
  const int64_t n = theta4.size(0);
  const auto t4 = theta4.to(at::kDouble);
  auto with_phase = [&](double phase) { return at::cat({t4, at::full({n, 1}, phase, t4.options())}, 1); };
  // w(φ) = cos φ a + sin φ b, so -½‖d - w(φ)‖² = -½‖d‖² + c⟨d,a⟩ + s⟨d,b⟩ - ½(c²‖a‖² + s²‖b‖² + 2cs⟨a,b⟩).
  const auto a = gw_whitened_template(with_phase(0.0), o), b = gw_whitened_template(with_phase(M_PI / 2), o);
  const auto da = a.matmul(d), db = b.matmul(d);
  const auto aa = (a * a).sum(1), bb = (b * b).sum(1), ab = (a * b).sum(1);
  const double constant = -0.5 * d.dot(d).item<double>() - 0.5 * static_cast<double>(o.length) * std::log(2 * M_PI);
  auto log_l = [&](const at::Tensor& c, const at::Tensor& s, const at::Tensor& rows) {
    auto col = [&](const at::Tensor& x) { return x.index_select(0, rows).unsqueeze(1); };
    return constant + col(da) * c + col(db) * s - 0.5 * (col(aa) * c * c + col(bb) * s * s + 2 * col(ab) * c * s);
  };
  const double h = 2 * M_PI / static_cast<double>(cells);
  const auto centres = (at::arange(cells, at::kDouble) + 0.5) * h;
  const auto cos_grid = centres.cos().unsqueeze(0), sin_grid = centres.sin().unsqueeze(0);
  PhaseDraws out;
  out.phase = at::empty({n}, at::kDouble);
  out.log_prob = at::empty({n}, at::kDouble);
  constexpr int64_t kChunk = 512;  // rows at once: kChunk x cells doubles
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t size = std::min(kChunk, n - begin);
    const auto rows = at::arange(begin, begin + size, at::kLong);
    const auto grid = log_l(cos_grid, sin_grid, rows);  // (size, cells)
    const auto lse = at::logsumexp(grid, 1, /*keepdim=*/true);
    const auto cell = at::multinomial(at::exp(grid - lse), 1, /*replacement=*/false, generator);  // (size, 1)
    const auto u = at::rand({size}, generator, at::TensorOptions().dtype(at::kDouble));
    out.phase.narrow(0, begin, size).copy_((cell.squeeze(1).to(at::kDouble) + u) * h);
    out.log_prob.narrow(0, begin, size).copy_((grid.gather(1, cell) - lse).squeeze(1) - std::log(h));
  }
  const auto all = at::arange(n, at::kLong);
  out.log_likelihood = log_l(out.phase.cos().unsqueeze(1), out.phase.sin().unsqueeze(1), all).squeeze(1);
  return out;
}

TimeAligner::TimeAligner(at::Tensor reference, at::Tensor window)
    : reference_(reference.to(at::kDouble)), window_(window.to(at::kDouble).contiguous()) {
  HPCML_CHECK_AS(ConfigError, reference_.dim() == 2 && reference_.size(0) == 2 && window_.numel() == 4,
                 "TimeAligner: expected a (2, T) reference and a (4,) window, found ", shape_of(reference_), " and ",
                 shape_of(window_));
}

TimeAlignment TimeAligner::align(const at::Tensor& strain) const {
  const int64_t length = reference_.size(1);
  HPCML_CHECK_AS(ConfigError, strain.dim() == 2 && strain.size(1) == length,
                 "TimeAligner::align: strain: expected shape (B, ", length, "), found ", shape_of(strain));
  at::NoGradGuard no_grad;
  const double* w = window_.data_ptr<double>();
  const double fs = w[0], t_ref = w[1];
  const auto lo = static_cast<int64_t>(std::floor(w[2] * fs)), hi = static_cast<int64_t>(std::ceil(w[3] * fs));
  const auto d = strain.to(at::kDouble);
  // corr_k[τ] = Σ_t d[t + τ] r_k[t] (circular): irfft(D · conj(R_k)).
  const auto spectrum = at::fft_rfft(d, length, -1).unsqueeze(1);                  // (B, 1, F)
  const auto reference = at::fft_rfft(reference_.to(d.device()), length, -1).conj();  // (2, F)
  const auto corr = at::fft_irfft(spectrum * reference.unsqueeze(0), length, -1);    // (B, 2, T)
  const auto power = (corr * corr).sum(1);                                            // (B, T)
  const auto lags = at::arange(lo, hi + 1, at::TensorOptions().dtype(at::kLong).device(d.device()));
  const auto best = power.index_select(1, at::remainder(lags, length)).argmax(1);      // (B,)
  const auto tau = lags.index_select(0, best);                                         // (B,)
  const auto index = at::remainder(at::arange(length, lags.options()).unsqueeze(0) + tau.unsqueeze(1), length);
  TimeAlignment out;
  out.aligned = strain.gather(1, index);
  out.t_hat = tau.to(at::kDouble) / fs + t_ref;
  return out;
}

std::pair<at::Tensor, at::Tensor> gw_time_reference(const io::gw::GwOptions& o) {
  const double mc = 0.5 * (o.chirp_mass_min + o.chirp_mass_max), q = 0.5 * (o.mass_ratio_min + o.mass_ratio_max);
  const double t_ref = 0.5 * (o.tc_min + o.tc_max), margin = 0.1;
  const auto theta = at::tensor({mc, q, 1000.0, t_ref, 0.0, mc, q, 1000.0, t_ref, M_PI / 2}, at::kDouble).view({2, 5});
  const auto window = at::tensor({o.sample_rate, t_ref, o.tc_min - t_ref - margin, o.tc_max - t_ref + margin},
                                 at::kDouble);
  return {gw_whitened_template(theta, o), window};
}

ImportanceResult gw_importance_sample(NeuralSplineFlow& flow, const at::Tensor& strain, int64_t n,
                                      const io::gw::GwOptions& o, std::optional<at::Generator> generator,
                                      const TimeAligner* aligner) {
  const GwPrior prior(o);
  const int64_t dims = flow.options().theta_dim;
  HPCML_CHECK_AS(ConfigError, dims == 5 || dims == 4, "gw_importance_sample: the flow's parameters: expected 5, or 4 "
                 "with the phase marginalised, found ", dims);
  const at::Tensor s = strain.dim() == 1 ? strain.unsqueeze(0) : strain;
  HPCML_CHECK_AS(ConfigError, s.dim() == 2 && s.size(0) == 1,
                 "gw_importance_sample: strain: expected shape (T) or (1, T), found ", shape_of(strain));
  at::Generator g = generator ? *generator : at::detail::getDefaultCPUGenerator();
  at::NoGradGuard no_grad;
  at::Tensor context = s;
  double t_hat = 0;
  if (aligner) {
    const auto a = aligner->align(s);
    context = a.aligned;
    t_hat = a.t_hat[0].item<double>();
  }
  const auto drawn = flow.sample_and_log_prob(context.to(flow.dtype()), n, g);
  auto proposed = drawn.samples[0].to(at::kDouble);
  proposed.select(1, 3).add_(t_hat);  // t_c = t̂ + (t_c − t̂); a shift, so log q is unchanged
  const auto log_q_flow = drawn.log_prob[0].to(at::kDouble);
  at::Tensor theta, log_q;
  if (dims == 5) {
    theta = proposed;
    log_q = log_q_flow;
  } else {  // rows outside the prior keep weight 0 and a uniform phase
    theta = at::cat({proposed, at::rand({n, 1}, g, proposed.options()) * (2 * M_PI)}, 1);
    log_q = log_q_flow - std::log(2 * M_PI);
  }
  auto log_target = prior.log_prob(theta);
  // The likelihood only where the prior is positive (the waveform is undefined for q <= 0).
  const auto idx = at::nonzero(at::isfinite(log_target)).squeeze(1);
  if (idx.numel() > 0 && dims == 5) {
    log_target.index_copy_(0, idx, log_target.index_select(0, idx) +
                                       gw_log_likelihood(theta.index_select(0, idx), s, o));
  } else if (idx.numel() > 0) {  // the phase from its exact conditional given θ₄
    const auto phase = gw_draw_phase(proposed.index_select(0, idx), s, o, kPhaseCells, g);
    theta.select(1, 4).index_copy_(0, idx, phase.phase);
    log_q.index_copy_(0, idx, log_q_flow.index_select(0, idx) + phase.log_prob);
    log_target.index_copy_(0, idx, log_target.index_select(0, idx) + phase.log_likelihood);
  }
  ImportanceResult r = summarize_weights(theta, log_target - log_q);
  r.log_prob = log_q;
  return r;
}

}  // namespace hpcml::models::flows
