#!/usr/bin/python3
"""hpcml bench ddp against PyTorch DDP (gloo), in one run, alternating.

Every round runs each configuration once, in a rotated order, so slow phases of a
shared machine hit all of them alike; figures are medians over rounds. Ratios are
taken between medians measured in the same run.

  bench/ddp_compare.py [--rounds 5] [--hpcml build/bin/hpcml] [--json out.json] [--only NAME,...]

Configurations (binding: mpirun binds each rank to one core; the reference script
binds rank r to core r):
  pytorch-1, pytorch-2   ../shared/anchors/ddp_reference.sh 1|2
  hpcml-1, hpcml-2       mpirun -n 1|2 hpcml bench ddp
  hpcml-2-bf16           mpirun -n 2 hpcml bench ddp --compression bf16
  hpcml-2-mpi            mpirun -n 2 hpcml bench ddp --transport mpi (bucketed MPI allreduce
                         instead of the default shared-memory transport)
  plain-1                mpirun -n 1 hpcml bench ddp --plain (LibTorch without hpcml)
  plain-2                mpirun -n 2 ... --plain: two independent loops, no communication
                         (this machine's scaling ceiling)
The hpcml configurations step the optimizer (hpcml's FusedSgd) inside the reduction, the
default (--no-step-in-reduction: after it); over shared memory its SGD (no momentum) runs on
node-shared parameters, each rank updating 1/N. Plain ones use torch's SGD.
Then, once: the loss after 200 steps at 2 ranks, fp32 vs bf16.

With --model NAME (a zoo model, e.g. particlenet): only the hpcml and plain
configurations run (the PyTorch reference script is the MLP), on that model with
random inputs of its shape, --steps timed steps after --warmup; no loss check.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ANCHORS = os.path.join(ROOT, "..", "shared", "anchors")


def mpirun(n):
    flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return ["mpirun", "-n", str(n)] + flags


def configs(hpcml, extra=()):
    ref = os.path.join(ANCHORS, "ddp_reference.sh")
    bench = [hpcml, "bench", "ddp", *extra]
    return {
        "pytorch-1": [ref, "1"],
        "pytorch-2": [ref, "2"],
        "hpcml-1": mpirun(1) + bench,
        "hpcml-2": mpirun(2) + bench,
        "hpcml-2-bf16": mpirun(2) + bench + ["--compression", "bf16"],
        "hpcml-2-mpi": mpirun(2) + bench + ["--transport", "mpi"],
        "plain-1": mpirun(1) + bench + ["--plain"],
        "plain-2": mpirun(2) + bench + ["--plain"],
    }


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-2000:]}")
    line = [l for l in out.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hpcml", default=os.path.join(ROOT, "build", "bin", "hpcml"))
    ap.add_argument("--json", default="")
    ap.add_argument("--only", default="", help="comma-separated configuration names")
    ap.add_argument("--skip-loss", action="store_true")
    ap.add_argument("--model", default="", help="a zoo model instead of the reference MLP")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()

    extra = ["--steps", str(a.steps), "--warmup", str(a.warmup)]
    if a.model:
        extra += ["--model", a.model]
        a.skip_loss = True
    all_configs = configs(a.hpcml, extra)
    if a.model:
        all_configs = {k: v for k, v in all_configs.items()
                       if k in ("hpcml-1", "hpcml-2", "hpcml-2-mpi", "plain-1", "plain-2")}
    names = a.only.split(",") if a.only else list(all_configs)
    samples = {n: [] for n in names}
    for r in range(a.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            samples[name].append(run_json(all_configs[name])["samples_per_s"])
        print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{n} {samples[n][-1]:.0f}" for n in names), flush=True)

    med = {n: statistics.median(v) for n, v in samples.items()}
    result = {"model": a.model or "mlp", "steps": a.steps, "rounds": a.rounds, "samples_per_s": samples, "median_samples_per_s": med, "ratios": {}}
    ratios = result["ratios"]
    if "hpcml-2" in med and "pytorch-2" in med:
        ratios["hpcml2_over_pytorch2"] = med["hpcml-2"] / med["pytorch-2"]
    if "hpcml-2" in med and "hpcml-1" in med:
        ratios["scaling_efficiency_fp32"] = med["hpcml-2"] / (2 * med["hpcml-1"])
    if "hpcml-2-bf16" in med and "hpcml-1" in med:
        ratios["scaling_efficiency_bf16"] = med["hpcml-2-bf16"] / (2 * med["hpcml-1"])
    if "hpcml-2-mpi" in med and "hpcml-1" in med:
        ratios["scaling_efficiency_fp32_mpi_transport"] = med["hpcml-2-mpi"] / (2 * med["hpcml-1"])
    if "plain-1" in med and "hpcml-1" in med:
        ratios["overhead_1rank_vs_plain"] = med["plain-1"] / med["hpcml-1"] - 1
    if "plain-2" in med and "plain-1" in med:
        ratios["ceiling_efficiency_no_communication"] = med["plain-2"] / (2 * med["plain-1"])
    if "pytorch-2" in med and "pytorch-1" in med:
        ratios["pytorch_scaling_efficiency"] = med["pytorch-2"] / (2 * med["pytorch-1"])

    if not a.skip_loss:
        fp32 = run_json(mpirun(2) + [a.hpcml, "bench", "ddp", "--steps", "200", "--warmup", "0"])
        bf16 = run_json(mpirun(2) + [a.hpcml, "bench", "ddp", "--steps", "200", "--warmup", "0",
                                     "--compression", "bf16"])
        result["loss_after_200_steps"] = {"fp32": fp32["final_loss"], "bf16": bf16["final_loss"],
                                          "relative_difference": abs(bf16["final_loss"] - fp32["final_loss"])
                                          / fp32["final_loss"]}

    print("\n| configuration | median samples/s | min | max |\n|---|---|---|---|")
    for n in names:
        print(f"| {n} | {med[n]:.0f} | {min(samples[n]):.0f} | {max(samples[n]):.0f} |")
    print()
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    if "loss_after_200_steps" in result:
        l = result["loss_after_200_steps"]
        print(f"loss after 200 steps: fp32 {l['fp32']:.6f}, bf16 {l['bf16']:.6f} "
              f"(relative difference {l['relative_difference']:.4%})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
