#!/usr/bin/python3
"""Plots of an `hpcml hpo` study, from its summary.json (hpcml hpo runs this at the end).

Usage: /usr/bin/python3 scripts/plot-hpo.py STUDY_DIR

Writes STUDY_DIR/best-vs-time.png (every finished trial's value against the wall time it
finished at, complete and pruned apart, and the best complete value so far as a step line) and
STUDY_DIR/params.png (one panel per parameter: the metric of each complete or pruned trial
against the parameter's value; log axes for log parameters). Needs matplotlib.
"""
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(study):
    with open(os.path.join(study, "summary.json")) as f:
        s = json.load(f)
    trials = [t for t in s["trials"] if t["state"] in ("complete", "pruned") and "value" in t]
    metric = s["metric"]

    fig, ax = plt.subplots(figsize=(6, 4))
    for state, marker, color in (("complete", "o", "tab:blue"), ("pruned", "x", "0.6")):
        pts = [(t["finished_s"], t["value"]) for t in trials if t["state"] == state and "finished_s" in t]
        if pts:
            ax.scatter(*zip(*pts), marker=marker, color=color, s=18, label=f"{state} ({len(pts)})")
    best = s.get("best_so_far", [])
    if best:
        xs = [b["t_s"] for b in best] + [s.get("wall_s", best[-1]["t_s"])]
        ys = [b["best"] for b in best] + [best[-1]["best"]]
        ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel(metric)
    ax.set_title(f"{s['sampler']} + {s['scheduler']}: {len(s['trials'])} trials on {s['workers']} group(s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(study, "best-vs-time.png"), dpi=110)
    plt.close(fig)

    space = s.get("space", {})
    keys = list(space)
    cols = min(3, max(1, len(keys)))
    rows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for i, key in enumerate(keys):
        ax = axes[i // cols][i % cols]
        spec = space[key]
        for state, marker, color in (("complete", "o", "tab:blue"), ("pruned", "x", "0.6")):
            pts = [(t["params"][key], t["value"]) for t in trials if t["state"] == state and key in t["params"]]
            if not pts:
                continue
            xs, ys = zip(*pts)
            if spec["type"] == "categorical":
                xs = [spec["choices"].index(str(x)) for x in xs]
            ax.scatter(xs, ys, marker=marker, color=color, s=16)
        if spec["type"] == "categorical":
            ax.set_xticks(range(len(spec["choices"])))
            ax.set_xticklabels(spec["choices"])
        elif spec.get("log"):
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
    for j in range(len(keys), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    fig.savefig(os.path.join(study, "params.png"), dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
