#include "models/batch_norm.hpp"

#include "core/error.hpp"

namespace hpcml::models {

namespace {

// y = sum over ranks of x, and dL/dx = sum over ranks of dL/dy: the gradient of an
// allreduce is an allreduce of the gradients (the loss being the sum of the ranks').
struct AllreduceSum : torch::autograd::Function<AllreduceSum> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            collectives::Backend* group) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(group);
    at::Tensor sum = x.contiguous().clone();
    group->allreduce(sum);
    return sum;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* group = reinterpret_cast<collectives::Backend*>(ctx->saved_data["group"].toInt());
    at::Tensor sum = grads[0].contiguous().clone();
    group->allreduce(sum);
    return {sum, at::Tensor()};
  }
};

}  // namespace

BatchNormImpl::BatchNormImpl(int64_t features, double eps, double momentum)
    : features_(features), eps_(eps), momentum_(momentum) {
  weight = register_parameter("weight", torch::ones({features}));
  bias = register_parameter("bias", torch::zeros({features}));
  running_mean = register_buffer("running_mean", torch::zeros({features}));
  running_var = register_buffer("running_var", torch::ones({features}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
}

at::Tensor BatchNormImpl::forward(const at::Tensor& x) {
  HPCML_CHECK_AS(ConfigError, x.dim() >= 2 && x.size(1) == features_, "batch norm: expected an input (N, ",
                 features_, ", ...), found shape ", x.sizes());
  if (is_training()) {
    at::NoGradGuard no_grad;
    num_batches_tracked.add_(1);
  }
  if (!is_training() || !group_) {
    return at::batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum_, eps_,
                          /*cudnn_enabled=*/false);
  }
  return forward_synchronized(x);
}

// Per channel: the global count M, mean and biased variance from allreduced sums
// (taken in float64, so E[x^2] - E[x]^2 loses nothing that matters), then
// y = x * scale + shift with scale = weight / sqrt(var + eps). Autograd carries the
// gradient through the sums, so backward allreduces the terms that couple the ranks.
at::Tensor BatchNormImpl::forward_synchronized(const at::Tensor& x) {
  const int64_t c = features_;
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  const at::Tensor xd = x.to(at::kDouble);
  const double count = static_cast<double>(x.numel() / c);
  const at::Tensor local = at::cat({xd.sum(dims), xd.square().sum(dims), at::full({1}, count, at::kDouble)});
  const at::Tensor total = AllreduceSum::apply(local, group_.get());
  const double m = total[2 * c].item<double>();
  HPCML_CHECK(m > 1, "[rank ", group_->rank(), "/", group_->size(), "] sync batch norm: expected more than 1 value "
              "per channel over all ranks, found ", m, " (local input shape ", x.sizes(), ")");
  const at::Tensor mean = total.narrow(0, 0, c) / m;
  const at::Tensor var = (total.narrow(0, c, c) / m - mean.square()).clamp_min(0);
  {
    at::NoGradGuard no_grad;
    running_mean.mul_(1 - momentum_).add_(mean.to(at::kFloat), momentum_);
    running_var.mul_(1 - momentum_).add_((var * (m / (m - 1))).to(at::kFloat), momentum_);
  }
  const at::Tensor scale = (var + eps_).rsqrt().to(at::kFloat) * weight;
  const at::Tensor shift = bias - mean.to(at::kFloat) * scale;
  std::vector<int64_t> shape(x.dim(), 1);
  shape[1] = c;
  return x * scale.view(shape) + shift.view(shape);
}

int synchronize_batch_norms(torch::nn::Module& module, const collectives::BackendPtr& group) {
  int count = 0;
  for (const auto& child : module.modules(/*include_self=*/true)) {
    if (auto* bn = child->as<BatchNormImpl>()) {
      bn->synchronize(group);
      ++count;
    }
  }
  return count;
}

}  // namespace hpcml::models
