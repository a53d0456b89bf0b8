#!/usr/bin/python3
"""The two targets of `hpcml bench io`, measured and checked.

1. Prefetch: runs `hpcml bench io` (generated fixed and ragged data, 1 rank, 1 compute
   thread, the prefetch thread on the second core) K times. Each run alternates the
   three feeds of the stand-in step (memory, HDF5, HDF5 + prefetch) and reports the
   median of per-repetition ratios; this prints, per dataset, the median over runs of
   the reading fraction without prefetch (target >= 0.20) and of the prefetch step
   time over the in-memory step time (target <= 1.05).
2. Memory bound: writes a ragged dataset and one 10x larger (same number of files),
   reads each through once in a fresh process (`bench io --read-only`), and compares
   peak RSS (target: within +10%). The larger dataset's size on disk must be at least
   4x the baseline's peak RSS, so a reader that loaded everything would fail.

  bench/io_summary.py [--runs 3] [--events 60000] [--hpcml build/bin/hpcml] [--json out.json]
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hpcml(binary, *args):
    cmd = [binary, *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def prefetch_runs(binary, runs, tmp):
    results = []
    for k in range(runs):
        path = os.path.join(tmp, f"io-{k}.json")
        hpcml(binary, "bench", "io", "--set", "runtime.threads=1", "--json", path)
        with open(path) as f:
            results.append(json.load(f))
    summary = {}
    for d in results[0]["datasets"]:
        name = d["dataset"]
        per_run = [next(x for x in r["datasets"] if x["dataset"] == name) for r in results]
        summary[name] = {
            "model": d["model"],
            "read_fraction_without_prefetch": statistics.median(x["read_fraction_without_prefetch"] for x in per_run),
            "prefetch_over_memory": statistics.median(x["prefetch_over_memory"] for x in per_run),
            "per_run_prefetch_over_memory": [x["prefetch_over_memory"] for x in per_run],
            "step_ms": {m: statistics.median(x["step_ms"][m] for x in per_run) for m in per_run[0]["step_ms"]},
            "read_events_per_s": {m: statistics.median(x["read"][m]["events_per_s_total"] for x in per_run)
                                  for m in ("no_prefetch", "prefetch")},
            "read_mb_per_s": {m: statistics.median(x["read"][m]["mb_per_s_total"] for x in per_run)
                              for m in ("no_prefetch", "prefetch")},
        }
    return summary


def rss_check(binary, events, tmp):
    out = {}
    for label, n in (("baseline", events), ("10x", 10 * events)):
        d = os.path.join(tmp, label)
        hpcml(binary, "bench", "io", "--generate", d, "--kind", "ragged", "--events", str(n), "--files", "8")
        files = sorted(glob.glob(os.path.join(d, "*.h5")))
        path = os.path.join(tmp, f"rss-{label}.json")
        hpcml(binary, "bench", "io", "--set", "runtime.threads=1", "--input", os.path.join(d, "*.h5"),
              "--read-only", "--json", path)
        with open(path) as f:
            r = json.load(f)
        out[label] = {"events": n, "disk_mib": sum(os.path.getsize(p) for p in files) / 2**20,
                      "peak_rss_mib": r["peak_rss_mib"][0]}
        for p in files:
            os.remove(p)
    out["rss_ratio"] = out["10x"]["peak_rss_mib"] / out["baseline"]["peak_rss_mib"]
    out["disk_10x_over_baseline_rss"] = out["10x"]["disk_mib"] / out["baseline"]["peak_rss_mib"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--events", type=int, default=60000, help="baseline events of the RSS check")
    ap.add_argument("--hpcml", default=os.path.join(ROOT, "build", "bin", "hpcml"))
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {"prefetch": prefetch_runs(a.hpcml, a.runs, tmp), "rss": rss_check(a.hpcml, a.events, tmp)}
    for name, s in result["prefetch"].items():
        print(f"{name:7s} {s['model']}: reading {100 * s['read_fraction_without_prefetch']:.0f}% of the step without "
              f"prefetch; prefetch/memory {s['prefetch_over_memory']:.3f} (runs: "
              + ", ".join(f"{x:.3f}" for x in s["per_run_prefetch_over_memory"]) + ")")
    r = result["rss"]
    print(f"RSS: baseline {r['baseline']['events']} events ({r['baseline']['disk_mib']:.0f} MiB on disk) "
          f"peak {r['baseline']['peak_rss_mib']:.1f} MiB; 10x ({r['10x']['disk_mib']:.0f} MiB on disk, "
          f"{r['disk_10x_over_baseline_rss']:.1f}x the baseline RSS) peak {r['10x']['peak_rss_mib']:.1f} MiB: "
          f"ratio {r['rss_ratio']:.3f}")
    ok_prefetch = all(s["read_fraction_without_prefetch"] >= 0.20 and s["prefetch_over_memory"] <= 1.05
                      for s in result["prefetch"].values())
    ok_rss = r["rss_ratio"] <= 1.10 and r["disk_10x_over_baseline_rss"] >= 4
    result["targets_met"] = {"prefetch": ok_prefetch, "rss": ok_rss}
    print(f"targets: prefetch {'met' if ok_prefetch else 'NOT met'}, memory bound {'met' if ok_rss else 'NOT met'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
