#!/usr/bin/python3
"""Projections (not measurements) of data-parallel training to 64-4,096 ranks with `hpcml project train`
(issue 32, docs/scaling.md#projections).

A. A CPU cluster (configs/systems/cpu-hdr.yaml: 64 single-thread ranks per node, this machine's
   fitted shared-memory link in the node, one InfiniBand HDR port per node): the MLP,
   ParticleNet-Lite and ParticleNet profiles measured here by `hpcml bench scaling` at 1 rank
   (compute per sample, buckets, each step's compute for the straggler term), weak scaling, with
   today's flat allreduce (auto) and the node-then-network design (hierarchical).
B. The GPU presets (perlmutter-gpu, ib-hdr): the MLP of the DDP reference with the compute per
   sample measured on an H200 (bench ddp, fp32, batch 4096: 0.97 ms per step, docs/benchmarks.md,
   2026-12-04), weak (4096 per rank) and strong (global batch 262,144).

    /usr/bin/python3 bench/scaling_projections.py --profiles DIR [--hpcml build/bin/hpcml]

DIR holds profile-mlp.json, profile-particlenet-lite.json and profile-particlenet.json. Writes
bench/results/scaling-projections.json and docs/img/scaling-projections.png; prints markdown tables.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RANKS = "64,128,...,4096"
H200_MLP_S_PER_SAMPLE = 0.97e-3 / 4096  # bench ddp --device cuda, fp32, batch 4096 (docs/benchmarks.md)


def project(hpcml, *args):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        proc = subprocess.run([hpcml, "project", "train", *args, "--json", out.name], capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"scaling_projections: project train {' '.join(args)}: {proc.stderr.strip()}")
        with open(out.name) as f:
            return json.load(f)


def table(title, docs):
    print(f"\n**{title}** (projection)\n")
    ranks = [r["ranks"] for r in docs[0][1]["rows"]]
    print("| case | " + " | ".join(str(n) for n in ranks) + " |")
    print("|---|" + "---|" * len(ranks))
    for label, doc in docs:
        print(f"| {label} | " + " | ".join(f"{r['efficiency']:.2f}" for r in doc["rows"]) + " |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profiles", required=True)
    p.add_argument("--hpcml", default=os.path.join(ROOT, "build", "bin", "hpcml"))
    a = p.parse_args()
    cpu_system = os.path.join(ROOT, "configs", "systems", "cpu-hdr.yaml")
    results = {"cpu": {}, "gpu": {}}
    cpu_docs = []
    for model in ("mlp", "particlenet-lite", "particlenet"):
        profile = os.path.join(a.profiles, f"profile-{model}.json")
        for algorithm in ("auto", "hierarchical"):
            doc = project(a.hpcml, "--profile", profile, "--system", cpu_system, "--ranks", RANKS,
                          "--algorithm", algorithm)
            results["cpu"][f"{model}/{algorithm}"] = doc
            cpu_docs.append((f"{model}, {algorithm}", doc))
    table("A. CPU cluster (cpu-hdr), weak scaling, parallel efficiency against 1 rank", cpu_docs)
    gpu_docs = []
    gpu_profile = weak_gpu_profile(os.path.join(a.profiles, "profile-mlp.json"), a.profiles)
    for system in ("perlmutter-gpu", "ib-hdr"):
        for mode, extra in (("weak", []), ("strong", ["--global-batch", "262144"])):
            doc = project(a.hpcml, "--profile", gpu_profile, "--system", system, "--ranks", RANKS, "--mode", mode,
                          "--compute-per-sample", repr(H200_MLP_S_PER_SAMPLE), *extra)
            results["gpu"][f"mlp/{system}/{mode}"] = doc
            gpu_docs.append((f"MLP on {system}, {mode}", doc))
    table("B. GPU presets, the MLP with an H200's compute per sample", gpu_docs)

    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "scaling-projections.json"), "w") as f:
        json.dump(results, f, indent=1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (title, docs) in zip(axes, (("A. CPU cluster (cpu-hdr), weak", cpu_docs),
                                        ("B. GPU presets, MLP (H200 compute)", gpu_docs))):
        for label, doc in docs:
            ax.plot([r["ranks"] for r in doc["rows"]], [r["efficiency"] for r in doc["rows"]], "o-", ms=3,
                    label=label)
        ax.axhline(0.8, ls=":", color="0.5")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("ranks")
        ax.set_ylabel("parallel efficiency (projection)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(ROOT, "docs", "img", "scaling-projections.png"), dpi=110)


def weak_gpu_profile(mlp, directory):
    """The MLP profile at 4096 samples per rank (the H200 measurement's batch), without the CPU's
    step spread (which says nothing of a GPU's) and with no optimizer time of its own (set to
    0: on a GPU the update of 1.3 M parameters is a few microseconds, inside the measured step)."""
    with open(mlp) as f:
        profile = json.load(f)
    profile["batch_per_rank"] = 4096
    profile.pop("step_compute_s", None)
    profile["optimizer_per_step_s"] = 0.0
    path = os.path.join(directory, "profile-mlp-gpu.json")
    with open(path, "w") as f:
        json.dump(profile, f)
    return path


if __name__ == "__main__":
    main()
