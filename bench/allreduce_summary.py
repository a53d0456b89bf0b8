#!/usr/bin/python3
"""Runs `hpcml bench allreduce` on 2 ranks K times and summarises hpcml's bus
bandwidth against raw MPI_Allreduce, measured together in each run.

Each run already alternates the implementations over 7 reps and reports the slowest
rank's median op time; across runs this prints, per size, the median busbw ratio
(hpcml blocking / MPI blocking, hpcml non-blocking / MPI blocking) and the median
bandwidths.

  bench/allreduce_summary.py [--runs 5] [--hpcml build/bin/hpcml] [--json out.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hpcml", default=os.path.join(ROOT, "build", "bin", "hpcml"))
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.runs):
            path = os.path.join(tmp, f"run{r}.json")
            subprocess.run(["mpirun", "-n", "2"] + flags + [a.hpcml, "bench", "allreduce", "--json", path],
                           check=True, capture_output=True)
            with open(path) as f:
                runs.append(json.load(f))
    sizes = sorted({row["bytes"] for row in runs[0]})
    summary = []
    print(f"allreduce, 2 ranks, {a.runs} runs x 7 alternating reps; medians over runs\n")
    print("| bytes | MPI busbw GB/s | hpcml blocking busbw | ratio | hpcml non-blocking busbw | ratio | "
          "MPI_Iallreduce+wait ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        def pick(impl, path):
            return [next(r for r in run if r["bytes"] == size and r["impl"] == impl and r["path"] == path)
                    for run in runs]
        mpi, hb, hn, mn = pick("mpi", "blocking"), pick("hpcml", "blocking"), pick("hpcml", "nonblocking"), \
            pick("mpi", "nonblocking")
        ratio = lambda xs: statistics.median(x["busbw_gbps"] / m["busbw_gbps"] for x, m in zip(xs, mpi))
        row = {"bytes": size, "mpi_busbw_gbps": statistics.median(m["busbw_gbps"] for m in mpi),
               "hpcml_blocking_busbw_gbps": statistics.median(x["busbw_gbps"] for x in hb),
               "hpcml_blocking_ratio": ratio(hb),
               "hpcml_nonblocking_busbw_gbps": statistics.median(x["busbw_gbps"] for x in hn),
               "hpcml_nonblocking_ratio": ratio(hn), "mpi_nonblocking_ratio": ratio(mn)}
        summary.append(row)
        print(f"| {size} | {row['mpi_busbw_gbps']:.3f} | {row['hpcml_blocking_busbw_gbps']:.3f} | "
              f"{row['hpcml_blocking_ratio']:.3f} | {row['hpcml_nonblocking_busbw_gbps']:.3f} | "
              f"{row['hpcml_nonblocking_ratio']:.3f} | {row['mpi_nonblocking_ratio']:.3f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": runs, "summary": summary}, f, indent=2)


if __name__ == "__main__":
    main()
