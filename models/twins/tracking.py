"""Python twin of the learned tracking stages of models/tracking/learned.cpp
(docs/tracking.md): the embedding MLP, the edge-filter MLP and the interaction network.

state_dict keys match the weights file `hpcml tracking train` writes
(run.dir/weights.h5): embedding.net.*, filter.net.*, gnn.{node_encoder, edge_encoder,
edge_network, node_network, output}.net.*. Every MLP is (Linear, LayerNorm, ReLU) per
hidden layer, then a Linear.

    from models.twins.tracking import load_pipeline
    twin = load_pipeline("runs/tracking/weights.h5").eval()
    x = node_features(hits)                      # (N, 6)
    emb = twin.embedding(x)                      # (N, d)
    filter_logits = twin.filter(x, edges)        # (E,)
    gnn_logits = twin.gnn(x, edges)              # (E,)

Graph construction (the Kokkos radius graph) and track building (connected components)
are not learned and have no twin here.
"""
import math

import h5py
import torch
from torch import nn

NODE_FEATURES = 6
EDGE_FEATURES = 2 * NODE_FEATURES + 6


def mlp(inputs, hidden, outputs):
    layers, width = [], inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


class Mlp(nn.Module):
    def __init__(self, inputs, hidden, outputs):
        super().__init__()
        self.net = mlp(inputs, hidden, outputs)

    def forward(self, x):
        return self.net(x)


def node_features(hits):
    """(N, 6): r (m), phi/pi, z (m), cos phi, sin phi, eta/2 from hits (N, 3) x, y, z in mm."""
    x, y, z = hits[:, 0], hits[:, 1], hits[:, 2] / 1000.0
    r = torch.sqrt(x * x + y * y) / 1000.0
    phi = torch.atan2(y, x)
    eta = torch.asinh(z / r.clamp_min(1e-6))
    return torch.stack([r, phi / math.pi, z, torch.cos(phi), torch.sin(phi), eta * 0.5], 1)


def edge_features(x, edges):
    """(E, 18): features of source and target, then dr, dphi/pi wrapped, dz, deta, phi slope, z0."""
    a, b = x.index_select(0, edges[0]), x.index_select(0, edges[1])
    d = b - a
    dr = d[:, 0]
    dphi = torch.remainder(d[:, 1] + 1.0, 2.0) - 1.0
    dz, deta = d[:, 2], d[:, 5]
    safe_dr = dr.clamp_min(0.01)
    slope = (dphi * 0.2 / safe_dr).clamp(-20.0, 20.0)
    z0 = ((a[:, 2] - a[:, 0] * dz / safe_dr) * 10.0).clamp(-20.0, 20.0)
    return torch.cat([a, b, torch.stack([dr, dphi, dz, deta, slope, z0], 1)], 1)


class EdgeFilter(Mlp):
    def __init__(self, hidden):
        super().__init__(EDGE_FEATURES, hidden, 1)

    def forward(self, x, edges):
        return self.net(edge_features(x, edges)).squeeze(-1)


class InteractionNetwork(nn.Module):
    """Residual edge and node updates with shared weights over `iterations` rounds;
    node updates sum the incoming and outgoing edge states with index_add."""

    def __init__(self, hidden=64, iterations=6):
        super().__init__()
        self.iterations = iterations
        self.node_encoder = Mlp(NODE_FEATURES, [hidden], hidden)
        self.edge_encoder = Mlp(EDGE_FEATURES, [hidden], hidden)
        self.edge_network = Mlp(3 * hidden, [hidden], hidden)
        self.node_network = Mlp(3 * hidden, [hidden], hidden)
        self.output = Mlp(3 * hidden, [hidden], 1)

    def forward(self, x, edges):
        src, dst = edges[0], edges[1]
        h = self.node_encoder(x)
        e = self.edge_encoder(edge_features(x, edges))
        for _ in range(self.iterations):
            e = e + self.edge_network(torch.cat([h.index_select(0, src), h.index_select(0, dst), e], 1))
            incoming = torch.zeros_like(h).index_add(0, dst, e)
            outgoing = torch.zeros_like(h).index_add(0, src, e)
            h = h + self.node_network(torch.cat([h, incoming, outgoing], 1))
        return self.output(torch.cat([h.index_select(0, src), h.index_select(0, dst), e], 1)).squeeze(-1)


class TrackingPipeline(nn.Module):
    """The three learned stages; the defaults are those of configs/tracking.yaml."""

    def __init__(self, embedding_dim=8, embedding_hidden=(128, 128, 128), filter_hidden=(128, 128, 128),
                 gnn_hidden=64, gnn_iterations=6):
        super().__init__()
        self.embedding = Mlp(NODE_FEATURES, list(embedding_hidden), embedding_dim)
        self.filter = EdgeFilter(list(filter_hidden))
        self.gnn = InteractionNetwork(gnn_hidden, gnn_iterations)


def architecture(h5_path):
    """The constructor arguments recorded in a weights file's attributes."""
    with h5py.File(h5_path, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}
    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    try:
        return dict(embedding_dim=int(attrs["embedding_dim"]), embedding_hidden=ints(attrs["embedding_hidden"]),
                    filter_hidden=ints(attrs["filter_hidden"]), gnn_hidden=int(attrs["gnn_hidden"]),
                    gnn_iterations=int(attrs["gnn_iterations"]))
    except KeyError as e:
        raise ValueError(f"{h5_path}: attribute {e} is missing; expected a weights file of `hpcml tracking train`")


def load_pipeline(h5_path):
    """The twin with the architecture and every weight of `h5_path`. Strict, as
    models.twins.load.load_twin: a missing or unexpected name (names starting "__" are
    ignored) or a shape mismatch raises ValueError naming them."""
    model = TrackingPipeline(**architecture(h5_path))
    expected = model.state_dict()
    with h5py.File(h5_path, "r") as f:
        found = {k for k in f.keys() if not k.startswith("__")}
        missing, extra = sorted(set(expected) - found), sorted(found - set(expected))
        if missing or extra:
            raise ValueError(f"{h5_path}: weights do not match the tracking twin: missing {missing}, unexpected {extra}")
        state = {}
        for key, ref in expected.items():
            data = torch.from_numpy(f[key][()])
            if tuple(data.shape) != tuple(ref.shape):
                raise ValueError(f"{h5_path}: '{key}' has shape {tuple(data.shape)}, the twin expects {tuple(ref.shape)}")
            state[key] = data.to(ref.dtype)
    model.load_state_dict(state, strict=True)
    return model
