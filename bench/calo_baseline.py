#!/usr/bin/python3
"""The references for the calorimeter targets (issue 5), with numpy only, fitted on the
training files and scored on the validation file. Resolution = RMS of (pred - E) / E.

facile:   a linear regression on the same 15 channel inputs. The fit minimises the
          relative squared error, sum(((x.w + b) - E) / E)^2, which is the quantity
          FACILE is trained on (train.loss: relative_mse); ordinary least squares does
          far worse on this metric, and is printed too.
deepcalo: the raw energy sum of the image (all cells, all layers), times one
          calibration constant fitted for the same relative error. Also printed, for
          context: the per-layer sums with one constant per layer.

With --run, the model's resolution from that run's summary.json (the last validation)
and the improvement over the baseline.

  bench/calo_baseline.py facile --train 'data/calo/calo-channels-0000[0-2].h5' \\
      --validation data/calo/calo-channels-00003.h5 [--run runs/facile]
  bench/calo_baseline.py deepcalo --train 'data/calo/calo-showers-0000[0-2].h5' \\
      --validation data/calo/calo-showers-00003.h5 [--run runs/deepcalo]
"""
import argparse
import glob
import json
import os

import h5py
import numpy as np


def load(files, field):
    xs, ys = [], []
    for path in files:
        with h5py.File(path) as f:
            x = f[field][:].astype(np.float64)
            if field == "images":  # (N, 4, 56, 11) -> per-layer sums (N, 4)
                x = x.sum(axis=(2, 3))
            xs.append(x)
            ys.append(f["energy"][:].astype(np.float64))
    return np.concatenate(xs), np.concatenate(ys)


def resolution(prediction, energy):
    return float(np.sqrt(np.mean(((prediction - energy) / energy) ** 2)))


def relative_fit(design, energy):
    """Weights minimising sum((design.w - E) / E)^2."""
    return np.linalg.lstsq(design / energy[:, None], np.ones(len(energy)), rcond=None)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=["facile", "deepcalo"])
    ap.add_argument("--train", required=True)
    ap.add_argument("--validation", required=True)
    ap.add_argument("--run", default="")
    a = ap.parse_args()
    field = "inputs" if a.model == "facile" else "images"
    x, y = load(sorted(glob.glob(a.train)), field)
    xv, yv = load(sorted(glob.glob(a.validation)), field)
    if a.model == "facile":
        design, design_v = np.c_[x, np.ones(len(x))], np.c_[xv, np.ones(len(xv))]
        ols = np.linalg.lstsq(design, y, rcond=None)[0]
        out = {"linear_ols": resolution(design_v @ ols, yv),
               "linear_relative": resolution(design_v @ relative_fit(design, y), yv)}
        baseline = "linear_relative"
    else:
        raw, raw_v = x.sum(axis=1, keepdims=True), xv.sum(axis=1, keepdims=True)
        out = {"raw_sum": resolution(raw_v @ relative_fit(raw, y), yv),
               "per_layer_sums": resolution(xv @ relative_fit(x, y), yv)}
        baseline = "raw_sum"
    if a.run:
        with open(os.path.join(a.run, "summary.json")) as f:
            out[a.model] = json.load(f)["validation"]["val_resolution"]
        out["improvement_over_baseline"] = 1 - out[a.model] / out[baseline]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
