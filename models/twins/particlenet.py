"""ParticleNet and ParticleNet-Lite twins of models/zoo/particlenet.cpp (jet tagging).

Inputs: particles (B, P, 4) float four-momenta (E, px, py, pz), zero-padded, and
mask (B, P) bool -> logits (B, 2). Channels-last: a bias-free 1x1 convolution is a
bias-free Linear on the last axis, BatchNorm1d runs over the flattened rows.
state_dict keys: bn_fts.*, edge_convs.N.{convs.M.weight, bns.M.*, sc.weight, sc_bn.*},
fc.0.* and fc.3.* (Linear).

The first edge convolution of [x_i, x_j - x_i] is evaluated as (W_a - W_b) x_i +
W_b x_j, per particle then gathered: the same function, k times fewer operations.
"""
import math

import torch
from torch import nn

FEATURES = 7
CLASSES = 2
FULL = dict(blocks=((16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))), fc=256)
LITE = dict(blocks=((7, (32, 32, 32)), (7, (64, 64, 64))), fc=128)


def batch_norm_last(bn, x):
    return bn(x.reshape(-1, x.shape[-1])).view(x.shape)


def knn(points, mask, k):
    """(B, P, k) indices of each particle's k nearest other particles; padded
    particles are never neighbours of real ones."""
    with torch.no_grad():
        p = points.detach()
        sq = p.pow(2).sum(-1)
        d = torch.baddbmm(sq.unsqueeze(2) + sq.unsqueeze(1), p, p.transpose(1, 2), beta=1, alpha=-2)
        d.masked_fill_(~mask.unsqueeze(1), 1e9)
        d.diagonal(0, 1, 2).fill_(float("inf"))
        return d.topk(k, -1, largest=False, sorted=True).indices


def gather_neighbours(x, index):
    b, p, c = x.shape
    offsets = (torch.arange(b, dtype=index.dtype) * p).view(b, 1, 1)
    return x.reshape(b * p, c).index_select(0, (index + offsets).reshape(-1)).view(b, p, index.shape[2], c)


class EdgeConv(nn.Module):
    def __init__(self, k, cin, channels):
        super().__init__()
        self.k = k
        widths = (2 * cin,) + tuple(channels)
        self.convs = nn.ModuleList(nn.Linear(widths[i], widths[i + 1], bias=False) for i in range(len(channels)))
        self.bns = nn.ModuleList(nn.BatchNorm1d(c) for c in channels)
        self.sc = nn.Linear(cin, channels[-1], bias=False)
        self.sc_bn = nn.BatchNorm1d(channels[-1])

    def forward(self, x, points, mask, m):
        index = knn(points, mask, self.k)
        cin = x.shape[2]
        w = self.convs[0].weight
        w_b = w[:, cin:]
        h = (x @ (w[:, :cin] - w_b).t()).unsqueeze(2) + gather_neighbours(x @ w_b.t(), index)
        for i, bn in enumerate(self.bns):
            if i > 0:
                h = self.convs[i](h)
            h = torch.relu(bn(h.reshape(-1, h.shape[-1])).view(h.shape))
        return torch.relu(h.mean(2) + batch_norm_last(self.sc_bn, self.sc(x))) * m


def jet_features(p4, m):
    """The 7 per-particle features relative to the jet and the (d_eta, d_phi) points."""
    tiny = 1e-8
    v = p4 * m
    e, px, py, pz = v.unbind(2)
    jet = v.sum(1)
    jet_e, jet_px, jet_py, jet_pz = (t.unsqueeze(1) for t in jet.unbind(1))
    jet_pt = (jet_px * jet_px + jet_py * jet_py).sqrt().clamp_min(tiny)
    pt = (px * px + py * py).sqrt().clamp_min(tiny)
    d_eta = torch.asinh(pz / pt) - torch.asinh(jet_pz / jet_pt)
    d_phi = torch.remainder(torch.atan2(py, px) - torch.atan2(jet_py, jet_px) + math.pi, 2 * math.pi) - math.pi
    log_pt, log_e = pt.log(), e.clamp_min(tiny).log()
    mask = m.squeeze(-1).unsqueeze(-1)
    features = torch.stack([d_eta, d_phi, log_pt, log_e, log_pt - jet_pt.log(), log_e - jet_e.clamp_min(tiny).log(),
                            (d_eta * d_eta + d_phi * d_phi).sqrt()], -1) * mask
    return features, torch.stack([d_eta, d_phi], -1) * mask


class ParticleNet(nn.Module):
    def __init__(self, blocks=FULL["blocks"], fc=FULL["fc"]):
        super().__init__()
        self.bn_fts = nn.BatchNorm1d(FEATURES)
        width = FEATURES
        convs = []
        for k, channels in blocks:
            convs.append(EdgeConv(k, width, channels))
            width = channels[-1]
        self.edge_convs = nn.ModuleList(convs)
        self.fc = nn.Sequential(nn.Linear(width, fc), nn.ReLU(), nn.Dropout(0.1), nn.Linear(fc, CLASSES))

    def forward(self, particles, mask):
        mask = mask.bool()
        m = mask.unsqueeze(-1).to(particles.dtype)
        features, points = jet_features(particles, m)
        x = batch_norm_last(self.bn_fts, features) * m
        for i, conv in enumerate(self.edge_convs):
            x = conv(x, points if i == 0 else x, mask, m)
        return self.fc(x.sum(1) / m.sum(1).clamp_min(1))


def particlenet():
    return ParticleNet(**FULL)


def particlenet_lite():
    return ParticleNet(**LITE)


def example_inputs(batch, seed=0, padded=100):
    """Random jets as models::example_inputs makes them (same distribution, not the same values)."""
    g = torch.Generator().manual_seed(seed)
    count = torch.randint(20, padded + 1, (batch, 1), generator=g)
    mask = torch.arange(padded).unsqueeze(0) < count
    pt = -torch.log1p(-torch.rand(batch, padded, generator=g)) * 10.0
    eta = torch.randn(batch, padded, generator=g) * 0.3 + torch.randn(batch, 1, generator=g)
    phi = torch.randn(batch, padded, generator=g) * 0.3
    p4 = torch.stack([pt * torch.cosh(eta), pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta)], -1)
    return {"particles": p4 * mask.unsqueeze(-1), "mask": mask}
