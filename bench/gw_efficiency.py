#!/usr/bin/python3
"""Importance-sampling efficiency of the nsf-gw flow over held-out events (issue 33).

Usage: bench/gw_efficiency.py POSTERIOR.h5 [--label NAME] [--json OUT] [--append]

POSTERIOR.h5 is what `hpcml infer -c configs/nsf-gw.yaml -i EVENTS.h5 -o POSTERIOR.h5 --samples N`
writes (schema hpcml.gw.posterior). The per-event sample efficiency is read from the file and
also recomputed here from its log weights, (sum w)^2 / (N sum w^2), as a check. Prints the median,
10th percentile and mean over events. With --json, writes (or, with --append, adds) one row.
"""
import argparse
import json
import os

import h5py
import numpy as np


def efficiencies(path):
    with h5py.File(path, "r") as f:
        stored = f["efficiency"][()].astype(np.float64).reshape(-1)
        log_w = f["log_weights"][()].astype(np.float64)
        n = log_w.shape[1]
    log_w = log_w - log_w.max(axis=1, keepdims=True)
    w = np.exp(log_w)
    recomputed = w.sum(1) ** 2 / (n * (w ** 2).sum(1))
    return stored, recomputed, n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("posterior")
    p.add_argument("--label", default="")
    p.add_argument("--json")
    p.add_argument("--append", action="store_true")
    a = p.parse_args()
    stored, recomputed, n = efficiencies(a.posterior)
    if not np.allclose(stored, recomputed, rtol=1e-4, atol=1e-9):
        raise SystemExit(f"{a.posterior}: stored efficiencies differ from (sum w)^2 / (N sum w^2) of its log weights")
    row = {"label": a.label, "events": int(stored.size), "draws": int(n), "median": float(np.median(stored)),
           "p10": float(np.percentile(stored, 10)), "mean": float(stored.mean()), "max": float(stored.max())}
    print(f"{a.label or a.posterior}: {row['events']} events x {n} draws: efficiency median {row['median']:.5f}, "
          f"10th percentile {row['p10']:.5f}, mean {row['mean']:.5f}, max {row['max']:.5f}")
    if a.json:
        rows = []
        if a.append and os.path.exists(a.json):
            with open(a.json) as f:
                rows = json.load(f)
        rows.append(row)
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
