#!/usr/bin/python3
"""The FACILE target's reference: a linear regression on the same 15 inputs, fitted on
the training files and scored on the validation file, with numpy only.

The fit minimises the relative squared error, sum(((x.w + b) - E) / E)^2, which is the
quantity FACILE is trained on (train.loss: relative_mse); ordinary least squares does
far worse on this metric. It prints both, and FACILE's resolution from a run's
summary.json when given.

  bench/facile_baseline.py --train 'data/calo/calo-channels-0000[0-2].h5' \\
      --validation data/calo/calo-channels-00003.h5 [--run runs/facile]
"""
import argparse
import glob
import json
import os

import h5py
import numpy as np


def load(files):
    xs, ys = [], []
    for path in files:
        with h5py.File(path) as f:
            xs.append(f["inputs"][:].astype(np.float64))
            ys.append(f["energy"][:].astype(np.float64))
    return np.concatenate(xs), np.concatenate(ys)


def resolution(prediction, energy):
    return float(np.sqrt(np.mean(((prediction - energy) / energy) ** 2)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True)
    ap.add_argument("--validation", required=True)
    ap.add_argument("--run", default="")
    a = ap.parse_args()
    x, y = load(sorted(glob.glob(a.train)))
    xv, yv = load(sorted(glob.glob(a.validation)))
    design, design_v = np.c_[x, np.ones(len(x))], np.c_[xv, np.ones(len(xv))]
    ols = np.linalg.lstsq(design, y, rcond=None)[0]
    relative = np.linalg.lstsq(design / y[:, None], np.ones(len(y)), rcond=None)[0]
    out = {"linear_ols": resolution(design_v @ ols, yv), "linear_relative": resolution(design_v @ relative, yv)}
    if a.run:
        with open(os.path.join(a.run, "summary.json")) as f:
            out["facile"] = json.load(f)["validation"]["val_resolution"]
        out["improvement_over_linear"] = 1 - out["facile"] / out["linear_relative"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
