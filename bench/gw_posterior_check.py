#!/usr/bin/python3
"""Calibration of importance-weighted GW posteriors over held-out events (issue 33).

Usage: bench/gw_posterior_check.py POSTERIOR.h5 [--eval-summary RUN/summary.json] [--pp OUT.png]
                                   [--hist OUT.png] [--json OUT]

POSTERIOR.h5 is what `hpcml infer` writes for events whose true parameters it copied
(datasets samples, weights, efficiency, parameters). Every event counts, whatever its ESS.

- Reweighted coverage: for each event and parameter, the credible level of the true value
  under the weighted draws, u = sum_i w_i [theta_i < theta_true]. For calibrated posteriors u is
  uniform on [0, 1] for every parameter (the phase too, read linearly on [0, 2 pi)). Reported
  per parameter: the coverage of the central 50% and 90% intervals with the 99% binomial band,
  and the KS distance of u from U(0, 1). "Inside the simultaneous 99% band" means every
  parameter's KS distance is below the critical value at 1 - 0.01/P (Bonferroni over the P
  parameters), so the claim is one 99% statement for all of them together.
- The flow alone (--eval-summary, from `hpcml eval`, before any weights): the same
  simultaneous test on eval's KS p-values, min p >= 0.01/P.
- --pp draws the reweighted P-P curves with the simultaneous band; --hist the histogram of
  per-event efficiency (log scale).
"""
import argparse
import json

import h5py
import numpy as np
from scipy import stats

NAMES = ["chirp_mass", "mass_ratio", "distance", "t_c", "phase"]


def credible_levels(samples, weights, truth):
    """(events, draws, P), (events, draws), (events, P) -> (events, P) weighted levels."""
    below = samples < truth[:, None, :]
    return (weights[:, :, None] * below).sum(1)


def simultaneous_critical(events, parameters, level=0.99):
    """KS critical distance so that P independent tests hold together at `level`."""
    return stats.kstwo.ppf(1 - (1 - level) / parameters, events)


def coverage(levels, lo, hi):
    return ((levels >= lo) & (levels < hi)).mean(0)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("posterior")
    p.add_argument("--eval-summary")
    p.add_argument("--pp")
    p.add_argument("--hist")
    p.add_argument("--json")
    a = p.parse_args()
    with h5py.File(a.posterior, "r") as f:
        samples = f["samples"][()].astype(np.float64)
        weights = f["weights"][()].astype(np.float64)
        efficiency = f["efficiency"][()].astype(np.float64).reshape(-1)
        truth = f["parameters"][()].astype(np.float64)
    events, draws, dims = samples.shape
    levels = credible_levels(samples, weights, truth)
    critical = simultaneous_critical(events, dims)
    ks = np.array([stats.kstest(levels[:, j], "uniform").statistic for j in range(dims)])
    half = lambda q: 2.5758 * np.sqrt(q * (1 - q) / events)  # noqa: E731
    c50, c90 = coverage(levels, 0.25, 0.75), coverage(levels, 0.05, 0.95)
    result = {
        "events": events, "draws": draws,
        "efficiency": {"median": float(np.median(efficiency)), "p10": float(np.percentile(efficiency, 10)),
                       "mean": float(efficiency.mean()), "min": float(efficiency.min())},
        "reweighted": {"ks": dict(zip(NAMES, ks.tolist())), "ks_critical_simultaneous_99": float(critical),
                       "within_simultaneous_band": bool((ks < critical).all()),
                       "coverage_50": dict(zip(NAMES, c50.tolist())), "coverage_90": dict(zip(NAMES, c90.tolist())),
                       "band_50": [0.5 - half(0.5), 0.5 + half(0.5)], "band_90": [0.9 - half(0.9), 0.9 + half(0.9)]},
    }
    print(f"{events} events x {draws} draws: efficiency median {result['efficiency']['median']:.4f}, "
          f"10th percentile {result['efficiency']['p10']:.4f}, mean {result['efficiency']['mean']:.4f}")
    print(f"reweighted posteriors, all {events} events: KS distance per parameter (simultaneous 99% critical "
          f"{critical:.4f}); coverage 50% (band {result['reweighted']['band_50'][0]:.3f}-"
          f"{result['reweighted']['band_50'][1]:.3f}), 90% (band {result['reweighted']['band_90'][0]:.3f}-"
          f"{result['reweighted']['band_90'][1]:.3f})")
    for j in range(dims):
        print(f"  {NAMES[j]:<11} KS {ks[j]:.4f}  cov50 {c50[j]:.3f}  cov90 {c90[j]:.3f}")
    print(f"  inside the simultaneous 99% band: {result['reweighted']['within_simultaneous_band']}")
    if a.eval_summary:
        with open(a.eval_summary) as f:
            cal = json.load(f)["eval"]["calibration"]
        ks_p = cal["ks_p"]
        threshold = 0.01 / len(ks_p)
        result["flow_alone"] = {"events": cal["events"], "ks_p": ks_p, "threshold": threshold,
                                "within_simultaneous_band": bool(min(ks_p.values()) >= threshold)}
        print(f"flow alone (eval, {cal['events']:.0f} events): KS p " +
              ", ".join(f"{k} {v:.3f}" for k, v in ks_p.items()) +
              f"; simultaneous 99% needs every p >= {threshold:.4f}: {result['flow_alone']['within_simultaneous_band']}")
    if a.pp:
        plot_pp(levels, critical, a.pp)
    if a.hist:
        plot_hist(efficiency, a.hist)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


def plot_pp(levels, critical, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    events, dims = levels.shape
    x = np.linspace(0, 1, 201)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.fill_between(x, np.clip(x - critical, 0, 1), np.clip(x + critical, 0, 1), color="0.85",
                    label="simultaneous 99% band")
    ax.plot([0, 1], [0, 1], color="0.4", lw=0.8)
    for j in range(dims):
        ax.plot(x, (levels[:, j][None, :] <= x[:, None]).mean(1), lw=1.3, label=NAMES[j])
    ax.set_xlabel("credible level")
    ax.set_ylabel("fraction of events with the true value below it")
    ax.set_title(f"reweighted nsf-gw posteriors, P-P, {events} events")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_hist(efficiency, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.logspace(np.log10(max(efficiency.min(), 1e-5)), np.log10(max(efficiency.max(), 1e-4)), 30)
    ax.hist(efficiency, bins=bins, color="tab:blue")
    ax.set_xscale("log")
    ax.axvline(np.median(efficiency), color="k", lw=1, label=f"median {np.median(efficiency):.3f}")
    ax.axvline(0.01, color="tab:red", lw=1, ls="--", label="target 0.01")
    ax.set_xlabel("importance-sampling efficiency per event")
    ax.set_ylabel("events")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
