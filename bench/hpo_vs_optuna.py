#!/usr/bin/python3
"""`hpcml hpo` against Optuna on one objective, in one run (docs/hpo.md, docs/benchmarks.md).

Usage: /usr/bin/python3 bench/hpo_vs_optuna.py --workdir DIR [--seeds 5] [--first-seed 0] [--trials 16] [--epochs 36]
           [--schedule constant|cosine] [--contenders optuna,asha,none]
           [--asha-trials N] [--asha-grace 1] [--asha-eta 3] [--asha-mode promote|stop]
           [--asha-rung-value last|best] [--lr-range 1e-4,3e-2] [--no-replay]
           [--hpcml build/bin/hpcml] [--json bench/results/hpo-vs-optuna.json] [--plot docs/img/hpo-vs-optuna.png]
           [--replot]

The objective: an MLP regressing FACILE's target (hpcml datagen calo channels, relative MSE, the
validation loss after --epochs epochs, one thread per trial), over learning rate, weight decay,
width and optimizer (the learning rate loguniform in --lr-range: 1e-4,3e-2 by default, 1e-5,1e-1
the range of Optuna's own examples), at a constant learning rate or on a cosine schedule over the
--epochs (--schedule). The contenders (--contenders; the replay follows optuna unless --no-replay), each with the same
space on the same two cores, alternated seed by seed:
  optuna      ../shared/anchors/optuna_reference.py --n-jobs 2 (Optuna's TPE, each trial an
              `hpcml train` process);
  hpo-asha    mpirun -n 2 hpcml hpo: TPE + ASHA (--asha-mode, grace --asha-grace epochs, eta --asha-eta) on 2 groups of 1 rank, with
              --asha-trials trials (default 4x: the budget is compute, and a trial stopped at a rung
              costs a fraction of a whole one);
  hpo         the same with the scheduler off and --trials trials, as Optuna;
  hpo-replay  right after each Optuna run, Optuna's own trials (read from its trial directories)
              through `hpcml hpo` as hpo.enqueue, in Optuna's trial order, scheduler off: the same
              points through both drivers, so the difference in time is the drivers' alone.
Times are from each command's launch. The target is the median over seeds of Optuna's best
value; a run's time to target is when its best complete value first reaches it.

Also reported: how well a trial's validation loss at each of ASHA's rungs predicts its final one
(Spearman's rank correlation over Optuna's trials, which all train the whole budget). Early
stopping can only win where that correlation is high.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)
ANCHOR = os.path.join(SOURCE, "..", "shared", "anchors", "optuna_reference.py")

LR_RANGE = (1e-4, 3e-2)  # the first three runs' learning-rate range; --lr-range replaces it
SPACE = {  # the anchor's names -> (hpcml's dotted key, spec)
    "lr": ("optimizer.lr", {"type": "loguniform", "low": LR_RANGE[0], "high": LR_RANGE[1]}),
    "wd": ("optimizer.weight_decay", {"type": "loguniform", "low": 1e-6, "high": 1e-2}),
    "hidden": ("model.hidden", {"type": "categorical", "choices": ["[32, 32]", "[64, 64]", "[128, 128]"]}),
    "opt": ("optimizer.name", {"type": "categorical", "choices": ["sgd", "adam", "adamw"]}),
}


def base_config(data, epochs, schedule="constant"):
    config = {"runtime": {"threads": 1}, "log": {"level": "warn"},
            "model": {"name": "mlp", "hidden": [64, 64]},
            "data": {"name": "hdf5", "files": [f"{data}/calo-channels-0000[0-2].h5"],
                     "validation_files": [f"{data}/calo-channels-00003.h5"], "input": "inputs", "target": "energy"},
            "optimizer": {"name": "adam", "lr": 0.003},
            "train": {"epochs": epochs, "batch_size": 128, "loss": "relative_mse", "log_every": 100000},
            "run": {"progress": "lines"}}
    if schedule != "constant":
        config["schedule"] = {"name": schedule}
    return config


def run_optuna(args, work, seed):
    base = os.path.join(work, "base.yaml")
    space = os.path.join(work, "space.json")
    cmd = [sys.executable, ANCHOR, "--space", space, "--trials", str(args.trials), "--metric-file",
           "{rundir}/summary.json", "--metric", "validation.val_loss", "--direction", "minimize", "--seed", str(seed),
           "--n-jobs", "2", "--", args.hpcml, "train", "-c", base, "--set", "optimizer.lr={lr}", "--set",
           "optimizer.weight_decay={wd}", "--set", "model.hidden={hidden}", "--set", "optimizer.name={opt}",
           "--set", "run.dir={rundir}"]
    tmp = os.path.join(work, f"optuna-s{seed}")  # the reference's trial directories land here
    os.makedirs(tmp, exist_ok=True)
    for old in glob.glob(os.path.join(tmp, "optuna-ref-*")):
        subprocess.run(["rm", "-rf", old], check=True)
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, TMPDIR=tmp)).stdout
    wall = time.time() - t0
    r = json.loads(out.strip().splitlines()[-1])
    offset = wall - r["wall_s"]  # the reference's start-up (import optuna) before its own clock
    return {"impl": r["impl"], "seed": seed, "wall_s": wall, "best": r["best_value"], "trials": r["trials"],
            "curve": [(p["t_s"] + offset, p["best"]) for p in r["best_so_far"]], "points": optuna_points(tmp),
            "val_curves": optuna_val_curves(tmp)}


def optuna_val_curves(tmp):
    """Each complete Optuna trial's validation loss after every epoch (from its metrics.jsonl)."""
    curves = []
    for path in glob.glob(os.path.join(tmp, "optuna-ref-*", "trial*", "metrics.jsonl")):
        with open(path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        curve = [line["val_loss"] for line in lines if "val_loss" in line]
        if curve and all(v == v and abs(v) != float("inf") for v in curve):
            curves.append(curve)
    return curves


def ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    for rank, i in enumerate(order):
        r[i] = float(rank)
    return r


def spearman(xs, ys):
    """Spearman's rank correlation (no ties expected in float losses)."""
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5


def rung_correlation(curves, epochs, rungs):
    """{epoch: Spearman(loss after that epoch, final loss)} over complete trials."""
    full = [c for c in curves if len(c) >= epochs]
    return {r: spearman([c[r - 1] for c in full], [c[epochs - 1] for c in full]) for r in rungs if r < epochs}


def optuna_points(tmp):
    """Optuna's trials in its trial order, as hpcml parameters, from the config.yaml that
    `hpcml train` wrote in each trial's directory."""
    (root,) = glob.glob(os.path.join(tmp, "optuna-ref-*"))
    points = []
    for n in range(len(glob.glob(os.path.join(root, "trial*")))):
        with open(os.path.join(root, f"trial{n}", "config.yaml")) as f:
            c = yaml.safe_load(f)
        points.append({"optimizer.lr": c["optimizer"]["lr"], "optimizer.weight_decay": c["optimizer"]["weight_decay"],
                       "model.hidden": "[" + ", ".join(str(w) for w in c["model"]["hidden"]) + "]",
                       "optimizer.name": c["optimizer"]["name"]})
    return points


def run_hpcml(args, work, seed, mode, plots=False, points=None):
    """mode: asha, none, or replay (`points` enqueued, scheduler off)."""
    asha = mode == "asha"
    name = f"hpo-{mode}-s{seed}"
    study_dir = os.path.join(work, name)
    subprocess.run(["rm", "-rf", study_dir], check=True)
    config = base_config(args.data, args.epochs, args.schedule)
    trials = args.asha_trials if asha else len(points) if points else args.trials
    config["hpo"] = {"space": {key: spec for key, spec in SPACE.values()}, "sampler": "tpe", "trials": trials,
                     "seed": seed, "study_dir": study_dir, "plots": plots,
                     "scheduler": ({"name": "asha", "mode": args.asha_mode, "rung_value": args.asha_rung_value,
                                    "grace_period": args.asha_grace, "reduction_factor": args.asha_eta,
                                    "max_resource": args.epochs}
                                   if asha else {"name": "none"})}
    if points:
        config["hpo"]["enqueue"] = points
    path = os.path.join(work, name + ".yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "2", args.hpcml, "hpo", "-c", path]
    t0 = time.time()
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.time() - t0
    with open(os.path.join(study_dir, "summary.json")) as f:
        s = json.load(f)
    with open(os.path.join(study_dir, "study.json")) as f:
        offset = json.load(f)["started_unix"] - t0
    return {"impl": "hpcml-tpe-" + mode, "seed": seed, "wall_s": wall,
            "best": s["best"]["value"], "trials": len(s["trials"]), "counts": s["counts"],
            "epochs_trained": sum(t.get("resource", 0) for t in s["trials"] if t["state"] in ("complete", "pruned")),
            "idle_fraction": s.get("group_idle_fraction"),
            "curve": [(p["t_s"] + offset, p["best"]) for p in s["best_so_far"]]}


def time_to(curve, target):
    return next((t for t, best in curve if best <= target), float("inf"))


def group(runs):
    """{"optuna"|"hpcml-<mode>": [runs]}"""
    by = {}
    for r in runs:
        by.setdefault(r["impl"].split("-")[0] + ("" if r["impl"].startswith("optuna") else "-" + r["impl"].split("-")[-1]),
                      []).append(r)
    return by


def draw(by, summary, path):
    """Best value so far against time, every run, around the target (summary["target"])."""
    target = summary["target"]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"optuna": "tab:orange", "hpcml-asha": "tab:blue", "hpcml-none": "tab:green", "hpcml-replay": "tab:red"}
    for impl, rs in by.items():
        for i, r in enumerate(rs):
            xs = [t for t, _ in r["curve"]] + [r["wall_s"]]
            ys = [b for _, b in r["curve"]] + [r["curve"][-1][1]]
            ax.step(xs, ys, where="post", color=colors.get(impl, "k"), alpha=0.7, label=impl if i == 0 else None)
    ax.axhline(target, color="k", ls="--", lw=0.8, label="target (Optuna's median best)")
    ax.set_xlabel("seconds since launch")
    ax.set_ylabel("best validation loss so far")
    lowest = min(r["best"] for rs in by.values() for r in rs)
    ax.set_ylim(lowest - 0.2 * (target - lowest) - 1e-4, target + 2.5 * (target - lowest) + 1e-3)
    lr = summary.get("lr_range", LR_RANGE)  # results from before --lr-range used LR_RANGE
    ax.set_title(f"{summary['trials']} trials ({summary['schedule']} learning rate in [{lr[0]:g}, {lr[1]:g}]), "
                 f"2 cores, {summary['seeds']} seeds each", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)


def lr_range(text):
    """--lr-range's LOW,HIGH: 0 < LOW < HIGH, or argparse's one-line error."""
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (two numbers), found {text!r}")
    if not 0 < low < high:
        raise argparse.ArgumentTypeError(f"expected 0 < LOW < HIGH, found {text!r}")
    return low, high


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0, help="the seeds are FIRST_SEED .. FIRST_SEED+SEEDS-1")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=36)
    ap.add_argument("--schedule", choices=["constant", "cosine"], default="constant",
                    help="the trials' learning-rate schedule (cosine: over --epochs)")
    ap.add_argument("--contenders", default="optuna,asha,none",
                    help="comma-separated, of optuna (followed by its replay), asha, none")
    ap.add_argument("--asha-grace", type=int, default=1, help="ASHA's first rung, in epochs")
    ap.add_argument("--asha-eta", type=int, default=3, help="ASHA's reduction factor")
    ap.add_argument("--asha-mode", choices=["promote", "stop"], default="promote", help="hpo.scheduler.mode")
    ap.add_argument("--asha-rung-value", choices=["last", "best"], default="last", help="hpo.scheduler.rung_value")
    ap.add_argument("--asha-trials", type=int, default=0,
                    help="trials of the ASHA study (default 4x --trials: a pruned trial costs a fraction of one)")
    ap.add_argument("--lr-range", type=lr_range, default=LR_RANGE, metavar="LOW,HIGH",
                    help="LOW,HIGH of optimizer.lr, loguniform (1e-5,1e-1: the range of Optuna's own examples)")
    ap.add_argument("--no-replay", action="store_true",
                    help="skip the replay of Optuna's trials (it doubles Optuna's time; the driver-overhead measure)")
    ap.add_argument("--hpcml", default=os.path.join(SOURCE, "build", "bin", "hpcml"))
    ap.add_argument("--json", default=os.path.join(SOURCE, "bench", "results", "hpo-vs-optuna.json"))
    ap.add_argument("--plot", default=os.path.join(SOURCE, "docs", "img", "hpo-vs-optuna.png"))
    ap.add_argument("--replot", action="store_true", help="only redraw --plot from the runs in --json")
    args = ap.parse_args()
    if args.replot:
        with open(args.json) as f:
            saved = json.load(f)
        draw(group(saved["runs"]), saved["summary"], args.plot)
        return
    args.hpcml = os.path.abspath(args.hpcml)
    low, high = args.lr_range
    SPACE["lr"][1].update(low=low, high=high)
    args.asha_trials = args.asha_trials or 4 * args.trials
    work = os.path.abspath(args.workdir)
    args.data = os.path.join(work, "data", "calo")
    os.makedirs(work, exist_ok=True)
    if not os.path.exists(os.path.join(args.data, "calo-channels-00003.h5")):
        subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", "2", args.hpcml, "datagen", "calo",
                        "-o", args.data, "--files", "4", "--events-per-file", "25000"], check=True)
    with open(os.path.join(work, "base.yaml"), "w") as f:
        yaml.safe_dump(base_config(args.data, args.epochs, args.schedule), f)
    with open(os.path.join(work, "space.json"), "w") as f:
        json.dump({name: spec for name, (_, spec) in SPACE.items()}, f)

    runs = []
    order = [c for c in ["optuna", "asha", "none"] if c in args.contenders.split(",")]
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for who in order[seed % len(order):] + order[:seed % len(order)]:  # rotate who goes first
            if who == "optuna":
                r = run_optuna(args, work, seed)
                runs.append(r)
                print(json.dumps({k: v for k, v in r.items() if k not in ("curve", "points", "val_curves")}), flush=True)
                if args.no_replay:
                    continue
                # Optuna's trials through hpcml's driver, right after it.
                r = run_hpcml(args, work, seed, "replay", points=r["points"])
            else:
                r = run_hpcml(args, work, seed, who, plots=(seed == 0))
            runs.append(r)
            print(json.dumps({k: v for k, v in r.items() if k not in ("curve", "points")}), flush=True)

    by = group(runs)
    target = statistics.median(r["best"] for r in by["optuna"])
    summary = {"target": target, "trials": args.trials, "asha_trials": args.asha_trials, "asha_grace": args.asha_grace,
               "asha_eta": args.asha_eta, "asha_mode": args.asha_mode, "asha_rung_value": args.asha_rung_value,
               "schedule": args.schedule, "lr_range": [low, high], "epochs": args.epochs, "seeds": args.seeds, "first_seed": args.first_seed, "impls": {}}
    asha_rungs, r = [], args.asha_grace
    while r < args.epochs:
        asha_rungs.append(r)
        r *= args.asha_eta
    curves = [c for o in by["optuna"] for c in o["val_curves"]]
    summary["rung_correlation"] = {"trials": len(curves),
                                   "spearman": rung_correlation(curves, args.epochs, sorted({1, 2, 3, 4, 6, 9, 12, 18}
                                                                                           | set(asha_rungs)))}
    for impl, rs in by.items():
        ttt = [time_to(r["curve"], target) for r in rs]
        summary["impls"][impl] = {
            "median_time_to_target_s": statistics.median(ttt), "times_to_target_s": ttt,
            "reached": sum(t != float("inf") for t in ttt), "median_best": statistics.median(r["best"] for r in rs),
            "median_wall_s": statistics.median(r["wall_s"] for r in rs),
            "idle_fraction": [r.get("idle_fraction") for r in rs]}
    o = summary["impls"]["optuna"]["median_time_to_target_s"]
    for impl in [i for i in ("hpcml-asha", "hpcml-none", "hpcml-replay") if i in summary["impls"]]:
        summary["impls"][impl]["time_to_target_vs_optuna"] = summary["impls"][impl]["median_time_to_target_s"] / o
    # The replay against the Optuna run it replays, seed by seed: the same trials in the same order.
    pairs = list(zip(by["optuna"], by.get("hpcml-replay", [])))
    if pairs:
        reached = [(time_to(r["curve"], target), time_to(o["curve"], target)) for o, r in pairs]
        summary["replay"] = {
            "wall_ratio": [r["wall_s"] / o["wall_s"] for o, r in pairs],
            "median_wall_ratio": statistics.median(r["wall_s"] / o["wall_s"] for o, r in pairs),
            "time_to_target_ratio": [a / b for a, b in reached if b != float("inf")],
            "same_best": [r["best"] == o["best"] for o, r in pairs],
            "best_pairs": [(o["best"], r["best"]) for o, r in pairs]}
        if summary["replay"]["time_to_target_ratio"]:
            summary["replay"]["median_time_to_target_ratio"] = statistics.median(
                summary["replay"]["time_to_target_ratio"])
    print(json.dumps(summary, indent=1))
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"summary": summary, "runs": [{k: v for k, v in r.items() if k != "val_curves"} for r in runs]}, f,
                  indent=1, default=str)

    draw(by, summary, args.plot)


if __name__ == "__main__":
    main()
