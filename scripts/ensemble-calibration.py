#!/usr/bin/env python3
"""Calibration of an ensemble's likelihood-ratio estimates on held-out events (docs/ensembles.md).

    scripts/ensemble-calibration.py INFER_DIR [--variation NAME] [--out DIR] [--bins 10] [--no-plot]

INFER_DIR is the output of `hpcml infer` with run.dir an ensemble and infer.members: true over
held-out files that carry the class (`label`) and, for the closure, the true log r (`log_r`; both
copied with infer.copy_fields: [label, log_r]). Writes into --out (default INFER_DIR/<variation>):

- calibration.json: every figure below;
- calibration.md: the tables;
- closure_vs_size.png (and closure.png): the closure error against ensemble size.

Reliability: events binned by the estimate log r̂ (quantiles); in each bin the predicted ratio
E_{p0}[r̂ | bin] (mean r̂ over its class-0 events) against the observed class ratio
(n1_bin / N1) / (n0_bin / N0), which is p1(bin)/p0(bin): equal for a calibrated estimator.
Closure: events binned by the true log r; per bin the mean and spread (standard deviation) of
log r̂ - log r, for member 0, for the median member (by overall error) and for the ensemble
(mean of log r̂ over members). Ensemble size: for M' = 1, 2, 4, ..., M the members split into
floor(M / M') disjoint groups of M' consecutive members; each group's closure error is the
median over events of |mean log r̂ over the group - log r|; reported: the mean over groups
(and the smallest and largest).
"""
import argparse
import glob
import json
import os
import sys

import h5py
import numpy as np


def fail(message):
    print(f"ensemble-calibration: {message}", file=sys.stderr)
    sys.exit(2)


def read(directory):
    files = sorted(glob.glob(os.path.join(directory, "*.predictions.h5")))
    if not files:
        fail(f"no *.predictions.h5 in {directory} (an `hpcml infer` output of an ensemble)")
    cols = {"log_r_members": [], "label": [], "log_r": []}
    for path in files:
        with h5py.File(path) as f:
            for name in cols:
                if name not in f:
                    needs = {"log_r_members": "infer.members: true (and a two-class classifier)",
                             "label": "infer.copy_fields with the class field",
                             "log_r": "infer.copy_fields with the true log r"}[name]
                    fail(f"{path}: no dataset '{name}': expected {needs}")
                cols[name].append(f[name][()])
    return {k: np.concatenate(v) for k, v in cols.items()}


def quantile_bins(values, bins):
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    return edges, np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)


def reliability(log_r_hat, label, bins):
    edges, which = quantile_bins(log_r_hat, bins)
    n0, n1 = (label == 0).sum(), (label == 1).sum()
    rows = []
    for b in range(len(edges) - 1):
        in0 = (which == b) & (label == 0)
        in1 = (which == b) & (label == 1)
        if in0.sum() == 0:
            continue
        rows.append({"log_r_hat_low": float(edges[b]), "log_r_hat_high": float(edges[b + 1]),
                     "events": int((which == b).sum()),
                     "predicted_ratio": float(np.exp(log_r_hat[in0]).mean()),
                     "observed_ratio": float((in1.sum() / n1) / (in0.sum() / n0))})
    return rows


def closure(log_r_hat, log_r, bins):
    edges, which = quantile_bins(log_r, bins)
    d = log_r_hat - log_r
    return [{"log_r_low": float(edges[b]), "log_r_high": float(edges[b + 1]), "events": int((which == b).sum()),
             "mean": float(d[which == b].mean()), "spread": float(d[which == b].std())}
            for b in range(len(edges) - 1) if (which == b).any()]


def error(log_r_hat, log_r):
    return float(np.median(np.abs(log_r_hat - log_r)))


def size_scan(members, log_r):
    m = members.shape[1]
    sizes = [1 << i for i in range(m.bit_length()) if (1 << i) <= m]
    if sizes[-1] != m:
        sizes.append(m)
    rows = []
    for size in sizes:
        groups = [error(members[:, g * size:(g + 1) * size].mean(1), log_r) for g in range(m // size)]
        rows.append({"members": size, "groups": len(groups), "error": float(np.mean(groups)),
                     "error_min": float(np.min(groups)), "error_max": float(np.max(groups))})
    return rows


def table(rows, keys):
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        out.append("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")
    return "\n".join(out)


def plot(result, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    scan = result["size_scan"]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    x = [r["members"] for r in scan]
    ax.errorbar(x, [r["error"] for r in scan],
                yerr=[[r["error"] - r["error_min"] for r in scan], [r["error_max"] - r["error"] for r in scan]],
                marker="o", capsize=3, label="ensemble of M' members")
    ax.axhline(result["median_member_error"], color="gray", ls="--", label="median single member")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ensemble size M'")
    ax.set_ylabel("median |log r̂ − log r|")
    ax.set_title("closure error against ensemble size")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "closure_vs_size.png"), dpi=120)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, rows in (("member 0", result["closure"]["member_0"]), ("ensemble", result["closure"]["ensemble"])):
        centres = [(r["log_r_low"] + r["log_r_high"]) / 2 for r in rows]
        ax.errorbar(centres, [r["mean"] for r in rows], yerr=[r["spread"] for r in rows], marker="o", capsize=3,
                    label=name)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xlabel("true log r (bin centre)")
    ax.set_ylabel("log r̂ − log r: mean ± spread")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "closure.png"), dpi=120)
    plt.close("all")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("infer_dir")
    p.add_argument("--variation", default="nominal")
    p.add_argument("--out", default="")
    p.add_argument("--bins", type=int, default=10)
    p.add_argument("--no-plot", action="store_true")
    a = p.parse_args()
    if a.bins < 2:
        fail(f"--bins: expected at least 2, found {a.bins}")
    directory = os.path.join(a.infer_dir, a.variation)
    if not os.path.isdir(directory):
        fail(f"no directory {directory} (--variation: one of the ensemble's variations)")
    cols = read(directory)
    members, label, log_r = cols["log_r_members"].astype(np.float64), cols["label"], cols["log_r"]
    ensemble = members.mean(1)
    member_errors = [error(members[:, k], log_r) for k in range(members.shape[1])]
    median_member = int(np.argsort(member_errors)[len(member_errors) // 2])
    result = {
        "events": int(len(log_r)), "members": int(members.shape[1]),
        "ensemble_error": error(ensemble, log_r),
        "member_errors": member_errors,
        "median_member_error": float(np.median(member_errors)),
        "median_member": median_member,
        "ensemble_spread_median": float(np.median(members.std(1))),
        "reliability": {"member_0": reliability(members[:, 0], label, a.bins),
                        "ensemble": reliability(ensemble, label, a.bins)},
        "closure": {"member_0": closure(members[:, 0], log_r, a.bins),
                    "median_member": closure(members[:, median_member], log_r, a.bins),
                    "ensemble": closure(ensemble, log_r, a.bins)},
        "size_scan": size_scan(members, log_r),
    }
    out = a.out or directory
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "calibration.json"), "w") as f:
        json.dump(result, f, indent=2)
    md = [f"# Calibration of {directory}", "",
          f"{result['events']} events, {result['members']} members. Median |log r̂ − log r|: ensemble "
          f"{result['ensemble_error']:.4f}, median member {result['median_member_error']:.4f}; median ensemble "
          f"spread (std of log r̂ over members) {result['ensemble_spread_median']:.4f}.", "",
          "## Closure error against ensemble size", "",
          table(result["size_scan"], ["members", "groups", "error", "error_min", "error_max"]), ""]
    for who in ("member_0", "ensemble"):
        md += [f"## Reliability ({who})", "",
               table(result["reliability"][who], ["log_r_hat_low", "log_r_hat_high", "events", "predicted_ratio",
                                                  "observed_ratio"]), ""]
    for who in ("member_0", "median_member", "ensemble"):
        md += [f"## Closure per bin of true log r ({who})", "",
               table(result["closure"][who], ["log_r_low", "log_r_high", "events", "mean", "spread"]), ""]
    with open(os.path.join(out, "calibration.md"), "w") as f:
        f.write("\n".join(md))
    if not a.no_plot:
        plot(result, out)
    print(f"ensemble-calibration: {result['events']} events, {result['members']} members: median |log r̂ − log r| "
          f"ensemble {result['ensemble_error']:.4f}, median member {result['median_member_error']:.4f} "
          f"({os.path.join(out, 'calibration.md')})")


if __name__ == "__main__":
    main()
