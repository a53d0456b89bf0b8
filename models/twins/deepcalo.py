"""DeepCalo twin of models/zoo/deepcalo.cpp: ATLAS electron energy regression
from 4-layer calorimeter images.

Input (B, 4, 56, 11) float -> output (B, 1). Pools are 2x2, stride 2, ceil_mode
(56x11 -> 28x6 -> 14x3 -> 7x2 -> 4x1). state_dict keys: block1.{0 conv, 1 bn},
blockK.{1 conv, 2 bn, 4 conv, 5 bn} for K = 2..5, head.{1,3,5} Linear.
"""
import torch
from torch import nn

LAYERS = 4
WIDTHS = (32, 64, 128, 192, 208)
FINAL_CELLS = 4 * 1
SLOPE = 0.01


def _conv(cin, cout, kernel):
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)


class DeepCalo(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(_conv(LAYERS, WIDTHS[0], 5), nn.BatchNorm2d(WIDTHS[0]), nn.LeakyReLU(SLOPE))
        for k in range(1, 5):
            block = nn.Sequential(
                nn.MaxPool2d(2, stride=2, ceil_mode=True),
                _conv(WIDTHS[k - 1], WIDTHS[k], 3), nn.BatchNorm2d(WIDTHS[k]), nn.LeakyReLU(SLOPE),
                _conv(WIDTHS[k], WIDTHS[k], 3), nn.BatchNorm2d(WIDTHS[k]), nn.LeakyReLU(SLOPE))
            self.add_module(f"block{k + 1}", block)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(WIDTHS[4] * FINAL_CELLS, 256), nn.LeakyReLU(SLOPE),
            nn.Linear(256, 64), nn.LeakyReLU(SLOPE),
            nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block1(x)
        for k in range(2, 6):
            y = getattr(self, f"block{k}")(y)
        return self.head(y)
