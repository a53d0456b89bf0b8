"""`hpcml project train|fit|service|systems` (docs/scaling.md): the JSON against an independent
NumPy evaluation of the documented equations, and bad inputs (one line, exit != 0, no trace).
The reference below is written from docs/scaling.md, not from perf/*.cpp."""
import json
import math
import os
import tempfile
import unittest

import numpy as np

from support import run

# --- the reference: docs/scaling.md's equations ------------------------------------------------


def link_cost(alpha, beta, n):
    return alpha + n * beta


def flat_cost(alg, n, p, sys):
    """One allreduce of n bytes over p ranks, L ranks per node, blocks of L ranks per node."""
    if p == 1:
        return 0.0
    L, (ai, bi), (an, bn), g = sys["L"], sys["intra"], sys["network"], sys["gamma"]
    M = -(-p // L)
    loc = min(p, L)
    slow_beta = (max(bi, bn) if loc > 1 else bn) if M > 1 else bi
    if alg == "ring":
        steps_net = 2 * (M - 1)
        steps_in = 2 * (p - 1) - steps_net
        return steps_in * ai + steps_net * an + 2 * (p - 1) / p * n * slow_beta + (p - 1) / p * n * g
    if alg == "tree":
        lat = 2 * (p - 1) * ai if M == 1 else 2 * ((loc - 1) * ai + math.ceil(math.log2(M)) * an)
        return lat + 2 * n * slow_beta + n * g
    if alg in ("recursive_doubling", "rabenseifner"):
        q = int(math.floor(math.log2(p)))
        total = 0.0
        if 2 ** q != p:  # MPICH: fold the extra ranks in (n bytes + sum), send the result back (n bytes)
            a, b = (ai, bi) if loc >= 2 else (an, bn)
            total += 2 * link_cost(a, b, n) + n * g
        for k in range(q):
            d = 2 ** k
            a, b = (ai, bi) if 2 * d <= loc else (an, bn * loc)  # a node's L ranks share its NICs
            if alg == "recursive_doubling":
                total += link_cost(a, b, n) + n * g
            else:
                piece = n / 2 ** (k + 1)
                total += 2 * link_cost(a, b, piece) + piece * g
        return total
    raise ValueError(alg)


def cost(alg, n, p, sys):
    flat = ["ring", "recursive_doubling", "rabenseifner", "tree"]
    if p == 1:
        return 0.0
    if alg == "auto":
        return min(flat_cost(a, n, p, sys) for a in flat)
    if alg == "hierarchical":
        L = min(p, sys["L"])
        M = -(-p // sys["L"])
        ai, bi = sys["intra"]
        inside = 2 * (L - 1) * ai + 2 * (L - 1) / L * n * bi + (L - 1) / L * n * sys["gamma"]
        if M == 1:
            return inside
        an, bn = sys["network"]
        across = dict(L=1, intra=(an, bn * L), network=(an, bn * L), gamma=sys["gamma"])
        return inside + min(flat_cost(a, n / L, M, across) for a in flat)
    return flat_cost(alg, n, p, sys)


def buckets(param_bytes, first, cap, direct):
    """GradientReducer's buckets: reverse order, first bucket up to `first`, then `cap`."""
    groups, filled, limit = [], 0, first
    for b in reversed(param_bytes):
        if not groups or (filled > 0 and filled + b > limit):
            if groups:
                limit = cap
            groups.append([])
            filled = 0
        groups[-1].append(b)
        filled += b
    out = []  # (bytes, bucket): directs in bucket order, then the flat rest
    for k, g in enumerate(groups):
        out += [(b, k) for b in g if b >= direct]
        rest = sum(b for b in g if b < direct)
        if rest:
            out.append((rest, k))
    return out


def step(profile, reductions, ranks, batch, sys, alg, backward_fraction=2 / 3):
    compute = profile["compute_per_sample_s"] * batch
    backward = compute * backward_fraction
    sizes = np.array([r[0] for r in reductions], float)
    ids = np.array([r[1] for r in reductions])
    per_bucket = np.bincount(ids, weights=sizes)
    ready_bucket = backward * np.cumsum(per_bucket) / sizes.sum()
    overlap = profile.get("reducer", {}).get("overlap", True)
    end, comm = 0.0, 0.0
    for n, k in zip(sizes, ids):
        c = cost(alg, n, ranks, sys)
        end = max(ready_bucket[k] if overlap else backward, end) + c
        comm += c
    exposed = max(0.0, end - backward)
    total = profile["data_per_sample_s"] * batch + compute + exposed + profile["optimizer_per_step_s"]
    return dict(step_s=total, exposed_comm_s=exposed, comm_s=comm, samples_per_s=ranks * batch / total)


# --- the test ----------------------------------------------------------------------------------

PROFILE = {"model": "toy", "batch_per_rank": 32, "threads_per_rank": 1, "compute_per_sample_s": 4e-4,
           "optimizer_per_step_s": 2e-3, "data_per_sample_s": 1e-5,
           "parameter_bytes": [3000000, 12000, 400000, 800, 9000000, 4000, 250000, 262144, 64],
           "reducer": {"first_bucket_bytes": 1048576, "bucket_cap_bytes": 4194304, "direct_min_bytes": 262144,
                       "overlap": True}}
SYSTEM = dict(L=4, intra=(2e-6, 1 / 50e9), network=(8e-6, 1 / 20e9), gamma=1e-11)
SYSTEM_YAML = ("name: test-cluster\nranks_per_node: 4\nintra: {alpha_s: 2.0e-6, bandwidth_gb_per_s: 50}\n"
               "network: {alpha_s: 8.0e-6, bandwidth_gb_per_s: 20}\ngamma_s_per_byte: 1.0e-11\nalgorithm: ring\n")


class ProjectTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def path(self, name, content=None):
        p = os.path.join(self.tmp.name, name)
        if content is not None:
            with open(p, "w") as f:
                f.write(content if isinstance(content, str) else json.dumps(content))
        return p

    def project(self, *args):
        out = self.path("out.json")
        rc, stdout, err, _ = run(["project", *args, "--json", out])
        self.assertEqual(rc, 0, err)
        with open(out) as f:
            return json.load(f), stdout

    def test_train_weak_against_numpy(self):
        prof, system = self.path("p.json", PROFILE), self.path("s.yaml", SYSTEM_YAML)
        reductions = buckets(PROFILE["parameter_bytes"], 1048576, 4194304, 262144)
        ranks = [1, 2, 3, 4, 8, 12, 64, 1024]
        for alg in ("ring", "recursive_doubling", "rabenseifner", "tree", "hierarchical", "auto"):
            doc, out = self.project("train", "--profile", prof, "--system", system, "--ranks",
                                    ",".join(map(str, ranks)), "--algorithm", alg)
            self.assertEqual(doc["reductions_bytes"], [r[0] for r in reductions])
            self.assertEqual([r["ranks"] for r in doc["rows"]], ranks)
            self.assertIn("projection", out)
            # weak: the reference of each efficiency is 1 rank at the same batch per rank
            for row, n in zip(doc["rows"], ranks):
                ref, one = step(PROFILE, reductions, n, 32, SYSTEM, alg), step(PROFILE, reductions, 1, 32, SYSTEM, alg)
                for key in ("step_s", "exposed_comm_s", "comm_s", "samples_per_s"):
                    self.assertTrue(math.isclose(row[key], ref[key], rel_tol=1e-9, abs_tol=1e-15),
                                    f"{alg} {key} at {n}: {row[key]} vs {ref[key]}")
                self.assertTrue(math.isclose(row["efficiency"], ref["samples_per_s"] / (n * one["samples_per_s"]),
                                             rel_tol=1e-9))

    def test_train_strong_with_measured_buckets(self):
        profile = dict(PROFILE, buckets_bytes=[1000000, 5000000, 2500000], reducer={"overlap": False})
        prof = self.path("p.json", profile)
        doc, _ = self.project("train", "--profile", prof, "--system", "perlmutter-gpu", "--ranks", "4,8,...,512",
                              "--mode", "strong", "--global-batch", "8192", "--algorithm", "ring")
        presets, _ = self.project("systems")
        pm = next(s for s in presets["systems"] if s["name"] == "perlmutter-gpu")
        sys = dict(L=pm["ranks_per_node"], intra=(pm["intra"]["alpha_s"], pm["intra"]["beta_s_per_byte"]),
                   network=(pm["network"]["alpha_s"], pm["network"]["beta_s_per_byte"]), gamma=pm["gamma_s_per_byte"])
        reductions = [(b, k) for k, b in enumerate(profile["buckets_bytes"])]
        self.assertEqual([r["ranks"] for r in doc["rows"]], [4, 8, 16, 32, 64, 128, 256, 512])
        one = step(profile, reductions, 1, 8192, sys, "ring")
        for row in doc["rows"]:
            n = row["ranks"]
            self.assertAlmostEqual(row["batch_per_rank"], 8192 / n)
            ref = step(profile, reductions, n, 8192 / n, sys, "ring")
            self.assertTrue(math.isclose(row["step_s"], ref["step_s"], rel_tol=1e-9))
            self.assertTrue(math.isclose(row["efficiency"], ref["samples_per_s"] / (n * one["samples_per_s"]),
                                         rel_tol=1e-9))
        # without overlap every reduction is exposed
        self.assertTrue(all(math.isclose(r["exposed_comm_s"], r["comm_s"], rel_tol=1e-12) for r in doc["rows"]))

    def test_straggler_and_backward_fraction_from_the_profile(self):
        rng = np.random.default_rng(5)
        steps = list(rng.uniform(0.010, 0.020, 9))
        profile = dict(PROFILE, step_compute_s=steps, backward_fraction=0.5)
        doc, _ = self.project("train", "--profile", self.path("p.json", profile), "--system",
                              self.path("s.yaml", SYSTEM_YAML), "--ranks", "1,2,3", "--algorithm", "ring")
        self.assertEqual(doc["backward_fraction"], 0.5)
        mean = PROFILE["compute_per_sample_s"] * 32
        for row in doc["rows"]:
            n = row["ranks"]
            # E[max of n draws] by brute force over every n-tuple of the 9 steps, relative to their mean.
            tuples = np.array(np.meshgrid(*[steps] * n)).reshape(n, -1)
            factor = tuples.max(axis=0).mean() / np.mean(steps)
            self.assertTrue(math.isclose(row["compute_s"], mean * factor, rel_tol=1e-9), (n, row, factor))
            self.assertTrue(math.isclose(row["straggler_s"], mean * (factor - 1), rel_tol=1e-9, abs_tol=1e-15))
            self.assertTrue(math.isclose(row["backward_s"], row["compute_s"] * 0.5, rel_tol=1e-12))
        # --backward-fraction wins over the profile's.
        doc, _ = self.project("train", "--profile", self.path("p.json", profile), "--system",
                              self.path("s.yaml", SYSTEM_YAML), "--ranks", "2", "--backward-fraction", "0.75")
        self.assertEqual(doc["backward_fraction"], 0.75)

    def test_fit_against_numpy_and_the_system_file(self):
        rng = np.random.default_rng(7)
        alpha, beta = 7e-6, 3e-10
        sizes = 4096 * 4 ** np.arange(8)
        seconds = (2 * alpha + sizes * beta) * (1 + rng.uniform(-0.03, 0.03, sizes.size))  # ring, 2 ranks
        rows = [{"impl": "mpi", "path": "blocking", "bytes": int(n), "latency_us": t * 1e6, "ranks": 2}
                for n, t in zip(sizes, seconds)]
        rows += [{"impl": "hpcml", "path": "blocking", "bytes": 4096, "latency_us": 1.0, "ranks": 2}]
        bench, sys_out = self.path("bench.json", rows), self.path("fitted.yaml")
        doc, out = self.project("fit", "--allreduce", bench, "--impl", "mpi", "--system-out", sys_out)
        # weighted least squares on the relative error: rows [A_i, B_i] / t_i against 1
        design = np.stack([np.full(sizes.size, 2.0), sizes.astype(float)], axis=1) / seconds[:, None]
        (a_ref, b_ref), *_ = np.linalg.lstsq(design, np.ones(sizes.size), rcond=None)
        self.assertTrue(math.isclose(doc["alpha_s"], a_ref, rel_tol=1e-6), (doc["alpha_s"], a_ref))
        self.assertTrue(math.isclose(doc["beta_s_per_byte"], b_ref, rel_tol=1e-6))
        self.assertLess(abs(doc["beta_s_per_byte"] / beta - 1), 0.05)
        resid = design @ np.array([a_ref, b_ref]) - 1
        self.assertTrue(math.isclose(doc["rms_relative_residual"], float(np.sqrt(np.mean(resid ** 2))), rel_tol=1e-5))
        self.assertEqual(len(doc["points"]), 8)
        self.assertIn("us", out)
        # --min-bytes and --max-bytes keep the rows in that range (sizes 64 KiB to 4 MiB: 4 rows)
        part, _ = self.project("fit", "--allreduce", bench, "--min-bytes", "65536", "--max-bytes", "4194304")
        self.assertEqual([p["bytes"] for p in part["points"]], [int(n) for n in sizes[2:6]])
        # the system file drives a projection
        prof = self.path("p.json", PROFILE)
        rc, stdout, err, _ = run(["project", "train", "--profile", prof, "--system", sys_out, "--ranks", "1,2"])
        self.assertEqual(rc, 0, err)

    def test_service_against_numpy(self):
        points = {1: 0.002, 8: 0.004, 64: 0.02, 256: 0.07}
        server = self.path("server.json", {"points": [{"batch": b, "seconds": s} for b, s in points.items()]})
        doc, out = self.project("service", "--server-times", server, "--client-s-per-event", "0.25",
                                "--rows-per-event", "4", "--request-overhead-s", "1e-4", "--clients", "1,10,...,1000",
                                "--servers", "2")
        b = np.array(sorted(points), float)
        t = np.array([points[k] for k in sorted(points)])
        cand = np.concatenate([[4.0], b[b >= 4]])
        events = cand / 4
        rate = events / (np.interp(cand, b, t) + 1e-4 * events)
        cap = rate.max()
        self.assertTrue(math.isclose(doc["capacity"]["events_per_s"], cap, rel_tol=1e-12))
        self.assertEqual(doc["capacity"]["best_batch"], cand[rate.argmax()])
        self.assertTrue(math.isclose(doc["capacity"]["clients_per_server"], cap * 0.25, rel_tol=1e-12))
        self.assertEqual([r["clients"] for r in doc["rows"]], [1, 10, 100, 1000])
        for r in doc["rows"]:
            offered = r["clients"] / 0.25
            self.assertTrue(math.isclose(r["delivered_events_per_s"], min(offered, 2 * cap), rel_tol=1e-12))
            self.assertEqual(r["saturated"], offered > 2 * cap)
            self.assertEqual(r["servers_needed"], max(1, math.ceil(offered / cap)))
        # the inline form gives the same capacity
        inline = ",".join(f"{k}:{v}" for k, v in points.items())
        again, _ = self.project("service", "--batch-times", inline, "--client-s-per-event", "0.25",
                                "--rows-per-event", "4", "--request-overhead-s", "1e-4")
        self.assertEqual(again["capacity"], doc["capacity"])

    def test_systems_have_sources(self):
        doc, out = self.project("systems")
        names = [s["name"] for s in doc["systems"]]
        self.assertIn("perlmutter-gpu", names)
        self.assertIn("ib-hdr", names)
        self.assertTrue(all("https://" in s["source"] for s in doc["systems"]))

    def test_bad_inputs_are_one_line(self):
        good = dict(PROFILE)
        prof = self.path("p.json", good)
        missing = dict(good)
        del missing["compute_per_sample_s"]
        cases = [
            (["train", "--profile", self.path("m.json", missing)], "key 'compute_per_sample_s'"),
            (["train", "--profile", self.path("t.json", dict(good, compute_per_sample_s="abc"))],
             "key 'compute_per_sample_s': expected a positive number, found \"abc\""),
            (["train", "--profile", self.path("b.json", dict(good, parameter_bytes=[1, -3]))], "parameter_bytes[1]"),
            (["train", "--profile", self.path("o.json", dict(good, reducer={"overlap": "yes"}))], "reducer.overlap"),
            (["train", "--profile", prof, "--system", "frontier"], "expected a preset"),
            (["train", "--profile", self.path("nope.json")], "cannot read"),
            (["train", "--profile", self.tmp.name], "nothing"),  # a directory
            (["train", "--profile", self.path("x.json", "{not json")], "not valid JSON"),
            (["train", "--profile", prof, "--system", self.path("s.yaml", "ranks_per_node: 4\nintra: {alpha_s: 1}\n")],
             "intra"),
            (["train", "--profile", prof, "--mode", "strong"], "--global-batch"),
            (["train", "--profile", prof, "--ranks", "0,2"], "--ranks"),
            (["train", "--profile", prof, "--algorithm", "butterfly"], "butterfly"),
            (["fit", "--allreduce", self.path("one.json", [{"impl": "mpi", "path": "blocking", "bytes": 4096,
                                                            "latency_us": 3, "ranks": 2}])], "2 or more distinct"),
            (["fit", "--allreduce", prof], "expected a list"),
            (["service", "--batch-times", "1:0.002,8", "--client-s-per-event", "1"], "BATCH:SECONDS"),
            (["service", "--batch-times", "1:0.002", "--client-s-per-event", "0"], "client"),
            (["service", "--client-s-per-event", "1"], "--server-times"),
        ]
        for args, needle in cases:
            rc, out, err, _ = run(["project", *args])
            lines = [line for line in err.splitlines() if line.strip()]
            self.assertNotEqual(rc, 0, args)
            self.assertEqual(len(lines), 1, (args, err))
            if needle != "nothing":
                self.assertIn(needle, lines[0], args)
            self.assertTrue(lines[0].startswith("hpcml: "), lines[0])
            for word in ("terminate", "Traceback", "Aborted", "Segmentation", "what()"):
                self.assertNotIn(word, err, args)


if __name__ == "__main__":
    unittest.main()
