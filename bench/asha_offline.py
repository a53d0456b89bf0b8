#!/usr/bin/python3
"""ASHA's two forms against best-of-N full trials, simulated offline on recorded learning curves.

Usage: /usr/bin/python3 bench/asha_offline.py STUDY_DIR [STUDY_DIR ...] [--baseline-trials 16] [--repeats 400]
           [--settings 2:2:48,4:2:32,...] [--rung-value last|best]

Each STUDY_DIR is an `hpcml hpo` study run with scheduler none (every trial trained its whole
budget; a random sampler gives an unbiased pool). Its trials' metrics.jsonl give, per trial, the
validation loss after every epoch and the time each epoch took. The simulation draws configs from
that pool with replacement and runs them on 2 simulated groups:
  baseline  --baseline-trials whole trials, each group taking the next when it frees up (as
            Optuna with --n-jobs 2 and a random sampler);
  promote   ASHA's promotion form (hpo.scheduler.mode: promote): a free group takes the best
            paused trial in the top floor(n/eta) of a rung (highest rung first), else a new one;
  stop      ASHA's stopping form (mode: stop): at each rung a trial goes on iff it is within the
            max(1, floor(n/eta)) best so far, else the group takes a new trial.
A rung ranks the value after its epoch, or with --rung-value best the best value so far
(hpo.scheduler.rung_value). A part costs the recorded seconds of its epochs plus 0.3 s; a whole
baseline trial 1 s more (a process start). The target is the median best of the baseline runs;
a run's time to target is when its best complete value first reaches it. Runs are grouped 5 at a
time like seeds, and the ratio is the median over groups of (median time to target) against the
baseline's.

This measures the schedulers on a fixed pool, without any sampler's learning: it says which
settings can win on an objective, not what TPE on top of them will do.
"""
import argparse
import glob
import heapq
import json
import math
import os
import random
import statistics


def load_pool(dirs, epochs):
    pool = []
    for d in dirs:
        for path in glob.glob(os.path.join(d, "trials", "*", "metrics.jsonl")):
            with open(path) as f:
                lines = [json.loads(line) for line in f if line.strip()]
            lines = [line for line in lines if "val_loss" in line]
            if len(lines) < epochs:  # failed (diverged): costs about a second, never completes
                pool.append(([math.inf] * epochs, [1.0 / epochs] * epochs))
                continue
            times = [line["time_s"] for line in lines[:epochs]]
            pool.append(([line["val_loss"] for line in lines[:epochs]], [b - a for a, b in zip([0.0] + times, times)]))
    return pool


def rungs_of(grace, eta, epochs):
    rungs, r = [], grace
    while r < epochs:
        rungs.append(r)
        r *= eta
    return rungs + [epochs]


def best_curve(finishes):
    out, best = [], math.inf
    for t, v in sorted(finishes):
        if v < best:
            best = v
            out.append((t, best))
    return out


def baseline(pool, rng, n):
    free, finishes = [0.0, 0.0], []
    for _ in range(n):
        loss, dt = rng.choice(pool)
        k = free.index(min(free))
        free[k] += sum(dt) + 1.0
        finishes.append((free[k], loss[-1]))
    return best_curve(finishes)


def asha(pool, rng, n, grace, eta, epochs, mode, rung_value="last"):
    rungs = rungs_of(grace, eta, epochs)
    drawn = [rng.choice(pool) for _ in range(n)]
    reports = [[] for _ in rungs]  # per rung: (value, arrival, trial)
    promoted = [set() for _ in rungs]
    state = {"next": 0, "arrival": 0}
    queue, finishes = [], []

    def cost(trial, k):
        lo = 0 if k == 0 else rungs[k - 1]
        return sum(drawn[trial][1][lo:rungs[k]]) + 0.3

    def new_trial():
        if state["next"] >= n:
            return None
        state["next"] += 1
        return state["next"] - 1, 0

    def promotion():
        for k in reversed(range(len(rungs) - 1)):
            for value, _, trial in sorted(reports[k])[:len(reports[k]) // eta]:
                if trial not in promoted[k] and value != math.inf:
                    promoted[k].add(trial)
                    return trial, k + 1
        return None

    def launch(now, job):
        if job is not None:
            heapq.heappush(queue, (now + cost(*job), job))

    for _ in range(2):  # two groups
        launch(0.0, new_trial())
    while queue:
        now, (trial, k) = heapq.heappop(queue)
        curve = drawn[trial][0]
        value = curve[rungs[k] - 1]
        if k == len(rungs) - 1:
            if value != math.inf:
                finishes.append((now, value))
            launch(now, (promotion() if mode == "promote" else None) or new_trial())
            continue
        if rung_value == "best":  # the best value so far is what the rung ranks
            value = min(curve[:rungs[k]])
        reports[k].append((value, state["arrival"], trial))
        state["arrival"] += 1
        if mode == "promote":
            launch(now, promotion() or new_trial())
        else:
            values = sorted(v for v, _, _ in reports[k])
            m = max(1, len(values) // eta)
            goes_on = value != math.inf and value <= values[m - 1]
            launch(now, (trial, k + 1) if goes_on else new_trial())
    return best_curve(finishes)


def time_to(curve, target):
    return next((t for t, best in curve if best <= target), math.inf)


def grouped_median(times):
    groups = [statistics.median(times[i:i + 5]) for i in range(0, len(times) - 4, 5)]
    return statistics.median(groups)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("studies", nargs="+")
    ap.add_argument("--epochs", type=int, default=36)
    ap.add_argument("--baseline-trials", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=400)
    ap.add_argument("--settings", default="1:3:64,2:2:48,4:2:32,4:2:64,4:3:48,6:2:48,9:3:24",
                    help="grace:eta:trials, comma-separated")
    ap.add_argument("--rung-value", choices=["last", "best"], default="last",
                    help="what a rung ranks: the value after the rung's epoch, or the best so far")
    args = ap.parse_args()
    pool = load_pool(args.studies, args.epochs)
    rng = random.Random(0)
    base = [baseline(pool, rng, args.baseline_trials) for _ in range(args.repeats)]
    target = statistics.median(c[-1][1] for c in base)
    base_t = [time_to(c, target) for c in base]
    base_median = grouped_median(base_t)
    print(f"pool {len(pool)} trials; target {target:.5f}; baseline: reached {sum(t < math.inf for t in base_t) / len(base_t):.2f}"
          f", median time to target {base_median:.1f} s")
    print("grace eta trials | promote: reached, time ratio | stop: reached, time ratio")
    for setting in args.settings.split(","):
        grace, eta, n = (int(x) for x in setting.split(":"))
        row = [f"{grace:5d} {eta:3d} {n:6d}"]
        for mode in ("promote", "stop"):
            t = [time_to(asha(pool, rng, n, grace, eta, args.epochs, mode, args.rung_value), target)
                 for _ in range(args.repeats)]
            ratio = grouped_median(t) / base_median
            row.append(f"{sum(x < math.inf for x in t) / len(t):.2f}, {ratio:.2f}x")
        print(" | ".join(row))


if __name__ == "__main__":
    main()
