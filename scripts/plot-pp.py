#!/usr/bin/python3
"""P-P plot of a density model's calibration from `hpcml eval`'s summary.json.

Usage: /usr/bin/python3 scripts/plot-pp.py RUN_DIR/summary.json OUT.png

For each parameter, the empirical CDF of the credible level of the true value
(eval.calibration.pp, at 0, 0.01, ..., 1) against the nominal level, with the
pointwise 99% binomial band of a calibrated posterior over the same number of
events. Needs matplotlib (the system python3 has it).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main(summary_path, out_path):
    with open(summary_path) as f:
        cal = json.load(f)["eval"]["calibration"]
    n = cal["events"]
    fig, ax = plt.subplots(figsize=(5, 5))
    p = np.linspace(0, 1, 201)
    half = 2.5758 * np.sqrt(p * (1 - p) / n)
    ax.fill_between(p, p - half, p + half, color="0.85", label="99% band")
    ax.plot([0, 1], [0, 1], color="0.4", lw=0.8)
    for name, curve in cal["pp"].items():
        x = np.linspace(0, 1, len(curve))
        ax.plot(x, curve, lw=1.3, label=f"{name} (KS p={cal['ks_p'][name]:.2f})")
    ax.set_xlabel("credible level")
    ax.set_ylabel("fraction of events with the true value below it")
    ax.set_title(f"nsf-gw P-P plot, {int(n)} held-out events")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
