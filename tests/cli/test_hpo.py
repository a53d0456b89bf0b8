"""`hpcml hpo` (docs/hpo.md): studies on rank groups of 1, 2 and 3 ranks with ranks_per_trial 1 and 2
(the grid's points computed here), ASHA's decisions replayed from the journal by an independent
implementation of the rule, a trial trained in rung parts equal to the same config trained in one
go by `hpcml train`, a study killed and re-run equal to the uninterrupted study, a diverging trial
recorded as failed while the study goes on, `hpo ask`/`hpo tell` (round trip, concurrent asks, a
second tell, a NaN value), the shipped configs/hpo-particlenet.yaml on tiny jets, and the one-line
config errors."""
import csv
import json
import math
import os
import signal
import subprocess
import tempfile
import time
import unittest

import numpy as np
import yaml

from support import BIN, SOURCE_DIR, run

BASE = {
    "runtime": {"threads": 1},
    "log": {"level": "warn"},
    "data": {"name": "synthetic", "samples": 1024, "validation_samples": 512, "features": 16, "classes": 4},
    "model": {"name": "mlp", "hidden": [32]},
    "train": {"epochs": 2, "batch_size": 64},
}


def study_config(tmp, name, hpo, base=None, **over):
    """Writes a study config (BASE with `over` sections replaced, and `hpo`) and returns its path."""
    config = dict(base or BASE)
    config.update(over)
    config["hpo"] = dict(hpo, study_dir=os.path.join(tmp, name))
    path = os.path.join(tmp, name + ".yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def read_trials(study):
    with open(os.path.join(study, "trials.csv")) as f:
        return list(csv.DictReader(f))


def read_summary(study):
    with open(os.path.join(study, "summary.json")) as f:
        return json.load(f)


def journal(study):
    """The journal's records; a line being written (torn) is skipped."""
    records = []
    with open(os.path.join(study, "journal.jsonl")) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
    return records


def validation_lines(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, filter(str.strip, f)) if "val_loss" in r]


def one_line_error(test, rc, err, *needles):
    test.assertEqual(rc, 2, err)
    lines = [line for line in err.splitlines() if line.strip()]
    test.assertEqual(len(lines), 1, err)
    for needle in needles:
        test.assertIn(needle, lines[0])


class StudyOnGroupsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hpcml-hpo-")

    def test_grid_on_groups_of_one_two_and_three_ranks(self):
        hpo = {"sampler": "grid", "trials": 10,
               "space": {"optimizer.lr": {"type": "loguniform", "low": 0.01, "high": 0.1, "grid_points": 2},
                         "optimizer.name": {"type": "categorical", "choices": ["sgd", "adam"]}}}
        expected = {(lr, name) for lr in np.geomspace(0.01, 0.1, 2) for name in ("sgd", "adam")}
        for ranks, k in [(1, 1), (2, 1), (2, 2), (3, 1), (3, 2)]:
            with self.subTest(ranks=ranks, ranks_per_trial=k):
                name = f"grid-{ranks}-{k}"
                cfg = study_config(self.tmp, name, dict(hpo, ranks_per_trial=k), log={"level": "info"})
                rc, out, err, _ = run(["hpo", "-c", cfg], ranks=ranks if ranks > 1 else None, timeout=300)
                self.assertEqual(rc, 0, err)
                study = os.path.join(self.tmp, name)
                trials = read_trials(study)
                self.assertEqual(len(trials), 4)  # the grid ended the study before hpo.trials
                got = {(float(t["optimizer.lr"]), t["optimizer.name"]) for t in trials}
                self.assertEqual(len(got), 4)
                for lr, opt in got:
                    self.assertTrue(any(math.isclose(lr, e, rel_tol=1e-12) and opt == o for e, o in expected))
                for t in trials:
                    self.assertEqual(t["state"], "complete")
                    run_dir = os.path.join(study, "trials", t["trial"])
                    with open(os.path.join(run_dir, "config.yaml")) as f:
                        resolved = yaml.safe_load(f)
                    self.assertTrue(math.isclose(resolved["optimizer"]["lr"], float(t["optimizer.lr"]), rel_tol=1e-12))
                    self.assertEqual(resolved["optimizer"]["name"], t["optimizer.name"])
                    # The recorded value is the trial's own last validation loss.
                    self.assertEqual(float(t["value"]), validation_lines(run_dir)[-1]["val_loss"])
                summary = read_summary(study)
                self.assertEqual(summary["workers"], ranks // k)
                self.assertEqual(summary["idle_ranks"], ranks % k)
                if ranks % k:
                    self.assertIn(f"{ranks % k} rank(s) idle", err)
                # Each trial trained data-parallel on its group's k ranks.
                self.assertEqual(err.count(f") on {k} rank(s)"), 4, err)
                best = min(trials, key=lambda t: float(t["value"]))
                self.assertEqual(summary["best"]["trial"], int(best["trial"]))
                with open(os.path.join(study, "best.yaml")) as f:
                    best_config = yaml.safe_load(f)
                self.assertEqual(best_config["optimizer"]["name"], best["optimizer.name"])
                self.assertNotIn("hpo", best_config)


class InactiveParameterTest(unittest.TestCase):
    def test_an_inactive_conditional_keeps_the_base_value(self):
        # momentum is active only with sgd: the adam trial keeps the base's 0.5, never a value
        # checked at start-up or set for an earlier trial.
        tmp = tempfile.mkdtemp(prefix="hpcml-hpo-cond-")
        hpo = {"sampler": "grid", "trials": 5,
               "space": {"optimizer.name": {"type": "categorical", "choices": ["sgd", "adam"]},
                         "optimizer.momentum": {"type": "uniform", "low": 0.1, "high": 0.9, "grid_points": 2,
                                                "when": {"optimizer.name": "sgd"}}}}
        cfg = study_config(tmp, "cond", hpo, optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.5})
        rc, _, err, _ = run(["hpo", "-c", cfg], timeout=120)
        self.assertEqual(rc, 0, err)
        study = os.path.join(tmp, "cond")
        seen = []
        for t in read_trials(study):
            with open(os.path.join(study, "trials", t["trial"], "config.yaml")) as f:
                opt = yaml.safe_load(f)["optimizer"]
            seen.append((opt["name"], opt["momentum"]))
            self.assertEqual(opt["lr"], 0.01)
        self.assertEqual(sorted(seen), [("adam", 0.5), ("sgd", 0.1), ("sgd", 0.9)])


    def test_enqueued_points_come_first_then_the_sampler_as_without_them(self):
        # The random sampler draws trial n from (seed, n) alone, so after two enqueued points,
        # trials 2 and 3 are the points trials 2 and 3 of the same study without them take.
        tmp = tempfile.mkdtemp(prefix="hpcml-hpo-enqueue-")
        space = {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 0.3},
                 "optimizer.name": {"type": "categorical", "choices": ["sgd", "adam"]}}
        points = [{"optimizer.lr": 0.02, "optimizer.name": "adam"}, {"optimizer.lr": 0.005, "optimizer.name": "sgd"}]
        seen = {}
        for name, extra in (("plain", {}), ("enqueued", {"enqueue": points})):
            cfg = study_config(tmp, name, dict({"sampler": "random", "trials": 4, "seed": 3, "space": space}, **extra))
            rc, _, err, _ = run(["hpo", "-c", cfg], timeout=180)
            self.assertEqual(rc, 0, err)
            seen[name] = []
            for n in range(4):
                with open(os.path.join(tmp, name, "trials", str(n), "config.yaml")) as f:
                    opt = yaml.safe_load(f)["optimizer"]
                seen[name].append({"optimizer.lr": opt["lr"], "optimizer.name": opt["name"]})
        self.assertEqual(seen["enqueued"][:2], points)
        self.assertEqual(seen["enqueued"][2:], seen["plain"][2:])
        self.assertNotEqual(seen["plain"][:2], points)

def asha_decisions(events, eta, max_resource):
    """The ASHA rule replayed from the journal's results, in arrival order: at each rung, a report
    continues iff it is at least as good as the m-th best of the rung's reports so far (itself
    included), m = max(1, n // eta). Returns {trial: "continue"/"stop" per rung}."""
    rungs, decisions = {}, {}
    for e in events:
        if e.get("event") != "done" or "@" not in e["id"]:
            continue
        trial, until = e["id"][len("trial-"):].split("@")
        until = int(until)
        if until >= max_resource:
            continue
        values = rungs.setdefault(until, [])
        values.append(e["result"]["value"])
        m = max(1, len(values) // eta)
        decisions[(int(trial), until)] = e["result"]["value"] <= sorted(values)[m - 1]
    return decisions


def asha(mode, grace, eta, max_resource, rung_value="last"):
    return {"name": "asha", "mode": mode, "grace_period": grace, "reduction_factor": eta, "max_resource": max_resource,
            "rung_value": rung_value}


def promotion_hand_outs(events, eta, rungs, max_resource, workers, trials):
    """The tasks ASHA's promotion form (Li et al. 2020, Algorithm 2) hands out, replayed from the
    journal's results in arrival order: whenever groups are free, each takes the best trial not yet
    promoted among the floor(n / eta) best of the n reports at a rung (highest rung first, ties to
    the earlier report), and only when there is none a new trial."""
    reports = {r: [] for r in rungs}  # rung -> [(value, trial)] in arrival order
    promoted = {r: set() for r in rungs}
    state = {"next": 0, "in_flight": 0}
    out = []

    def promotion():
        for k in reversed(range(len(rungs))):
            r = reports[rungs[k]]
            best = sorted(range(len(r)), key=lambda i: r[i][0])[:len(r) // eta]  # stable: ties by arrival
            for i in best:
                if r[i][1] not in promoted[rungs[k]]:
                    promoted[rungs[k]].add(r[i][1])
                    return f"trial-{r[i][1]}@{rungs[k + 1] if k + 1 < len(rungs) else max_resource}"
        return None

    def hand_out():
        while state["in_flight"] < workers:
            task = promotion()
            if task is None and state["next"] < trials:
                task = f"trial-{state['next']}@{rungs[0]}"
                state["next"] += 1
            if task is None:
                return
            out.append(task)
            state["in_flight"] += 1

    hand_out()
    for e in events:
        if e.get("event") not in ("done", "failed"):
            continue
        state["in_flight"] -= 1
        trial, until = (int(x) for x in e["id"][len("trial-"):].split("@"))
        if e["event"] == "done" and until < max_resource:  # what the rung ranks (rung_value: best or last)
            reports[until].append((e["result"].get("rung_value", e["result"]["value"]), trial))
        hand_out()
    return out


class AshaTest(unittest.TestCase):
    def asha_study(self, mode, trials, seed, ranks, rung_value="last"):
        """A random-sampler study with ASHA (grace 1, eta 3, max 9) in `mode`; returns (tmp, study dir)."""
        tmp = tempfile.mkdtemp(prefix=f"hpcml-hpo-{mode}-")
        hpo = {"sampler": "random", "trials": trials, "seed": seed, "scheduler": asha(mode, 1, 3, 9, rung_value),
               "space": {"optimizer.lr": {"type": "loguniform", "low": 0.001, "high": 1.0}}}
        rc, _, err, _ = run(["hpo", "-c", study_config(tmp, "asha", hpo)], ranks=ranks, timeout=300)
        self.assertEqual(rc, 0, err)
        return tmp, os.path.join(tmp, "asha")

    def test_promotion_form_hands_out_work_as_li_et_al(self):
        _, study = self.asha_study("promote", trials=14, seed=4, ranks=2)
        events = journal(study)
        handed = [e["id"] for e in events if e.get("event") == "task"]
        self.assertEqual(handed, promotion_hand_outs(events, 3, [1, 3], 9, 2, 14))
        # Some trial was promoted after other trials reported at its rung after it: it paused first.
        done_at = {e["id"]: i for i, e in enumerate(events) if e.get("event") == "done"}
        previous = {"3": "1", "9": "3"}
        late = []
        for at, e in enumerate(events):
            if e.get("event") != "task" or e["id"].endswith("@1"):
                continue
            trial, to = e["id"].split("@")
            paused = done_at[f"{trial}@{previous[to]}"]
            if any(d.endswith("@" + previous[to]) and paused < i < at for d, i in done_at.items()):
                late.append(e["id"])
        self.assertTrue(late, "no trial was promoted after it paused")
        summary = read_summary(study)
        steps_per_epoch = 1024 // 64
        for t in summary["trials"]:
            if t["state"] == "pruned":  # paused for good: its checkpoint at its last rung is kept
                last = t["rungs"][-1]["resource"]
                ckpt = os.path.join(study, "trials", str(t["trial"]), "checkpoints", f"step-{last * steps_per_epoch}.pt")
                self.assertTrue(os.path.exists(ckpt), ckpt)
            elif t["state"] == "complete":
                self.assertEqual(t["resource"], 9)
                self.assertEqual(sorted(r["resource"] for r in t["rungs"]), [1, 3])
        states = [t["state"] for t in summary["trials"]]
        self.assertGreater(states.count("pruned"), 0)
        self.assertGreater(states.count("complete"), 0)

    def test_best_rung_value_ranks_the_best_validation_so_far(self):
        _, study = self.asha_study("promote", trials=14, seed=4, ranks=2, rung_value="best")
        events = journal(study)
        handed = [e["id"] for e in events if e.get("event") == "task"]
        self.assertEqual(handed, promotion_hand_outs(events, 3, [1, 3], 9, 2, 14))
        steps_per_epoch = 1024 // 64
        summary = read_summary(study)
        better_than_last = 0
        for t in summary["trials"]:
            lines = validation_lines(os.path.join(study, "trials", str(t["trial"])))
            for rung in t.get("rungs", []):
                # The rung ranks the least validation loss up to it, not the one at it.
                upto = [line["val_loss"] for line in lines if line["step"] <= rung["resource"] * steps_per_epoch]
                self.assertEqual(rung["value"], min(upto))
                better_than_last += min(upto) < upto[-1]
            if t["state"] == "complete":  # a complete trial's value is its last validation
                self.assertEqual(t["value"], lines[-1]["val_loss"])
        self.assertGreater(better_than_last, 0, "no rung where the best so far differs from the last value")

    def test_rungs_parts_and_decisions(self):
        tmp, study = self.asha_study("stop", trials=9, seed=3, ranks=1)
        events = journal(study)
        decisions = asha_decisions(events, 3, 9)
        started = {e["id"] for e in events if e.get("event") == "task"}
        summary = read_summary(study)
        steps_per_epoch = 1024 // 64
        for t in summary["trials"]:
            n = t["trial"]
            run_dir = os.path.join(study, "trials", str(n))
            vals = {line["step"]: line["val_loss"] for line in validation_lines(run_dir)}
            for rung in t.get("rungs", []):
                # The rung's report is the trial's validation loss at that epoch.
                self.assertEqual(rung["value"], vals[rung["resource"] * steps_per_epoch])
                cont = decisions[(n, rung["resource"])]
                nxt = 3 if rung["resource"] == 1 else 9
                self.assertEqual(cont, f"trial-{n}@{nxt}" in started, (n, rung))
            if t["state"] == "pruned":
                last = t["rungs"][-1]["resource"]
                self.assertFalse(decisions[(n, last)])
                ckpt = os.path.join(run_dir, "checkpoints", f"step-{last * steps_per_epoch}.pt")
                self.assertTrue(os.path.exists(ckpt), "a stopped trial keeps its checkpoint")
            else:
                self.assertEqual(t["state"], "complete")
                self.assertEqual(t["resource"], 9)
        states = [t["state"] for t in summary["trials"]]
        self.assertGreater(states.count("pruned"), 0)
        self.assertGreater(states.count("complete"), 0)
        # A trial trained in parts (1, 3, 9 epochs) equals its config trained in one go.
        done = [t for t in summary["trials"] if t["state"] == "complete"][0]
        again = os.path.join(tmp, "again")
        rc, _, err, _ = run(["train", "-c", os.path.join(study, "trials", str(done["trial"]), "config.yaml"),
                             "--set", f"run.dir={again}", "--set", "run.resume=no"], timeout=300)
        self.assertEqual(rc, 0, err)
        self.assertEqual(validation_lines(again)[-1]["val_loss"], done["value"])


class ResumeTest(unittest.TestCase):
    def kill_and_resume(self, tmp, hpo, over, kill_when):
        """Runs the study whole (tmp/whole), then again (tmp/cut) SIGKILLed as soon as
        kill_when(study dir, journal) holds, and re-runs that to its end. Returns the cut study's
        journal records from before the kill."""
        whole = study_config(tmp, "whole", hpo, **over)
        rc, _, err, _ = run(["hpo", "-c", whole], timeout=300)
        self.assertEqual(rc, 0, err)
        cut = study_config(tmp, "cut", hpo, **over)
        study = os.path.join(tmp, "cut")
        proc = subprocess.Popen([BIN, "hpo", "-c", cut], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.exists(os.path.join(study, "journal.jsonl")) and kill_when(study, journal(study)):
                break
            time.sleep(0.05)
        self.assertIsNone(proc.poll(), "the study ended before it could be killed")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        before = journal(study)
        rc, _, err, _ = run(["hpo", "-c", cut], timeout=300)
        self.assertEqual(rc, 0, err)
        self.assertTrue(any(e.get("event") == "farm" and e.get("resumed") for e in journal(study)))
        return before

    def test_killed_study_resumes_to_the_uninterrupted_one(self):
        tmp = tempfile.mkdtemp(prefix="hpcml-hpo-resume-")
        hpo = {"sampler": "tpe", "trials": 6, "seed": 5, "tpe": {"startup_trials": 3},
               "space": {"optimizer.lr": {"type": "loguniform", "low": 0.001, "high": 0.3},
                         "optimizer.momentum": {"type": "uniform", "low": 0.0, "high": 0.95}}}
        # Trials of about a second, so that the kill lands inside one.
        data = dict(BASE["data"], samples=16384, features=64)
        over = {"data": data, "model": {"name": "mlp", "hidden": [256, 256]}, "train": {"epochs": 3, "batch_size": 64}}

        def mid_trial(study, events):  # in the middle of a trial (its first epoch checkpoint written)
            done = [e for e in events if e.get("event") == "done"]
            return len(done) >= 2 and os.path.exists(os.path.join(study, "trials", "2", "checkpoints"))

        records = self.kill_and_resume(tmp, hpo, over, mid_trial)
        before = {e["id"]: e["result"]["value"] for e in records if e.get("event") == "done"}
        self.assertLess(len(before), 6)
        a, b = read_trials(os.path.join(tmp, "whole")), read_trials(os.path.join(tmp, "cut"))
        keys = ["trial", "state", "value", "optimizer.lr", "optimizer.momentum"]
        self.assertEqual([[t[k] for k in keys] for t in a], [[t[k] for k in keys] for t in b])
        for t in b:  # trials finished before the kill kept their values
            if f"trial-{t['trial']}" in before:
                self.assertEqual(float(t["value"]), before[f"trial-{t['trial']}"])

    def test_killed_promotion_study_resumes_to_the_uninterrupted_one(self):
        # ASHA's promotion form: the resumed study hands out the same parts in the same order
        # (its paused trials and promotions rebuilt from the journal) and ends with the same trials.
        # Its rungs rank the best validation so far, which the killed part's restart must not change.
        tmp = tempfile.mkdtemp(prefix="hpcml-hpo-resume-asha-")
        hpo = {"sampler": "random", "trials": 8, "seed": 6,
               "scheduler": asha("promote", 1, 2, 4, "best"),
               "space": {"optimizer.lr": {"type": "loguniform", "low": 0.001, "high": 0.3}}}
        data = dict(BASE["data"], samples=16384, features=64)
        over = {"data": data, "model": {"name": "mlp", "hidden": [256, 256]}, "train": {"epochs": 4, "batch_size": 64}}

        def after_a_promotion(study, events):
            return any(e.get("event") == "task" and not e["id"].endswith("@1") for e in events)

        records = self.kill_and_resume(tmp, hpo, over, after_a_promotion)
        handed = [[e["id"] for e in journal(os.path.join(tmp, d)) if e.get("event") == "task"] for d in ("whole", "cut")]
        self.assertLess(len([e for e in records if e.get("event") == "task"]), len(handed[0]))
        self.assertEqual(handed[0], handed[1])
        a, b = read_trials(os.path.join(tmp, "whole")), read_trials(os.path.join(tmp, "cut"))
        keys = ["trial", "state", "value", "optimizer.lr"]
        self.assertEqual([[t[k] for k in keys] for t in a], [[t[k] for k in keys] for t in b])
        self.assertIn("complete", [t["state"] for t in b])
        self.assertIn("pruned", [t["state"] for t in b])


class FailureTest(unittest.TestCase):
    def test_diverging_trial_failed_and_study_goes_on(self):
        tmp = tempfile.mkdtemp(prefix="hpcml-hpo-nan-")
        hpo = {"sampler": "grid", "trials": 2,
               "space": {"optimizer.lr": {"type": "categorical", "choices": [0.05, 1.0e+12]}}}
        cfg = study_config(tmp, "nan", hpo)
        rc, out, err, _ = run(["hpo", "-c", cfg], ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        trials = {float(t["optimizer.lr"]): t for t in read_trials(os.path.join(tmp, "nan"))}
        self.assertEqual(trials[1e12]["state"], "failed")
        self.assertIn("training stopped at step", trials[1e12]["error"])
        self.assertEqual(trials[0.05]["state"], "complete")
        summary = read_summary(os.path.join(tmp, "nan"))
        self.assertEqual(summary["counts"]["failed"], 1)
        self.assertEqual(float(summary["best"]["params"]["optimizer.lr"]), 0.05)


class AskTellTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="hpcml-hpo-ask-")
        self.study = os.path.join(self.tmp, "s")
        hpo = {"sampler": "random", "trials": 10,
               "space": {"optimizer.lr": {"type": "loguniform", "low": 0.001, "high": 0.3},
                         "train.batch_size": {"type": "int", "low": 16, "high": 128, "log": True}}}
        self.cfg = study_config(self.tmp, "s-config", hpo)

    def ask(self, *extra):
        rc, out, err, _ = run(["hpo", "ask", "--study", self.study, *extra], timeout=60)
        self.assertEqual(rc, 0, err)
        lines = out.strip().splitlines()
        self.assertEqual(len(lines), 1, out)
        return json.loads(lines[0])

    def test_round_trip_second_tell_and_nan(self):
        first = self.ask("-c", self.cfg)
        self.assertEqual(first["trial"], 0)
        lr, batch = first["params"]["optimizer.lr"], first["params"]["train.batch_size"]
        self.assertTrue(0.001 <= lr <= 0.3 and 16 <= batch <= 128 and isinstance(batch, int))
        with open(first["config"]) as f:
            config = yaml.safe_load(f)
        self.assertEqual(config["optimizer"]["lr"], lr)
        self.assertEqual(config["train"]["batch_size"], batch)
        second = self.ask()
        self.assertEqual(second["trial"], 1)
        rc, _, err, _ = run(["hpo", "tell", "--study", self.study, "--trial", "0", "--value", "0.25"])
        self.assertEqual(rc, 0, err)
        trials = read_trials(self.study)
        self.assertEqual([(t["trial"], t["state"], t["value"]) for t in trials],
                         [("0", "complete", "0.25"), ("1", "running", "")])
        self.assertEqual(read_summary(self.study)["best"]["trial"], 0)
        rc, _, err, _ = run(["hpo", "tell", "--study", self.study, "--trial", "0", "--value", "0.5"])
        one_line_error(self, rc, err, "trial 0", "already has a result", "0.25")
        rc, _, err, _ = run(["hpo", "tell", "--study", self.study, "--trial", "1", "--value", "nan"])
        one_line_error(self, rc, err, "trial 1", "not a finite number")
        rc, _, err, _ = run(["hpo", "tell", "--study", self.study, "--trial", "7", "--value", "1"])
        one_line_error(self, rc, err, "trial 7", "never asked")
        rc, _, err, _ = run(["hpo", "tell", "--study", self.study, "--trial", "1", "--failed", "out of memory"])
        self.assertEqual(rc, 0, err)
        states = {t["trial"]: (t["state"], t["error"]) for t in read_trials(self.study)}
        self.assertEqual(states["1"], ("failed", "out of memory"))

    def test_asks_take_the_enqueued_points_by_trial_number(self):
        points = [{"optimizer.lr": 0.01, "train.batch_size": 32}, {"optimizer.lr": 0.2, "train.batch_size": 100}]
        with open(self.cfg) as f:
            config = yaml.safe_load(f)
        config["hpo"]["enqueue"] = points
        with open(self.cfg, "w") as f:
            yaml.safe_dump(config, f)
        got = [self.ask("-c", self.cfg)] + [self.ask() for _ in range(2)]
        self.assertEqual([g["trial"] for g in got], [0, 1, 2])
        self.assertEqual([g["params"] for g in got[:2]], points)
        self.assertNotIn(got[2]["params"], points)

    def test_concurrent_asks_get_distinct_trials(self):
        self.ask("-c", self.cfg)
        procs = [subprocess.Popen([BIN, "hpo", "ask", "--study", self.study], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(9)]
        outs = [p.communicate(timeout=120) for p in procs]
        got = []
        for p, (out, err) in zip(procs, outs):
            if p.returncode == 0:
                got.append(json.loads(out)["trial"])
            else:
                self.assertIn("has all its 10 trials", err)
        self.assertEqual(sorted(got), list(range(1, 10)))
        rc, _, err, _ = run(["hpo", "ask", "--study", self.study])
        one_line_error(self, rc, err, "has all its 10 trials")


class ShippedConfigTest(unittest.TestCase):
    def test_hpo_particlenet_runs_its_space_and_maximises_the_auc(self):
        """configs/hpo-particlenet.yaml (the study DESIGN.md's sbatch line names), shortened, on
        tiny jets: its base (particlenet-lite.yaml) comes through, the parameters stay in the
        file's own bounds, the weight decay is drawn for adamw only, and the best is the largest
        val_auc of the complete trials, as each trial's metrics.jsonl records it."""
        config = os.path.join(SOURCE_DIR, "configs", "hpo-particlenet.yaml")
        with open(config) as f:
            space = yaml.safe_load(f)["hpo"]["space"]
        with tempfile.TemporaryDirectory() as tmp:
            rc, _, err, _ = run(["datagen", "jets", "-o", os.path.join(tmp, "jets"), "--files", "2",
                                 "--events-per-file", "600"], ranks=2)
            self.assertEqual(rc, 0, err)
            study = os.path.join(tmp, "study")
            rc, out, err, _ = run(["hpo", "-c", config, "--set", f"data.files=[{tmp}/jets/jets-00000.h5]",
                                   "--set", f"data.validation_files=[{tmp}/jets/jets-00001.h5]",
                                   "--set", f"hpo.study_dir={study}", "--set", "hpo.trials=5", "--set", "hpo.seed=1",
                                   "--set", "train.epochs=3", "--set", "hpo.plots=false"], ranks=2, timeout=300)
            self.assertEqual(rc, 0, err)
            rows = read_trials(study)
            self.assertEqual(len(rows), 5)
            for row in rows:
                for key in ("optimizer.lr", "train.batch_size", "schedule.warmup_steps"):
                    self.assertTrue(space[key]["low"] <= float(row[key]) <= space[key]["high"], (key, row))
                self.assertIn(row["optimizer.name"], space["optimizer.name"]["choices"])
                self.assertEqual(row["optimizer.weight_decay"] != "", row["optimizer.name"] == "adamw", row)
            self.assertEqual({r["optimizer.name"] for r in rows}, {"adam", "adamw"})  # seed 1 draws both
            complete = [r for r in rows if r["state"] == "complete"]
            self.assertTrue(complete, rows)
            for r in complete:
                auc = validation_lines(os.path.join(study, "trials", r["trial"]))[-1]["val_auc"]
                self.assertAlmostEqual(float(r["value"]), auc, places=12)
            best = max(complete, key=lambda r: float(r["value"]))
            summary = read_summary(study)
            self.assertEqual((summary["metric"], summary["direction"]), ("val_auc", "maximize"))
            self.assertEqual(summary["best"]["trial"], int(best["trial"]))
            with open(os.path.join(study, "best.yaml")) as f:
                best_config = yaml.safe_load(f)
            self.assertEqual(best_config["model"]["name"], "particlenet-lite")
            self.assertEqual(best_config["optimizer"]["name"], best["optimizer.name"])
            self.assertAlmostEqual(best_config["optimizer"]["lr"], float(best["optimizer.lr"]), places=12)
            self.assertEqual(best_config["train"]["batch_size"], int(best["train.batch_size"]))


class ConfigErrorTest(unittest.TestCase):
    def test_one_line_errors(self):
        tmp = tempfile.mkdtemp(prefix="hpcml-hpo-bad-")
        space = {"optimizer.lr": {"type": "loguniform", "low": 0.001, "high": 0.3}}
        cases = [
            ({"space": space, "sampler": "tep"}, {}, ["hpo.sampler", "tep"]),
            ({"space": space, "trails": 3}, {}, ["hpo.trails"]),
            ({"space": {"optimizer.lrr": {"type": "uniform", "low": 0, "high": 1}}}, {}, ["optimizer.lrr"]),
            ({"space": {"optimizer.name": {"type": "categorical", "choices": ["sgd", "rmsprop"]}}}, {},
             ["optimizer.name", "rmsprop"]),
            ({"space": space, "scheduler": {"name": "asha", "reduction_factor": 1}}, {}, ["hpo.scheduler.reduction_factor"]),
            ({"space": space, "scheduler": {"name": "asha", "rung_value": "mean"}}, {},
             ["hpo.scheduler.rung_value", "last", "best", "mean"]),
            ({"space": space}, {"data": dict(BASE["data"], validation_samples=0)}, ["hpo.metric", "validation"]),
            ({}, {}, ["hpo.space"]),
            ({"space": space, "enqueue": [{"optimizer.lr": 0.01}, {"optimizer.lr": 0.5}]}, {},
             ["hpo.enqueue[1]", "optimizer.lr", "expected a number in [0.001, 0.3], found 0.5"]),
            ({"space": space, "enqueue": [{"optimizer.lr": 0.01, "optimizer.lrr": 1}]}, {},
             ["hpo.enqueue[0]", "optimizer.lrr"]),
            ({"space": space, "enqueue": {"optimizer.lr": 0.01}}, {}, ["hpo.enqueue", "expected a list"]),
        ]
        for i, (hpo, over, needles) in enumerate(cases):
            with self.subTest(needles=needles):
                cfg = study_config(tmp, f"bad{i}", hpo, **over)
                rc, _, err, _ = run(["hpo", "-c", cfg], timeout=60)
                one_line_error(self, rc, err, *needles)
        cfg = study_config(tmp, "groups", {"space": space, "ranks_per_trial": 3})
        rc, _, err, _ = run(["hpo", "-c", cfg], ranks=2, timeout=60)
        self.assertEqual(rc, 2, err)
        self.assertIn("hpo.ranks_per_trial", err)
        # A study directory holding another study is refused, not mixed.
        first = study_config(tmp, "other", {"space": space, "trials": 1})
        rc, _, err, _ = run(["hpo", "-c", first], timeout=120)
        self.assertEqual(rc, 0, err)
        changed = study_config(tmp, "other", {"space": {"optimizer.lr": dict(space["optimizer.lr"], high=0.5)}, "trials": 1})
        rc, _, err, _ = run(["hpo", "-c", changed], timeout=60)
        one_line_error(self, rc, err, "hpo.study_dir", "space")


if __name__ == "__main__":
    unittest.main()
