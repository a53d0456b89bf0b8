#!/usr/bin/python3
"""The service sizing model against `hpcml bench serve` (issue 32, docs/scaling.md#service-sizing).

Fitted on a 1-client run (`bench serve`, 2 ranks: 1 client, 1 server; FACILE, 16 rows per request):
the server's time per batch against the batch size (each dynamic-batching point's mean batch rows and
its mean input + infer + output time per batch), its overhead per request (p50), and the client's own
time per event (1 / events/s at the most streams, where the server is not the bottleneck: its
utilisation says so). Projected by `hpcml project service`: events/s for 1 and 2 client ranks and the
client ranks one server rank feeds. Measured beside: `bench serve` with 1 and with 2 client ranks
(3 ranks on 2 cores: the server shares its core with a client, which the model does not include).

    /usr/bin/python3 bench/service_projection.py --workdir DIR [--hpcml build/bin/hpcml] [--reps 3]

Writes DIR/service.json and bench/results/service-projection.json; prints a markdown table.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
STREAMS = (1, 4, 16, 64)
ROWS = 16  # FACILE: 16 channel rows per request (bench serve)


def check(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"service_projection: {' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def serve(a, clients, path):
    cmd = ["mpirun", "-n", str(clients + 1)]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    if clients + 1 > os.cpu_count():
        cmd.append("--oversubscribe")
    check(cmd + [a.hpcml, "bench", "serve", "--cases", "facile", "--streams", ",".join(map(str, STREAMS)),
                 "--seconds", "2", "--json", path])
    with open(path) as f:
        return json.load(f)


def dynamic(run):
    return {p["streams"]: p for p in run["sweep"] if p["batching"] == "dynamic" and p["case"] == "facile"}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True)
    p.add_argument("--hpcml", default=os.path.join(ROOT, "build", "bin", "hpcml"))
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    a.hpcml = os.path.abspath(a.hpcml)
    os.makedirs(a.workdir, exist_ok=True)
    runs = {1: [], 2: []}
    for rep in range(a.reps):  # alternating 1 and 2 clients
        for clients in (1, 2):
            runs[clients].append(serve(a, clients, os.path.join(a.workdir, f"serve-{clients}c-{rep}.json")))

    # The fit: the 1-client runs only.
    fit_runs = [dynamic(r) for r in runs[1]]
    points = [{"batch": statistics.median(r[s]["mean_batch_rows"] for r in fit_runs),
               "seconds": 1e-6 * statistics.median(sum(r[s]["breakdown_us"][k] for k in
                                                       ("compute_input", "compute_infer", "compute_output"))
                                                   for r in fit_runs)} for s in STREAMS]
    overhead_s = 1e-6 * statistics.median(r["server_report"]["overhead_us"]["p50"] for r in runs[1])
    top = max(STREAMS)
    one_client = statistics.median(r[top]["events_per_s"] for r in fit_runs)
    utilisation = statistics.median(r["server_report"]["utilisation"] for r in runs[1])
    client_s = 1.0 / one_client
    server_times = os.path.join(a.workdir, "server-times.json")
    with open(server_times, "w") as f:
        json.dump({"points": points}, f)
    projection_path = os.path.join(a.workdir, "service-projection.json")
    check([a.hpcml, "project", "service", "--server-times", server_times, "--client-s-per-event", repr(client_s),
           "--rows-per-event", str(ROWS), "--request-overhead-s", repr(overhead_s), "--clients", "1,2",
           "--json", projection_path])
    with open(projection_path) as f:
        projection = json.load(f)
    predicted = {r["clients"]: r for r in projection["rows"]}
    measured = {c: statistics.median(dynamic(r)[top]["events_per_s"] for r in runs[c]) for c in (1, 2)}
    result = {"streams": top, "reps": a.reps, "server_points": points, "request_overhead_s": overhead_s,
              "client_s_per_event": client_s, "fit_server_utilisation": utilisation, "projection": projection,
              "measured_events_per_s": measured,
              "measured_reps": {c: [dynamic(r)[top]["events_per_s"] for r in runs[c]] for c in (1, 2)},
              "server_utilisation_measured": {c: [r["server_report"]["utilisation"] for r in runs[c]]
                                              for c in (1, 2)}}
    print(f"fit (1 client): server points {points}; overhead {overhead_s * 1e6:.2f} us/request; client "
          f"{client_s * 1e6:.2f} us/event (server utilisation {utilisation:.2f} at {top} streams)")
    print(f"| client ranks | predicted events/s | measured events/s ({top} streams, median of {a.reps}) | "
          "error | note |")
    print("|---|---|---|---|---|")
    for c in (1, 2):
        err = predicted[c]["delivered_events_per_s"] / measured[c] - 1
        note = "fitted on this run (by construction)" if c == 1 else "held out; 3 ranks on 2 cores"
        print(f"| {c} | {predicted[c]['delivered_events_per_s']:.0f} | {measured[c]:.0f} | {100 * err:+.1f}% | "
              f"{note} |")
    print(f"one server rank feeds {projection['capacity']['clients_per_server']:.2f} client ranks of this kind "
          f"(capacity {projection['capacity']['events_per_s']:.0f} events/s at batch "
          f"{projection['capacity']['best_batch']:.0f} rows)")
    for path in (os.path.join(a.workdir, "service.json"),
                 os.path.join(ROOT, "bench", "results", "service-projection.json")):
        with open(path, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
