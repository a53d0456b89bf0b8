#!/usr/bin/python3
"""Plots `hpcml bench serve --json` results: throughput (events/s) vs concurrent
request streams, dynamic batching vs batch-1 serving, one panel per case
(Krupa et al. 2021, Figures 5-6).

    /usr/bin/python3 bench/serve_plot.py bench/results/bench-serve.json bench/results/bench-serve.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    with open(src) as f:
        result = json.load(f)
    cases = sorted({p["case"] for p in result["sweep"]})
    fig, axes = plt.subplots(1, len(cases), figsize=(5.5 * len(cases), 4), squeeze=False)
    for ax, case in zip(axes[0], cases):
        for batching, style in (("dynamic", "o-"), ("batch1", "s--")):
            pts = sorted((p["streams"], p["events_per_s"]) for p in result["sweep"]
                         if p["case"] == case and p["batching"] == batching)
            ax.plot([s for s, _ in pts], [v for _, v in pts], style,
                    label="dynamic batching" if batching == "dynamic" else "batch-1 serving")
        rows = next(p["rows_per_request"] for p in result["sweep"] if p["case"] == case)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent request streams")
        ax.set_ylabel("events (requests) / s")
        ax.set_title("%s, %d rows/request, 1 client + 1 server rank" % (case, rows))
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("hpcml bench serve (CPU server, 1 intra-op thread; shared, loaded machine)")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print("wrote", dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
