"""Neural spline flow twin of models/flows/nsf.cpp (docs/flows.md).

NeuralSplineFlow(**options).log_prob(theta (B, D), strain (B, T)) -> (B,) is the same
function as hpcml::models::flows::NeuralSplineFlow::log_prob, and inverse_transform
the same map z -> theta. state_dict keys equal the C++ named_parameters() and
named_buffers(): theta_mean, theta_std, embedding.projection.*, embedding.net.N.*,
steps.S.permutation, steps.S.lu.{lower,upper,unconstrained_diag,bias},
steps.S.coupling.net.N.*.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

LU_EPS = 1e-3


def _knots(unnormalised, min_size, bound):
    k = unnormalised.shape[-1]
    sizes = torch.softmax(unnormalised, -1)
    sizes = min_size + (1 - min_size * k) * sizes
    cum = 2 * bound * torch.cumsum(sizes, -1) - bound
    lead = cum.shape[:-1] + (1,)
    return torch.cat([torch.full(lead, -bound, dtype=cum.dtype), cum[..., :k - 1],
                      torch.full(lead, bound, dtype=cum.dtype)], -1)


def rq_spline(inputs, params, num_bins=8, tail_bound=3.0, min_bin_width=1e-3, min_bin_height=1e-3,
              min_derivative=1e-3, inverse=False):
    """Elementwise RQ spline with identity tails outside [-B, B]; (outputs, logabsdet) of inputs' shape."""
    k, b = num_bins, tail_bound
    cw = _knots(params[..., :k], min_bin_width, b)
    widths = cw[..., 1:] - cw[..., :-1]
    ch = _knots(params[..., k:2 * k], min_bin_height, b)
    heights = ch[..., 1:] - ch[..., :-1]
    interior = min_derivative + F.softplus(params[..., 2 * k:])
    ones = torch.ones(interior.shape[:-1] + (1,), dtype=interior.dtype)
    derivatives = torch.cat([ones, interior, ones], -1)

    inside = (inputs >= -b) & (inputs <= b)
    v = torch.clamp(inputs, -b, b)
    knots = ch if inverse else cw
    idx = (v.unsqueeze(-1) >= knots[..., 1:k]).sum(-1, keepdim=True)

    def take(t, i=idx):
        return t.gather(-1, i).squeeze(-1)

    xk, wk, yk, hk = take(cw), take(widths), take(ch), take(heights)
    dk, dk1 = take(derivatives), take(derivatives, idx + 1)
    s = hk / wk
    curvature = dk1 + dk - 2 * s
    if not inverse:
        xi = (v - xk) / wk
        t = xi * (1 - xi)
        out = yk + hk * (s * xi * xi + dk * t) / (s + curvature * t)
    else:
        dy = v - yk
        qa = hk * (s - dk) + dy * curvature
        qb = hk * dk - dy * curvature
        qc = -s * dy
        disc = torch.clamp_min(qb * qb - 4 * qa * qc, 0)
        xi = (2 * qc) / (-qb - torch.sqrt(disc))
        out = xi * wk + xk
    t = xi * (1 - xi)
    denom = s + curvature * t
    deriv_num = s * s * (dk1 * xi * xi + 2 * s * t + dk * (1 - xi) * (1 - xi))
    lad = torch.log(deriv_num) - 2 * torch.log(denom)
    if inverse:
        lad = -lad
    return torch.where(inside, out, inputs), torch.where(inside, lad, torch.zeros_like(lad))


def _mlp(inputs, hidden, outputs):
    layers = []
    for h in hidden:
        layers += [nn.Linear(inputs, h), nn.ELU()]
        inputs = h
    layers.append(nn.Linear(inputs, outputs))
    return nn.Sequential(*layers)


class Embedding(nn.Module):
    def __init__(self, strain_length, n_basis, embedding_hidden, context_dim):
        super().__init__()
        self.projection = nn.Linear(strain_length, n_basis)
        self.net = _mlp(n_basis, embedding_hidden, context_dim)

    def forward(self, strain):
        return self.net(self.projection(strain))


class LuLinear(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lower = nn.Parameter(torch.zeros(d, d))
        self.upper = nn.Parameter(torch.zeros(d, d))
        self.unconstrained_diag = nn.Parameter(torch.full((d,), math.log(math.expm1(1 - LU_EPS))))
        self.bias = nn.Parameter(torch.zeros(d))

    def diag(self):
        return F.softplus(self.unconstrained_diag) + LU_EPS

    def l(self):
        return torch.tril(self.lower, -1) + torch.eye(self.lower.shape[0], dtype=self.lower.dtype)

    def u(self):
        return torch.triu(self.upper, 1) + torch.diag(self.diag())

    def forward(self, x):
        y = x @ (self.l() @ self.u()).t() + self.bias
        return y, torch.log(self.diag()).sum().expand(x.shape[0])

    def inverse(self, y):
        w = torch.linalg.solve_triangular(self.l(), (y - self.bias).t(), upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(self.u(), w, upper=True)
        return x.t(), -torch.log(self.diag()).sum().expand(y.shape[0])


class Coupling(nn.Module):
    def __init__(self, theta_dim, step, context_dim, hidden, hidden_layers, spline):
        super().__init__()
        transformed = [j for j in range(theta_dim) if theta_dim == 1 or j % 2 == step % 2]
        identity = [j for j in range(theta_dim) if j not in transformed]
        self.spline = spline
        self.identity_idx = torch.tensor(identity, dtype=torch.long)
        self.transform_idx = torch.tensor(transformed, dtype=torch.long)
        per = 3 * spline["num_bins"] - 1
        self.net = _mlp(len(identity) + context_dim, [hidden] * hidden_layers, len(transformed) * per)

    def forward(self, x, context, inverse=False):
        cond = torch.cat([x.index_select(1, self.identity_idx), context], 1)
        params = self.net(cond).view(x.shape[0], len(self.transform_idx), 3 * self.spline["num_bins"] - 1)
        y, lad = rq_spline(x.index_select(1, self.transform_idx), params, inverse=inverse, **self.spline)
        return x.index_copy(1, self.transform_idx, y), lad.sum(1)


class FlowStep(nn.Module):
    def __init__(self, theta_dim, step, linear, context_dim, hidden, hidden_layers, spline):
        super().__init__()
        self.register_buffer("permutation", torch.randperm(theta_dim))
        self.lu = LuLinear(theta_dim) if linear == "lu" else None
        self.coupling = Coupling(theta_dim, step, context_dim, hidden, hidden_layers, spline)

    def forward(self, x, context):
        x = x.index_select(1, self.permutation)
        lad = torch.zeros(x.shape[0], dtype=x.dtype)
        if self.lu is not None:
            x, l = self.lu(x)
            lad = lad + l
        x, c = self.coupling(x, context)
        return x, lad + c

    def inverse(self, z, context):
        x, lad = self.coupling(z, context, inverse=True)
        if self.lu is not None:
            x, l = self.lu.inverse(x)
            lad = lad + l
        return x.index_select(1, torch.argsort(self.permutation)), lad


class NeuralSplineFlow(nn.Module):
    """Options as hpcml::models::flows::NsfOptions (spline options flattened)."""

    def __init__(self, theta_dim=5, strain_length=2048, num_steps=5, num_bins=8, tail_bound=3.0, hidden=128,
                 hidden_layers=2, linear="lu", n_basis=64, embedding_hidden=(256, 128), context_dim=32,
                 min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3):
        super().__init__()
        if linear not in ("lu", "permutation"):
            raise ValueError(f"linear: expected one of [lu, permutation], found '{linear}'")
        spline = dict(num_bins=num_bins, tail_bound=tail_bound, min_bin_width=min_bin_width,
                      min_bin_height=min_bin_height, min_derivative=min_derivative)
        self.theta_dim, self.strain_length = theta_dim, strain_length
        self.register_buffer("theta_mean", torch.zeros(theta_dim))
        self.register_buffer("theta_std", torch.ones(theta_dim))
        self.embedding = Embedding(strain_length, n_basis, list(embedding_hidden), context_dim)
        self.steps = nn.ModuleList(FlowStep(theta_dim, s, linear, context_dim, hidden, hidden_layers, spline)
                                   for s in range(num_steps))

    def forward_transform(self, theta, context):
        x = (theta - self.theta_mean) / self.theta_std
        lad = (-torch.log(self.theta_std).sum()).expand(x.shape[0])
        for step in self.steps:
            x, l = step(x, context)
            lad = lad + l
        return x, lad

    def inverse_transform(self, z, context):
        x, lad = z, torch.zeros(z.shape[0], dtype=z.dtype)
        for step in reversed(self.steps):
            x, l = step.inverse(x, context)
            lad = lad + l
        return x * self.theta_std + self.theta_mean, lad + torch.log(self.theta_std).sum()

    def log_prob(self, theta, strain):
        z, lad = self.forward_transform(theta, self.embedding(strain))
        return -0.5 * (z * z).sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi) + lad

    def forward(self, theta, strain):
        return self.log_prob(theta, strain)

    @torch.no_grad()
    def sample(self, strain, n):
        context = self.embedding(strain).repeat_interleave(n, 0)
        z = torch.randn(strain.shape[0] * n, self.theta_dim, dtype=strain.dtype)
        theta, _ = self.inverse_transform(z, context)
        return theta.view(strain.shape[0], n, self.theta_dim)


OPTION_TYPES = {"theta_dim": int, "strain_length": int, "num_steps": int, "num_bins": int, "tail_bound": float,
                "hidden": int, "hidden_layers": int, "linear": str, "n_basis": int, "context_dim": int}


def load_nsf(h5_path):
    """The twin built from the root attributes of an nsf dump (tests/support/nsf_dump.cpp)
    with every parameter and buffer read from it, in the file's dtype.

    Strict, as models.twins.load.load_twin: a missing or unexpected name, or a shape
    mismatch, raises ValueError naming them (names starting "__" are ignored).
    """
    import h5py
    import numpy as np

    with h5py.File(h5_path, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}
        options = {k: t(attrs[k]) for k, t in OPTION_TYPES.items()}
        options["embedding_hidden"] = [int(v) for v in attrs["embedding_hidden"].split(",") if v]
        dtype = torch.float64 if attrs.get("dtype") == "float64" else torch.float32
        model = NeuralSplineFlow(**options).to(dtype)
        expected = model.state_dict()
        found = {k for k in f.keys() if not k.startswith("__")}
        missing, extra = sorted(set(expected) - found), sorted(found - set(expected))
        if missing or extra:
            raise ValueError(f"{h5_path}: weights do not match the nsf twin: missing {missing}, unexpected {extra}")
        state = {}
        for key, ref in expected.items():
            data = np.asarray(f[key][()])
            if tuple(data.shape) != tuple(ref.shape):
                raise ValueError(f"{h5_path}: '{key}' has shape {tuple(data.shape)}, "
                                 f"the twin expects {tuple(ref.shape)}")
            state[key] = torch.from_numpy(data).to(ref.dtype)
    model.load_state_dict(state, strict=True)
    return model
