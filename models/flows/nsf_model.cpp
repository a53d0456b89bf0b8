#include "models/flows/nsf_model.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/error.hpp"
#include "io/hdf5.hpp"

namespace hpcml::models::flows {

NsfModel::NsfModel(const NsfOptions& options, bool marginalize_phase, bool align_time)
    : flow_(options), marginalize_phase_(marginalize_phase) {
  HPCML_CHECK_AS(ConfigError, !align_time || options.theta_dim >= 4, "nsf-gw: time alignment needs t_c, the 4th "
                 "parameter; found a flow of ", options.theta_dim);
  if (align_time) {
    time_reference_ = at::zeros({2, options.strain_length}, at::kFloat);
    time_window_ = at::zeros({4}, at::kDouble);
  }
}

std::vector<NamedTensor> NsfModel::named_buffers() const {
  auto buffers = flow_.named_buffers();
  if (align_time()) {
    buffers.emplace_back("time_reference", time_reference_);
    buffers.emplace_back("time_window", time_window_);
  }
  return buffers;
}

TimeAligner NsfModel::aligner() const {
  HPCML_CHECK(align_time(), "nsf-gw: aligner() without time alignment");
  return TimeAligner(time_reference_, time_window_);
}

void NsfModel::set_time_reference(const std::pair<at::Tensor, at::Tensor>& reference) {
  HPCML_CHECK(align_time(), "nsf-gw: set_time_reference() without time alignment");
  at::NoGradGuard no_grad;
  time_reference_.copy_(reference.first);
  time_window_.copy_(reference.second);
}

std::pair<at::Tensor, at::Tensor> NsfModel::flow_inputs(const at::Tensor& theta, const at::Tensor& strain) const {
  const int64_t dims = flow_.options().theta_dim, given = marginalize_phase_ ? dims + 1 : dims;
  HPCML_CHECK_AS(ConfigError, theta.dim() == 2 && theta.size(1) == given, "nsf-gw: input 'theta': expected shape (B, ",
                 given, ")", marginalize_phase_ ? " (the phase, last, is marginalised)" : "", ", found ", theta.sizes());
  const auto t = marginalize_phase_ ? theta.narrow(1, 0, dims) : theta;
  if (!align_time()) return {t, strain};
  const auto a = aligner().align(strain);
  auto shifted = t.to(at::kDouble);  // t_c − t̂ in float64, then the input's dtype
  shifted.select(1, 3).sub_(a.t_hat.to(shifted.device()));
  return {shifted.to(theta.scalar_type()), a.aligned};
}

at::Tensor NsfModel::forward(const Inputs& inputs) {
  const auto& theta = input(inputs, "theta", name());
  at::Tensor strain = input(inputs, "strain", name());
  if (training_ && fresh_noise_) {
    const auto& signal = input(inputs, "signal", name());
    at::NoGradGuard no_grad;
    strain = repair_noise(signal, strain, at::randperm(strain.size(0), at::kLong));
  }
  const auto [t, s] = flow_inputs(theta, strain);
  return flow_.log_prob(t.to(flow_.dtype()), s.to(flow_.dtype()));
}

at::Tensor repair_noise(const at::Tensor& signal, const at::Tensor& strain, const at::Tensor& permutation) {
  HPCML_CHECK_AS(ConfigError, signal.sizes() == strain.sizes() && strain.dim() == 2 &&
                                  permutation.numel() == strain.size(0),
                 "nsf-gw fresh noise: input 'signal': expected the shape of 'strain' ", strain.sizes(), ", found ",
                 signal.sizes());
  return signal + (strain - signal).index_select(0, permutation);
}

std::unique_ptr<Model> make_nsf_gw(uint64_t seed) {
  NsfOptions o;
  o.seed = seed;
  return std::make_unique<NsfModel>(o);
}

namespace {

double parse_number(const std::string& text, const std::string& path, const std::string& attribute) {
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  HPCML_THROW(IoError, "file '", path, "': attribute '", attribute, "': expected a number, found '", text, "'");
}

// "a,b" -> (a, b).
std::pair<double, double> parse_range(const io::h5::File& file, const std::string& attribute) {
  const std::string text = io::h5::read_string_attribute(file.get(), attribute, file.path());
  const auto comma = text.find(',');
  HPCML_CHECK_AS(IoError, comma != std::string::npos, "file '", file.path(), "': attribute '", attribute,
                 "': expected 'min,max', found '", text, "'");
  // A note may follow the range: "300,3000 (uniform in volume)".
  const std::string high = text.substr(comma + 1);
  return {parse_number(text.substr(0, comma), file.path(), attribute),
          parse_number(high.substr(0, high.find(' ')), file.path(), attribute)};
}

}  // namespace

io::gw::GwOptions gw_options_from_file(const std::string& path) {
  const auto file = io::h5::File::open(path);
  auto number = [&](const std::string& attribute) {
    return parse_number(io::h5::read_string_attribute(file.get(), attribute, path), path, attribute);
  };
  io::gw::GwOptions o;
  o.sample_rate = number("gw.sample_rate_Hz");
  o.length = static_cast<int64_t>(number("gw.length"));
  o.f_low = number("gw.f_low_Hz");
  std::tie(o.chirp_mass_min, o.chirp_mass_max) = parse_range(file, "gw.prior.chirp_mass_M_sun");
  std::tie(o.mass_ratio_min, o.mass_ratio_max) = parse_range(file, "gw.prior.mass_ratio");
  std::tie(o.distance_min, o.distance_max) = parse_range(file, "gw.prior.distance_Mpc");
  std::tie(o.tc_min, o.tc_max) = parse_range(file, "gw.prior.t_c_s");
  return o;
}

void prepare_gw_flow(NsfModel& model, const at::Tensor& theta, const at::Tensor& strain, int64_t waveforms,
                     const io::gw::GwOptions& gw) {
  auto& flow = model.flow();
  const int64_t n = theta.size(0);
  HPCML_CHECK_AS(ConfigError, waveforms >= flow.options().n_basis && n >= waveforms,
                 "config error: key 'model.flow.svd_waveforms': expected at least model.flow.basis (",
                 flow.options().n_basis, ") and at most the training rows (", n, "), found ", waveforms);
  at::NoGradGuard no_grad;
  HPCML_CHECK_AS(ConfigError, theta.dim() == 2 && theta.size(1) == 5 && flow.options().theta_dim <= 5,
                 "prepare_gw_flow: theta: expected shape (N, 5) and a flow of at most 5 parameters, found ",
                 theta.sizes(), " and ", flow.options().theta_dim);
  const int64_t dims = flow.options().theta_dim;
  const auto t = theta.narrow(1, 0, dims).to(at::kDouble);
  auto mean = t.mean(0), std = t.std(0, /*unbiased=*/false);
  auto templates = gw_whitened_template(theta.narrow(0, 0, waveforms).to(at::kDouble), gw);
  if (model.align_time()) {
    HPCML_CHECK_AS(ConfigError, strain.dim() == 2 && strain.size(0) >= waveforms && strain.size(1) == gw.length,
                   "prepare_gw_flow: strain: expected shape (>= ", waveforms, ", ", gw.length, "), found ",
                   strain.sizes());
    model.set_time_reference(gw_time_reference(gw));
    const auto aligner = model.aligner();
    const auto offset = t.narrow(0, 0, waveforms).select(1, 3) -
                        aligner.align(strain.narrow(0, 0, waveforms)).t_hat;  // t_c − t̂
    mean[3] = offset.mean();
    std[3] = offset.std(0, /*unbiased=*/false).clamp_min(1.0 / gw.sample_rate);
    templates = aligner.align(templates).aligned;
  }
  flow.set_standardization(mean, std);
  flow.init_projection_from_svd(templates);
}

Calibration::Calibration(int64_t theta_dim, const CalibrationOptions& options)
    : dims_(theta_dim), o_(options), sums_(at::zeros({1 + theta_dim * options.bins + 2 * options.width_bins},
                                                     at::kDouble)) {
  HPCML_CHECK_AS(ConfigError, o_.samples >= 2 && o_.bins >= 2 && o_.width_bins >= 1 && o_.prior_width > 0,
                 "Calibration: expected samples >= 2, bins >= 2, width_bins >= 1, prior_width > 0, found ", o_.samples,
                 ", ", o_.bins, ", ", o_.width_bins, ", ", o_.prior_width);
}

void Calibration::add(NeuralSplineFlow& flow, const at::Tensor& theta, const at::Tensor& strain,
                      at::Generator& generator) {
  at::NoGradGuard no_grad;
  HPCML_CHECK_AS(ConfigError, theta.dim() == 2 && theta.size(1) == dims_ && strain.size(0) == theta.size(0),
                 "Calibration::add: theta: expected shape (", strain.size(0), ", ", dims_, "), found ", theta.sizes());
  const int64_t n = o_.samples;
  const int64_t lo90 = std::llround(0.05 * static_cast<double>(n - 1)), hi90 = std::llround(0.95 * static_cast<double>(n - 1));
  const int64_t lo50 = std::llround(0.25 * static_cast<double>(n - 1)), hi50 = std::llround(0.75 * static_cast<double>(n - 1));
  for (int64_t begin = 0; begin < theta.size(0); begin += o_.chunk) {
    const int64_t size = std::min(o_.chunk, theta.size(0) - begin);
    const auto t = theta.narrow(0, begin, size).to(at::kDouble);
    const auto samples = flow.sample(strain.narrow(0, begin, size).to(flow.dtype()), n, generator).to(at::kDouble);
    // The credible level of the truth in each marginal: the fraction of draws below it.
    const auto level = samples.lt(t.unsqueeze(1)).to(at::kDouble).mean(1);  // (size, D)
    const auto bin = (level * static_cast<double>(o_.bins)).floor().to(at::kLong).clamp(0, o_.bins - 1);
    const auto offsets = at::arange(dims_, at::kLong).mul(o_.bins).unsqueeze(0);
    sums_.narrow(0, 1, dims_ * o_.bins).index_add_(0, (bin + offsets).reshape(-1), at::ones({size * dims_}, at::kDouble));
    const auto sorted = std::get<0>(samples.select(2, o_.width_parameter).sort(1));
    auto width_bin = [&](int64_t lo, int64_t hi) {
      const auto width = (sorted.select(1, hi) - sorted.select(1, lo)) / o_.prior_width;
      return (width * static_cast<double>(o_.width_bins)).floor().to(at::kLong).clamp(0, o_.width_bins - 1);
    };
    const int64_t widths = 1 + dims_ * o_.bins;
    sums_.narrow(0, widths, o_.width_bins).index_add_(0, width_bin(lo90, hi90), at::ones({size}, at::kDouble));
    sums_.narrow(0, widths + o_.width_bins, o_.width_bins)
        .index_add_(0, width_bin(lo50, hi50), at::ones({size}, at::kDouble));
    sums_[0] += static_cast<double>(size);
  }
}

double ks_p_value(double distance, double n) {
  if (n <= 0) return 1.0;
  const double root = std::sqrt(n);
  const double lambda = (root + 0.12 + 0.11 / root) * distance;
  if (lambda < 0.2) return 1.0;
  double sum = 0;
  for (int k = 1; k <= 100; ++k) {
    const double term = std::exp(-2.0 * k * k * lambda * lambda);
    sum += (k % 2 == 1 ? 1.0 : -1.0) * term;
    if (term < 1e-16) break;
  }
  return std::clamp(2.0 * sum, 0.0, 1.0);
}

CalibrationResult Calibration::result() const {
  const auto s = sums_.contiguous();
  const double* v = s.data_ptr<double>();
  CalibrationResult r;
  r.events = v[0];
  if (r.events <= 0) return r;
  const int64_t b25 = std::llround(0.25 * o_.bins), b75 = std::llround(0.75 * o_.bins);
  const int64_t b05 = std::llround(0.05 * o_.bins), b95 = std::llround(0.95 * o_.bins);
  for (int64_t d = 0; d < dims_; ++d) {
    const double* h = v + 1 + d * o_.bins;
    std::vector<double> cdf{0.0};
    double inside50 = 0, inside90 = 0, ks = 0;
    for (int64_t b = 0; b < o_.bins; ++b) {
      cdf.push_back(cdf.back() + h[b] / r.events);
      if (b >= b25 && b < b75) inside50 += h[b];
      if (b >= b05 && b < b95) inside90 += h[b];
      ks = std::max(ks, std::abs(cdf.back() - static_cast<double>(b + 1) / static_cast<double>(o_.bins)));
    }
    r.coverage_50.push_back(inside50 / r.events);
    r.coverage_90.push_back(inside90 / r.events);
    r.pp.push_back(std::move(cdf));
    r.ks_distance.push_back(ks);
    r.ks_p.push_back(ks_p_value(ks, r.events));
  }
  auto median = [&](const double* h) {
    double seen = 0;
    for (int64_t b = 0; b < o_.width_bins; ++b) {
      seen += h[b];
      if (seen >= 0.5 * r.events) return (static_cast<double>(b) + 0.5) / static_cast<double>(o_.width_bins);
    }
    return 1.0;
  };
  r.median_width_90 = median(v + 1 + dims_ * o_.bins);
  r.median_width_50 = median(v + 1 + dims_ * o_.bins + o_.width_bins);
  return r;
}

}  // namespace hpcml::models::flows
