#!/usr/bin/python3
"""Writes a small TorchScript model scripted by Python PyTorch, for the C++ tests.

Usage: make_torchscript.py OUT.pt [SEED]
The model: Linear(8, 16) -> tanh -> Linear(16, 4), scripted with torch.jit.script
(which needs this file's source, so it cannot be a `python3 -c` one-liner).
"""
import sys

import torch


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


if __name__ == "__main__":
    torch.manual_seed(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    torch.jit.script(Small()).save(sys.argv[1])
