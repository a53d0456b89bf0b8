"""The curve of `hpcml bench pack` (docs/benchmarks.md, packed members): packed over one-after-another
member-steps/s against the batch size (at the benchmark's --at-members) and against the member count
(at --at-batch), one line per model.

    /usr/bin/python3 bench/plot_pack.py bench/results/pack-facile.json bench/results/pack-mlp.json \\
        -o docs/pack-curve.png
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="JSON files written by hpcml bench pack --json")
    parser.add_argument("-o", "--output", required=True, help="PNG to write")
    args = parser.parse_args()
    fig, (by_batch, by_members) = plt.subplots(1, 2, figsize=(10, 4))
    for path in args.results:
        with open(path) as f:
            result = json.load(f)
        rows = result["rows"]
        at_k, at_b = result["at_members"], result["at_batch"]
        line = sorted((r["batch"], r["packed_over_sequential"]) for r in rows if r["members"] == at_k)
        by_batch.plot([b for b, _ in line], [v for _, v in line], "o-", label=f"{result['model']} (K = {at_k})")
        line = sorted((r["members"], r["packed_over_sequential"]) for r in rows if r["batch"] == at_b)
        by_members.plot([k for k, _ in line], [v for _, v in line], "o-", label=f"{result['model']} (batch {at_b})")
    for ax, xlabel in ((by_batch, "batch size per member"), (by_members, "members K")):
        ax.set_xscale("log", base=2)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.axhline(2.5, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("packed / one after another (member-steps/s)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("hpcml bench pack: 1 thread, median of 5 alternating reps (dashed: the 2.5x target)")
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)


if __name__ == "__main__":
    main()
