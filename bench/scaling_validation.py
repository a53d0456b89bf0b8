#!/usr/bin/python3
"""Validation of the performance model without circularity (issue 32, docs/scaling.md#validation).

Fitted: alpha and beta of each gradient transport from `hpcml bench allreduce --reducer` (the reducer
alone, over one parameter of each size, 2 ranks), and the compute per sample, optimizer and data time
from 1-rank `hpcml bench scaling` points. Predicted, by `hpcml project train`: the 2-rank training step
of the MLP and ParticleNet-Lite over shared memory and over MPI, which stay out of the fit. Measured:
the median of REPS 2-rank `bench scaling` points. 3 and 4 ranks (oversubscribed on 2 cores) are
reported beside, without a target.

    /usr/bin/python3 bench/scaling_validation.py --workdir DIR [--reps 5] [--hpcml build/bin/hpcml]
        [--phase all|measure|predict]

Writes DIR/validation.json, bench/results/scaling-validation.json and docs/img/scaling-validation.png;
prints the error table (markdown). The rank counts alternate (1 2 3 4, 1 2 3 4, ...) within each
workload and transport, so a slow spell of the shared machine does not land on one point.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RANKS = (1, 2, 3, 4)
TRANSPORTS = ("shm", "mpi")


def workloads(data):
    mlp = ["--set", "model.name=mlp", "--set", "model.hidden=[1024, 1024]", "--set", "data.name=synthetic",
           "--set", "data.features=256", "--set", "data.classes=10", "--set", "data.samples=32768",
           "--set", "train.batch_size=128", "--set", "optimizer.name=sgd", "--set", "optimizer.lr=0.01"]
    pn = ["-c", os.path.join(ROOT, "configs", "particlenet-lite.yaml"), "--set", f'data.files=["{data}/*.h5"]',
          "--set", "train.batch_size=64"]
    return {"mlp": (mlp, 60, 20), "particlenet-lite": (pn, 30, 10)}  # args, timed steps, interval


def mpirun(n):
    # Open MPI's default binding (a core per rank up to 2 ranks; none when oversubscribed), as srun
    # binds under Slurm: unbound ranks would count the whole node as their own (reducer.overlap auto).
    cmd = ["mpirun"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    if n > os.cpu_count():
        cmd.append("--oversubscribe")
    return cmd + ["-n", str(n)]


def check(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        sys.exit(f"scaling_validation: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def measure(a):
    data = os.path.join(a.workdir, "data", "jets")
    if not os.path.isdir(data):
        check(mpirun(2) + [a.hpcml, "datagen", "jets", "-o", data, "--files", "4", "--events-per-file", "10000"])
    # The fit's input: the reducer alone, both transports, 2 ranks.
    check(mpirun(2) + [a.hpcml, "bench", "allreduce", "--reducer", "--min-bytes", "4K", "--max-bytes", "16M",
                       "--reps", str(a.reps), "--json", os.path.join(a.workdir, "allreduce.json")])
    for name, (args, steps, interval) in workloads(data).items():
        for transport in TRANSPORTS:
            out = os.path.join(a.workdir, f"sweep-{name}-{transport}")
            for rep in range(a.reps):
                for n in RANKS:
                    point = mpirun(n) + [a.hpcml, "bench", "scaling", "--out", out, "--steps", str(steps),
                                         "--interval", str(interval), "--no-plots", "--set", "runtime.threads=1",
                                         "--set", f"reducer.transport={transport}"] + args
                    check(point)
                    # The same per-rank work, every rank alone: the compute a rank gets among n (1-rank
                    # trainings run side by side; no communication, nothing of the n-rank run).
                    if n > 1:
                        check(point + ["--independent"])
                    print(f"measured {name} {transport} rep {rep} at {n} rank(s)", flush=True)
            check(["/usr/bin/python3", os.path.join(ROOT, "scripts", "plot-scaling.py"), out])


def predict(a):
    allreduce = os.path.join(a.workdir, "allreduce.json")
    results = {"reps": a.reps, "rows": []}
    for transport in TRANSPORTS:
        system = os.path.join(a.workdir, f"system-{transport}.yaml")
        fit = os.path.join(a.workdir, f"fit-{transport}.json")
        # All ranks of this machine share one node, whatever their count.
        check([a.hpcml, "project", "fit", "--allreduce", allreduce, "--impl", f"reducer-{transport}", "--path",
               "exposed_wait", "--algorithm", "ring", "--ranks", "2", "--ranks-per-node", str(max(RANKS)),
               "--json", fit, "--system-out", system])
        with open(fit) as f:
            results[f"fit_{transport}"] = json.load(f)
        for name in workloads("").keys():
            out = os.path.join(a.workdir, f"sweep-{name}-{transport}")
            with open(os.path.join(out, "scaling.json")) as f:
                measured = {r["ranks"]: r for r in json.load(f)["modes"]["weak"]}
            for n in RANKS:
                m = measured[n]
                row = {"workload": name, "transport": transport, "ranks": n, "measured_step_ms": m["step_ms"],
                       "measured_reps_samples_per_s": m["samples_per_s_reps"],
                       "measured_breakdown_ms": m["breakdown_ms"]}
                # sequential: the 1-rank point alone on the machine; loaded: the n independent 1-rank
                # trainings' (n = 1: the same). The model adds the straggler wait and the reduction.
                for kind, profile in (("sequential", "profile-weak.json"),
                                      ("loaded", "profile-weak.json" if n == 1
                                       else f"profile-weak-independent-n{n}.json")):
                    pred_path = os.path.join(a.workdir, f"prediction-{name}-{transport}-{kind}-n{n}.json")
                    check([a.hpcml, "project", "train", "--profile", os.path.join(out, profile), "--system",
                           system, "--ranks", str(n), "--json", pred_path])
                    with open(pred_path) as f:
                        p = json.load(f)["rows"][0]
                    row[f"predicted_{kind}_step_ms"] = 1000 * p["step_s"]
                    row[f"predicted_{kind}"] = p
                    row[f"error_{kind}"] = 1000 * p["step_s"] / m["step_ms"] - 1
                row["predicted_step_ms"], row["error"] = row["predicted_loaded_step_ms"], row["error_loaded"]
                results["rows"].append(row)
    return results


def report(a, results):
    lines = ["| workload | transport | ranks | measured step ms (median of %d) | predicted ms (loaded profile) | "
             "error | predicted ms (sequential profile) | error |" % a.reps, "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        flag = "" if r["ranks"] != 2 else (" (within 15%)" if abs(r["error"]) <= 0.15 else " (MISSED 15%)")
        lines.append(f"| {r['workload']} | {r['transport']} | {r['ranks']} | {r['measured_step_ms']:.2f} | "
                     f"{r['predicted_step_ms']:.2f} | {100 * r['error']:+.1f}%{flag} | "
                     f"{r['predicted_sequential_step_ms']:.2f} | {100 * r['error_sequential']:+.1f}% |")
    print("\n".join(lines))
    with open(os.path.join(a.workdir, "validation.json"), "w") as f:
        json.dump(results, f, indent=1)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "scaling-validation.json"), "w") as f:
        json.dump(results, f, indent=1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name in zip(axes, workloads("").keys()):
        for transport, color in zip(TRANSPORTS, ("tab:blue", "tab:red")):
            rows = [r for r in results["rows"] if r["workload"] == name and r["transport"] == transport]
            ax.plot([r["ranks"] for r in rows], [r["measured_step_ms"] for r in rows], "o-", color=color,
                    label=f"{transport} measured")
            ax.plot([r["ranks"] for r in rows], [r["predicted_step_ms"] for r in rows], "s--", color=color,
                    label=f"{transport} predicted")
        ax.axvspan(2.5, 4.5, color="0.92")
        ax.text(3.5, ax.get_ylim()[1] * 0.95, "oversubscribed\n(2 cores)", ha="center", va="top", fontsize=8)
        ax.set_title(f"{name}: step time, weak scaling")
        ax.set_xlabel("ranks")
        ax.set_ylabel("ms per step")
        ax.set_xticks(RANKS)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(ROOT, "docs", "img", "scaling-validation.png"), dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--hpcml", default=os.path.join(ROOT, "build", "bin", "hpcml"))
    p.add_argument("--phase", choices=("all", "measure", "predict"), default="all")
    a = p.parse_args()
    a.hpcml = os.path.abspath(a.hpcml)
    os.makedirs(a.workdir, exist_ok=True)
    if a.phase in ("all", "measure"):
        measure(a)
    if a.phase in ("all", "predict"):
        report(a, predict(a))


if __name__ == "__main__":
    main()
