#!/usr/bin/python3
"""Plots of an `hpcml bench scaling` sweep, from its scaling.json (bench scaling runs this after each point).

Usage: /usr/bin/python3 scripts/plot-scaling.py SWEEP_DIR

Writes SWEEP_DIR/throughput.png (samples/s against ranks, one line per mode, with the ideal line
from the smallest rank count), SWEEP_DIR/efficiency.png (parallel efficiency against ranks) and
SWEEP_DIR/breakdown.png (the per-step time split as stacked bars per mode and rank count:
compute, exposed communication, data wait, optimizer, other). Needs matplotlib.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PARTS = (("compute", "tab:blue"), ("exposed_comm", "tab:red"), ("data_wait", "tab:orange"),
         ("optimizer", "tab:green"), ("other", "0.7"))


def main(sweep):
    with open(os.path.join(sweep, "scaling.json")) as f:
        modes = json.load(f)["modes"]

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, rows in modes.items():
        ranks = [r["ranks"] for r in rows]
        rate = [r["samples_per_s"] for r in rows]
        ax.plot(ranks, rate, "o-", label=f"{mode} (measured)")
        base = rows[0]
        ax.plot(ranks, [base["samples_per_s"] * n / base["ranks"] for n in ranks], ":", color="0.5",
                label=f"{mode} (ideal)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ranks")
    ax.set_ylabel("samples/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(sweep, "throughput.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, rows in modes.items():
        ax.plot([r["ranks"] for r in rows], [r["efficiency"] for r in rows], "o-", label=mode)
    ax.axhline(0.8, ls=":", color="0.5")
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, 1.2)
    ax.set_xlabel("ranks")
    ax.set_ylabel("parallel efficiency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(sweep, "efficiency.png"), dpi=110)
    plt.close(fig)

    labels, bottoms = [], []
    fig, ax = plt.subplots(figsize=(max(4, 1 + 0.8 * sum(len(r) for r in modes.values())), 4))
    bars = [(f"{mode}\n{r['ranks']}", r["breakdown_ms"]) for mode, rows in modes.items() for r in rows]
    labels = [b[0] for b in bars]
    bottoms = [0.0] * len(bars)
    for part, color in PARTS:
        heights = [b[1].get(part, 0.0) for b in bars]
        ax.bar(range(len(bars)), heights, bottom=bottoms, color=color, label=part.replace("_", " "))
        bottoms = [x + h for x, h in zip(bottoms, heights)]
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels(labels)
    ax.set_ylabel("ms per step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(sweep, "breakdown.png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: plot-scaling.py SWEEP_DIR")
    main(sys.argv[1])
