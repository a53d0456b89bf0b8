#!/usr/bin/python3
"""The ParticleNet target's reference: a jet-level classifier on the same files. A
logistic regression, quadratic in the standardised [jet mass, constituent count,
pT dispersion sqrt(sum pT^2)/sum pT] (so it can use a mass window), fitted on the
training files and scored on the validation file, with numpy only. Prints its ROC
AUC, and a run's eval metrics from summary.json when given.

  bench/jets_baseline.py --train 'data/jets/jets-0000[0-5].h5' \\
      --validation data/jets/jets-00006.h5 [--run runs/particlenet-lite]
"""
import argparse
import glob
import json
import os

import h5py
import numpy as np


def jet_features(files):
    xs, ys = [], []
    for path in files:
        with h5py.File(path) as f:
            offsets, v = f["constituents/offsets"][()], f["constituents/values"][()]
            pt = np.hypot(v[:, 1], v[:, 2]).astype(np.float64)
            ptd = np.sqrt(np.add.reduceat(pt ** 2, offsets[:-1])) / np.add.reduceat(pt, offsets[:-1])
            xs.append(np.stack([f["jet"][:, 3], np.diff(offsets), ptd], axis=1).astype(np.float64))
            ys.append(f["label"][()])
    return np.concatenate(xs), np.concatenate(ys)


def quadratic(x, mean, std):
    x = (x - mean) / std
    return np.hstack([x, x ** 2, x[:, [0]] * x[:, [1]], x[:, [0]] * x[:, [2]], x[:, [1]] * x[:, [2]],
                      np.ones((len(x), 1))])


def auc(score, label):
    """Mann-Whitney U / (n_signal n_background), ties by average rank."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    s = score[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n1 = int((label == 1).sum())
    return (ranks[label == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * (len(label) - n1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True, help="glob of training files")
    ap.add_argument("--validation", required=True, help="validation file")
    ap.add_argument("--run", help="a run directory whose summary.json has an eval")
    a = ap.parse_args()
    x, y = jet_features(sorted(glob.glob(a.train)))
    xv, yv = jet_features([a.validation])
    mean, std = x.mean(0), x.std(0)
    z, zv = quadratic(x, mean, std), quadratic(xv, mean, std)
    w = np.zeros(z.shape[1])
    for _ in range(30):  # Newton (IRLS) on the mean log-loss, lightly regularised
        p = 1 / (1 + np.exp(-z @ w))
        hessian = (z * (p * (1 - p))[:, None]).T @ z / len(y) + 1e-6 * np.eye(len(w))
        w -= np.linalg.solve(hessian, z.T @ (p - y) / len(y))
    result = {"baseline": "logistic regression, quadratic in [mass, n_constituents, pT dispersion]",
              "train_jets": len(y), "validation_jets": len(yv), "baseline_auc": auc(zv @ w, yv)}
    if a.run:
        with open(os.path.join(a.run, "summary.json")) as f:
            ev = json.load(f)["eval"]
        result.update({"model": ev["model"], "model_auc": ev["auc"], "model_accuracy": ev["accuracy"],
                       "model_rejection_30": ev["rejection_30"], "auc_gain": ev["auc"] - result["baseline_auc"]})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
