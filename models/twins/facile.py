"""FACILE twin of models/zoo/facile.cpp: CMS HCAL channel energy regression.

Input (B, 15) float -> output (B, 1). state_dict keys: net.0.* (BatchNorm1d),
net.{1,3,5,7,9,11}.{weight,bias} (Linear).
"""
import torch
from torch import nn

INPUTS = 15
HIDDEN = (30, 20, 10, 5, 3)


class Facile(nn.Module):
    def __init__(self):
        super().__init__()
        layers = [nn.BatchNorm1d(INPUTS)]
        width = INPUTS
        for h in HIDDEN:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
