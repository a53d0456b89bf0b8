#!/usr/bin/python3
"""The Python twin's side of `hpcml bench model`: full training steps (forward, MSE
or cross-entropy loss, backward, default Adam) of a zoo model's twin under plain eager PyTorch, at a
given batch and thread count. Prints one JSON line: samples/s and step time.

  bench/model_twin_step.py --model facile --batch 256 --steps 300 --warmup 20 --threads 1
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models.twins.load import make_twin  # noqa: E402
from models.twins.particlenet import example_inputs as jet_inputs  # noqa: E402

INPUT_SHAPES = {"facile": (15,), "deepcalo": (4, 56, 11)}
CLASSIFIERS = ("particlenet", "particlenet-lite")


def batch(name, size):
    """Inputs and targets as `hpcml bench model` makes them (same shapes and distributions)."""
    if name in CLASSIFIERS:
        return jet_inputs(size, seed=0), torch.randint(0, 2, (size,))
    return {"x": torch.randn(size, *INPUT_SHAPES[name])}, torch.rand(size, 1) * 100 + 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=sorted(INPUT_SHAPES) + list(CLASSIFIERS))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = make_twin(a.model)
    model.train()
    optimizer = torch.optim.Adam(model.parameters())
    x, y = batch(a.model, a.batch)
    loss_fn = torch.nn.functional.cross_entropy if a.model in CLASSIFIERS else torch.nn.functional.mse_loss

    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(**x), y)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(a.warmup):
        step()
    start = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    seconds = time.perf_counter() - start
    print(json.dumps({"impl": "pytorch-eager-twin", "model": a.model, "batch": a.batch, "threads": a.threads,
                      "steps": a.steps, "step_ms": 1000 * seconds / a.steps, "samples_per_s": a.steps * a.batch / seconds,
                      "final_loss": float(loss)}))


if __name__ == "__main__":
    main()
