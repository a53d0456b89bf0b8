"""The DeepSet of the TorchScript tests: one definition for the test that scripts it with
Debian's PyTorch 1.13 and for tests/fixtures/make_torch2_fixtures.py, which scripted the
fixture with PyTorch 2.11."""
import torch


class DeepSet(torch.nn.Module):
    """A per-particle MLP, masked mean pooling, then jet-level features: (B, 2) logits."""

    def __init__(self):
        super().__init__()
        self.phi = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32),
                                       torch.nn.ReLU())
        self.rho = torch.nn.Sequential(torch.nn.Linear(32 + 4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))

    def forward(self, particles: torch.Tensor, mask: torch.Tensor, jet: torch.Tensor) -> torch.Tensor:
        p = torch.sign(particles) * torch.log1p(particles.abs())
        m = mask.to(p.dtype).unsqueeze(-1)
        pooled = (self.phi(p) * m).sum(1) / m.sum(1).clamp(min=1.0)
        j = torch.sign(jet) * torch.log1p(jet.abs())
        return self.rho(torch.cat([pooled, j], 1))
