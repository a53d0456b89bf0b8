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

Writes DIR/service.json, bench/results/service-projection.json and docs/img/service-projection.png
(projected events/s and server utilisation against client ranks, the measured points beside, and the
anchor: client ranks one server feeds against the client's CPU time per event); prints a markdown table.
`--plot-only` redraws the figure from DIR/service.json.
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
    p.add_argument("--plot-only", action="store_true")
    a = p.parse_args()
    a.hpcml = os.path.abspath(a.hpcml)
    os.makedirs(a.workdir, exist_ok=True)
    if a.plot_only:
        with open(os.path.join(a.workdir, "service.json")) as f:
            plot(a, json.load(f))
        return
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
    plot(a, result)


def plot(a, result):
    """Left: the projection for 1..8 client ranks on one server rank (this run's fit) with the measured
    points; right: client ranks one server rank feeds against the client's CPU time per event."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    server_times = os.path.join(a.workdir, "server-times.json")
    with open(server_times, "w") as f:
        json.dump({"points": result["server_points"]}, f)
    common = ["--server-times", server_times, "--rows-per-event", str(ROWS), "--request-overhead-s",
              repr(result["request_overhead_s"])]
    path = os.path.join(a.workdir, "plot-projection.json")
    check([a.hpcml, "project", "service", *common, "--client-s-per-event", repr(result["client_s_per_event"]),
           "--clients", "1,2,3,4,5,6,7,8", "--json", path])
    with open(path) as f:
        rows = json.load(f)["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    ax.plot([r["clients"] for r in rows], [r["delivered_events_per_s"] for r in rows], "s--", label="projected")
    measured = result["measured_events_per_s"]
    ax.plot([int(c) for c in measured], list(measured.values()), "o", color="tab:red",
            label="measured (2 clients: 3 ranks on 2 cores)")
    ax.set_xlabel("client ranks (one server rank)")
    ax.set_ylabel("events/s")
    ax.set_title("FACILE through one server rank (CPU), projection", fontsize=10)
    twin = ax.twinx()
    twin.plot([r["clients"] for r in rows], [r["utilisation"] for r in rows], ":", color="0.5")
    twin.set_ylabel("projected server utilisation", color="0.4")
    twin.set_ylim(0, 1.1)
    ax.legend(fontsize=8, loc="lower right")
    ax = axes[1]
    per_event = [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    feeds = []
    for t in per_event:
        check([a.hpcml, "project", "service", *common, "--client-s-per-event", repr(t), "--clients", "1",
               "--json", path])
        with open(path) as f:
            feeds.append(json.load(f)["capacity"]["clients_per_server"])
    ax.loglog(per_event, feeds, "o-")
    ax.set_xlabel("client CPU seconds per event")
    ax.set_ylabel("client ranks one server rank feeds")
    ax.set_title("Sizing: clients per server (this server's curve)", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(ROOT, "docs", "img", "service-projection.png"), dpi=110)


if __name__ == "__main__":
    main()
