#!/usr/bin/env python3
"""The ensemble benchmark (docs/benchmarks.md#ensembles), in one run:

1. members per hour of M members on 2 ranks: `hpcml ensemble` with one member per process at a time
   (ranks_per_member 1, pack 1), packed (pack M/2: one pack per rank), and M sequential
   `mpirun -n 2 hpcml train` runs of the same member configs; the three alternate, --rounds times;
2. the closure on `hpcml datagen lr`: the packed-off ensemble's `hpcml infer` over held-out events
   (infer.members: true) and scripts/ensemble-calibration.py: median |log r̂ − log r| of the
   ensemble against the median single member, the size scan and its figure.

    bench/ensemble_bench.py --out DIR [--members 16] [--events 20000] [--epochs 8] [--rounds 2]

Writes DIR/ensemble-bench.json and prints a Markdown table. The data are standardised copies of
x (field x_std, from the training files' mean and standard deviation) so that the MLP sees inputs of
unit scale; log_r and label are the generator's.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np

SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.environ.get("HPCML_BIN", os.path.join(SOURCE, "build", "bin", "hpcml"))
MPI = ["mpiexec", "-n", "2", "--oversubscribe", "--allow-run-as-root"]


def sh(cmd, timeout=7200):
    t = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        sys.exit(f"ensemble_bench: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return time.monotonic() - t, p.stdout


def make_data(out, events):
    data = os.path.join(out, "lr")
    if not os.path.exists(os.path.join(data, "lr-00003.h5")):
        sh(MPI + [BIN, "datagen", "lr", "-o", data, "--files", "4", "--events-per-file", str(events)])
    files = [os.path.join(data, f"lr-0000{i}.h5") for i in range(4)]
    x = np.concatenate([h5py.File(f)["x"][()] for f in files[:2]])
    mean, std = x.mean(0), x.std(0)
    for f in files:
        with h5py.File(f, "a") as h:
            if "x_std" in h:
                continue
            d = h.create_dataset("x_std", data=((h["x"][()] - mean) / std).astype(np.float32), chunks=h["x"].chunks)
            for key, value in h["x"].attrs.items():
                d.attrs[key] = value
    return files


def base_config(files, epochs):
    return {"runtime": {"threads": 1},
            "model": {"name": "mlp", "hidden": [64, 64], "seed": 1},
            "data": {"name": "hdf5", "files": files[:2], "validation_files": [files[2]], "input": "x_std",
                     "target": "label", "classes": 2, "chunk_rows": 1000, "window": 8000},
            "optimizer": {"name": "adam", "lr": 0.002},
            "schedule": {"name": "cosine"},
            "train": {"epochs": epochs, "batch_size": 128, "log_every": 100, "seed": 1},
            "checkpoint": {"keep": 1},
            "run": {"progress": "lines"}}


def write(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def ensemble_run(out, files, a, name, pack):
    d = os.path.join(out, name)
    shutil.rmtree(d, ignore_errors=True)
    c = base_config(files, a.epochs)
    c["ensemble"] = {"members": a.members, "pack": pack, "dir": d}
    seconds, _ = sh(MPI + [BIN, "ensemble", "-c", write(d + ".yaml", c)])
    with open(os.path.join(d, "summary.json")) as f:
        assert json.load(f)["counts"] == {"complete": a.members}
    return seconds, d


def sequential_run(out, files, a):
    d = os.path.join(out, "sequential")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    start = time.monotonic()
    for k in range(a.members):
        c = base_config(files, a.epochs)
        c["model"]["seed"] += k
        c["train"]["seed"] += k
        c["run"]["dir"] = os.path.join(d, f"member-{k}")
        sh(MPI + [BIN, "train", "-c", write(os.path.join(d, f"member-{k}.yaml"), c)])
    return time.monotonic() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    files = make_data(a.out, a.events)
    timings = {"processes": [], "packed": [], "sequential": []}
    kept = None
    for r in range(a.rounds):  # alternated, so a change of machine load falls on every variant
        s, kept = ensemble_run(a.out, files, a, "ensemble", pack=1)
        timings["processes"].append(s)
        s, _ = ensemble_run(a.out, files, a, "ensemble-packed", pack=max(1, a.members // 2))
        timings["packed"].append(s)
        timings["sequential"].append(sequential_run(a.out, files, a))
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in timings.items()), flush=True)
    rates = {k: [3600 * a.members / s for s in v] for k, v in timings.items()}
    # Closure on held-out events (file 3) with the last round's one-member-per-process ensemble.
    infer = os.path.join(a.out, "infer")
    shutil.rmtree(infer, ignore_errors=True)
    ic = {"run": {"dir": kept}, "runtime": {"threads": 1},
          "infer": {"inputs": [files[3]], "output_dir": infer, "members": True, "copy_fields": ["label", "log_r"]}}
    sh(MPI + [BIN, "infer", "-c", write(os.path.join(a.out, "infer.yaml"), ic)])
    sh([sys.executable, os.path.join(SOURCE, "scripts", "ensemble-calibration.py"), infer])
    with open(os.path.join(infer, "nominal", "calibration.json")) as f:
        cal = json.load(f)
    result = {"members": a.members, "events_per_file": a.events, "epochs": a.epochs, "rounds": a.rounds,
              "seconds": timings, "members_per_hour": rates, "calibration": {
                  k: cal[k] for k in ("events", "ensemble_error", "median_member_error", "member_errors",
                                      "ensemble_spread_median", "size_scan")},
              "figure": os.path.join(infer, "nominal", "closure_vs_size.png")}
    write(os.path.join(a.out, "ensemble-bench.json"), result)
    print("| variant | wall s (per round) | members/hour (per round) |\n|---|---|---|")
    for k in timings:
        print(f"| {k} | {', '.join(f'{s:.1f}' for s in timings[k])} | {', '.join(f'{x:.0f}' for x in rates[k])} |")
    print(f"\nclosure on {cal['events']} held-out events: median |log r̂ − log r| ensemble {cal['ensemble_error']:.4f}, "
          f"median member {cal['median_member_error']:.4f}")
    print("| members | error (mean over groups) | min | max |\n|---|---|---|---|")
    for row in cal["size_scan"]:
        print(f"| {row['members']} | {row['error']:.4f} | {row['error_min']:.4f} | {row['error_max']:.4f} |")


if __name__ == "__main__":
    main()
