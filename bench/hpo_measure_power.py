#!/usr/bin/python3
"""How often issue 27's 5-seed measure passes, resampled from recorded `bench/hpo_vs_optuna.py` runs.

Usage: /usr/bin/python3 bench/hpo_measure_power.py RESULTS.json [RESULTS.json ...]
           [--contender hpcml-tpe-asha] [--draws 20000] [--seed 0] [--speedups 2,3,4]

The issue's measure, on one run of 5 seeds: the target is the median of Optuna's 5 best values;
each side's time is the median of its 5 times to that target (a seed that never reaches it
counts as infinite); it passes when the contender's time is at most 0.5x Optuna's.

The RESULTS files (each a run of the benchmark with the same settings, different seeds) pool
their recorded best-so-far curves per contender. A draw picks 5 Optuna curves and 5 contender
curves without replacement, and applies the measure. It reports, over the draws:
  contender   the contender against Optuna: how often the measure passes, the ratio's quartiles;
  null        5 Optuna curves against 5 other Optuna curves (disjoint): the same search, so a
              pass is a false positive;
  optuna/k    5 Optuna curves against 5 other Optuna curves with every time divided by k: a
              contender that is the same search k times faster, so a pass is what the measure
              should say;
  pooled      the measure over all pooled seeds at once (the target: the median of all
              Optuna bests; each side's lower median time), once, not resampled.
All curves come from the files; nothing here trains or simulates training.
"""
import argparse
import json
import math
import random
import statistics

INF = float("inf")


def load(paths, contender):
    """The pooled curves, and each file's own measure next to the ratio it recorded (a check that
    this script computes what the benchmark did)."""
    optuna, other, checks = [], [], []
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        mine, theirs = [], []
        for run in result["runs"]:
            curve = [tuple(p) for p in run["curve"]]
            if run["impl"].startswith("optuna"):
                theirs.append(curve)
            elif run["impl"] == contender:
                mine.append(curve)
        optuna += theirs
        other += mine
        recorded = result["summary"]["impls"].get("hpcml-" + contender.split("-")[-1], {}).get("time_to_target_vs_optuna")
        if mine and theirs and recorded is not None:
            checks.append((path, measure(theirs, mine), recorded))
    return optuna, other, checks


def best(curve):
    return min((v for _, v in curve), default=INF)


def time_to(curve, target, speedup=1.0):
    return next((t / speedup for t, v in curve if v <= target), INF)


def measure(optuna, contender, speedup=1.0):
    """The issue's ratio: median contender time over median Optuna time, to Optuna's median best."""
    target = statistics.median(best(c) for c in optuna)
    mine = statistics.median(time_to(c, target, speedup) for c in contender)
    theirs = statistics.median(time_to(c, target) for c in optuna)
    if mine == INF:
        return INF
    return mine / theirs


def quartiles(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 4], xs[n // 2], xs[(3 * n) // 4]


def fmt(x):
    return "never" if x == INF else f"{x:.2f}x"


def report(name, ratios):
    q1, q2, q3 = quartiles(ratios)
    passed = sum(r <= 0.5 for r in ratios) / len(ratios)
    print(f"{name:<12} passes {passed:5.1%}   ratio quartiles {fmt(q1)}, {fmt(q2)}, {fmt(q3)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--contender", default="hpcml-tpe-asha", help="the impl name in the runs")
    ap.add_argument("--draws", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--speedups", default="2,3,4", help="k for the optuna/k rows, comma-separated")
    args = ap.parse_args()
    try:
        speedups = [float(x) for x in args.speedups.split(",")]
    except ValueError:
        ap.error(f"--speedups: expected numbers separated by commas, found '{args.speedups}'")
    try:
        optuna, other, checks = load(args.results, args.contender)
    except (OSError, ValueError, KeyError, TypeError) as e:
        ap.error(f"reading the results: {type(e).__name__}: {e} (expected bench/hpo_vs_optuna.py --json files)")
    if len(optuna) < 10 or len(other) < 5:
        ap.error(f"need at least 10 Optuna runs and 5 '{args.contender}' runs in the files; found {len(optuna)} and {len(other)}")
    for path, again, recorded in checks:
        if not math.isclose(again, recorded, rel_tol=1e-9):  # also when one of them is never (inf)
            raise SystemExit(f"{path}: this script's ratio {again} differs from the recorded {recorded}")
    if checks:
        print("each file's own 5 seeds give its recorded ratio: " + ", ".join(fmt(r) for _, r, _ in checks))
    rng = random.Random(args.seed)
    print(f"{len(optuna)} Optuna runs, {len(other)} {args.contender} runs; {args.draws} draws of 5 against 5")
    report(args.contender, [measure(rng.sample(optuna, 5), rng.sample(other, 5)) for _ in range(args.draws)])
    for k in [1.0] + speedups:
        ratios = []
        for _ in range(args.draws):
            ten = rng.sample(optuna, 10)
            ratios.append(measure(ten[:5], ten[5:], k))
        report("null" if k == 1.0 else f"optuna/{k:g}", ratios)
    # Pooled, an even count of Optuna runs reaches its own median best in exactly half: the lower
    # median (the slowest of that half) keeps its time finite; the contender's is taken the same way.
    target = statistics.median(best(c) for c in optuna)
    times = [sorted(time_to(c, target) for c in xs) for xs in (optuna, other)]
    low = [statistics.median_low(t) for t in times]
    print(f"pooled       target {target:.5f}: Optuna reaches it in {sum(t < INF for t in times[0])} of {len(optuna)},"
          f" lower median {low[0]:.1f} s; {args.contender} in {sum(t < INF for t in times[1])} of {len(other)},"
          f" lower median {low[1]:.1f} s; ratio {fmt(low[1] / low[0])}")


if __name__ == "__main__":
    main()
