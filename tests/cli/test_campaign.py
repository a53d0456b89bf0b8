"""`hpcml infer -c` campaigns (docs/campaigns.md), checked from the outside with h5py, NumPy and
scikit-learn: scores equal to the model's forward computed independently from the exported
weights, ROC AUC from the output file (sklearn) equal to `hpcml eval`'s; a job killed after its k-th
commit (before the journal line) or at a random time, then re-run, writes the same bytes as an
uninterrupted campaign; a corrupt input fails only its file, with its reason, and --retry-failed
completes it once repaired; a changed checkpoint is refused by the fingerprint; a slow unit does not
stall the other rank; the shipped configs/reprocess.yaml scores a trained ParticleNet-Lite's jets."""
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import h5py
import numpy as np
from sklearn.metrics import roc_auc_score

from support import BIN, MPIEXEC, MPIEXEC_PREFLAGS, SOURCE_DIR, kill_session, run, session_pids

FILES = 5
ROWS = 2000
CHUNK = 250


def rechunk(path, chunk):
    """Rewrites the fixed fields of a datagen jets file with `chunk` rows per HDF5 chunk (datagen writes one)."""
    rechunk_fields(path, chunk, ("jet", "label"))


def rechunk_fields(path, chunk, names):
    """Rewrites datasets `names` of `path` with `chunk` rows per HDF5 chunk, attributes kept."""
    with h5py.File(path, "a") as f:
        for name in names:
            data, attrs = f[name][...], dict(f[name].attrs)
            del f[name]
            d = f.create_dataset(name, data=data, chunks=(chunk,) + data.shape[1:])
            for k, v in attrs.items():
                d.attrs[k] = v


def read_journals(out):
    """Every job's journal of a campaign directory, as (file name, events)."""
    found = []
    for name in sorted(os.listdir(out)):
        if name.startswith("journal.") and name.endswith(".jsonl"):
            with open(os.path.join(out, name)) as f:
                found.append((name, [json.loads(line) for line in f if line.endswith("\n")]))
    return found


def computed_done(journals):
    """Unit and file ids journaled done by the job that computed them (not recovered, not superseded)."""
    return [e["id"] for _, events in journals for e in events if e["event"] == "done" and not e.get("recovered")
            and not e.get("result", {}).get("superseded")]


def read_output(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][...] for name in ("row", "scores", "label")}


def unmount(disk):
    """Unmounts the test's tmpfs. mpirun can return while a rank's process is still being
    reaped (seen once on a loaded machine: "target is busy"): retry for 10 s, then detach."""
    deadline = time.time() + 10
    while subprocess.run(["umount", disk], capture_output=True).returncode != 0:
        if time.time() > deadline:
            subprocess.run(["umount", "-l", disk], check=True)
            return
        time.sleep(0.2)


def process_state(pid):
    """The state letter of /proc/<pid>/stat (R, S, D, Z, ...), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def wait_until_dead(sid, seconds=30):
    """Waits until every process of session `sid` (a killed job's mpiexec and ranks) has exited:
    gone or a zombie. mpiexec can return while a SIGKILLed rank still finishes a write; until it
    has, its half-written part is a live writer's, which a re-run rightly keeps."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        alive = [pid for pid in session_pids(sid) if process_state(pid) not in (None, "Z", "X")]
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes {alive} of the killed job were still running after {seconds} s")


class CampaignTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-campaign-")
        cls.data = os.path.join(cls.tmp, "jets")
        rc, out, err, _ = run(["datagen", "jets", "-o", cls.data, "--files", str(FILES), "--events-per-file",
                               str(ROWS)], ranks=2, timeout=300)
        assert rc == 0, err
        cls.inputs = sorted(os.path.join(cls.data, f) for f in os.listdir(cls.data))
        for path in cls.inputs:
            rechunk(path, CHUNK)
        cls.run_dir = os.path.join(cls.tmp, "run")
        rc, out, err, _ = run(["train"] + cls.model_args() + ["--set", "train.epochs=2"], ranks=2, timeout=300)
        assert rc == 0, err
        cls.reference = os.path.join(cls.tmp, "reference")
        rc, out, err, _ = run(["infer"] + cls.campaign_args(cls.reference), ranks=2, timeout=300)
        assert rc == 0, err

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def model_args(cls):
        return ["--set", "model.name=mlp", "--set", "model.hidden=[32]", "--set", "data.name=hdf5",
                "--set", f"data.files=[{cls.inputs[0]}, {cls.inputs[1]}, {cls.inputs[2]}]",
                "--set", f"data.validation_files=[{cls.inputs[3]}]", "--set", "data.input=jet",
                "--set", "data.target=label", "--set", "data.classes=2", "--set", "train.batch_size=64",
                "--set", "optimizer.name=adam", "--set", "optimizer.lr=0.01", "--set", f"run.dir={cls.run_dir}"]

    @classmethod
    def campaign_args(cls, out, inputs=None, extra=()):
        inputs = inputs or [os.path.join(cls.data, "jets-*.h5")]
        return cls.model_args() + ["--set", f"infer.inputs=[{', '.join(inputs)}]", "--set", f"infer.output_dir={out}",
                                   "--set", "infer.unit_rows=250", "--set", "infer.batch_size=100"] + list(extra)

    def outputs_equal(self, a, b):
        names = sorted(f for f in os.listdir(a) if f.endswith(".predictions.h5"))
        self.assertEqual(names, sorted(f for f in os.listdir(b) if f.endswith(".predictions.h5")))
        self.assertEqual(len(names), FILES)
        for name in names:
            x, y = read_output(os.path.join(a, name)), read_output(os.path.join(b, name))
            for key in x:
                self.assertEqual(x[key].dtype, y[key].dtype, f"{name}/{key}")
                self.assertEqual(x[key].tobytes(), y[key].tobytes(), f"{name}/{key}")

    def test_scores_are_the_models_forward_and_auc_matches_eval(self):
        out = read_output(os.path.join(self.reference, "jets-00003.predictions.h5"))
        with h5py.File(self.inputs[3], "r") as f:
            jet, label = f["jet"][...].astype(np.float64), f["label"][...]
        np.testing.assert_array_equal(out["row"], np.arange(ROWS))
        np.testing.assert_array_equal(out["label"], label)
        # The MLP's forward from the exported weights, in float64 NumPy.
        with open(os.path.join(self.reference, "summary.json")) as f:
            summary = json.load(f)
        params = os.path.join(self.tmp, "params.h5")
        rc, _, err, _ = run(["export", summary["checkpoint"], "-o", params])
        self.assertEqual(rc, 0, err)
        with h5py.File(params, "r") as p:
            w0, b0, w1, b1 = (p[n][...].astype(np.float64) for n in ("0.weight", "0.bias", "2.weight", "2.bias"))
        logits = np.maximum(jet @ w0.T + b0, 0) @ w1.T + b1
        expected = np.exp(logits - logits.max(1, keepdims=True))
        expected /= expected.sum(1, keepdims=True)
        np.testing.assert_allclose(out["scores"], expected, rtol=1e-4, atol=1e-6)
        # ROC AUC by scikit-learn from the output file against hpcml eval's on the same file.
        rc, stdout, err, _ = run(["eval"] + self.model_args() + ["--checkpoint", summary["checkpoint"]], ranks=2,
                                 timeout=300)
        self.assertEqual(rc, 0, err)
        with open(os.path.join(self.run_dir, "summary.json")) as f:
            eval_auc = json.load(f)["eval"]["auc"]
        self.assertAlmostEqual(roc_auc_score(out["label"], out["scores"][:, 1]), eval_auc, delta=2e-4)
        # Provenance attributes.
        with h5py.File(os.path.join(self.reference, "jets-00003.predictions.h5"), "r") as f:
            self.assertEqual(f.attrs["schema"], "hpcml.predictions")
            self.assertEqual(f.attrs["checkpoint_sha256"], summary["checkpoint_sha256"])
            self.assertEqual(f.attrs["input_file"], os.path.abspath(self.inputs[3]))

    def test_regression_predictions_are_the_models_forward(self):
        calo = os.path.join(self.tmp, "calo")
        rc, _, err, _ = run(["datagen", "calo", "-o", calo, "--files", "2", "--events-per-file", "600"], ranks=2,
                            timeout=300)
        self.assertEqual(rc, 0, err)
        files = sorted(os.path.join(calo, f) for f in os.listdir(calo) if f.startswith("calo-channels"))
        run_dir, out = os.path.join(self.tmp, "run-calo"), os.path.join(self.tmp, "calo-out")
        args = ["--set", "model.name=mlp", "--set", "model.hidden=[8]", "--set", "data.name=hdf5",
                "--set", f"data.files=[{files[0]}]", "--set", "data.input=inputs", "--set", "data.target=energy",
                "--set", "train.max_steps=20", "--set", "train.batch_size=50", "--set", "train.loss=relative_mse",
                "--set", "optimizer.name=adam", "--set", "optimizer.lr=0.003", "--set", f"run.dir={run_dir}"]
        rc, _, err, _ = run(["train"] + args, ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        rc, _, err, _ = run(["infer"] + args + ["--set", f"infer.inputs=[{', '.join(files)}]",
                                                 "--set", f"infer.output_dir={out}"], ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
        self.assertEqual(summary["task"], "regression")
        params = os.path.join(self.tmp, "calo-params.h5")
        rc, _, err, _ = run(["export", summary["checkpoint"], "-o", params])
        self.assertEqual(rc, 0, err)
        with h5py.File(params, "r") as p:
            w0, b0, w1, b1 = (p[n][...].astype(np.float64) for n in ("0.weight", "0.bias", "2.weight", "2.bias"))
        for path in files:
            name = os.path.basename(path).replace(".h5", ".predictions.h5")
            with h5py.File(path, "r") as f, h5py.File(os.path.join(out, name), "r") as o:
                x, energy = f["inputs"][...].astype(np.float64), f["energy"][...]
                expected = np.maximum(x @ w0.T + b0, 0) @ w1.T + b1
                self.assertEqual(o["prediction"].shape, expected.shape)
                np.testing.assert_allclose(o["prediction"][...], expected, rtol=1e-4, atol=1e-5)
                np.testing.assert_array_equal(o["energy"][...], energy)
                np.testing.assert_array_equal(o["row"][...], np.arange(len(energy)))

    def kill_and_resume(self, out, env, wait_for=None):
        cmd = [MPIEXEC, "-n", "2"] + MPIEXEC_PREFLAGS + [BIN, "infer"] + self.campaign_args(out)
        job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                               env=dict(os.environ, **env))
        if wait_for is not None:
            time.sleep(wait_for)
            kill_session(job.pid)
        _, err = job.communicate(timeout=120)
        self.assertNotEqual(job.returncode, 0, "the campaign was not interrupted")
        wait_until_dead(job.pid)
        rc, stdout, err, _ = run(["infer"] + self.campaign_args(out), ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        self.outputs_equal(self.reference, out)
        self.assertEqual(os.listdir(os.path.join(out, "parts")), [])
        journals = read_journals(out)
        computed = computed_done(journals)
        self.assertEqual(len(computed), len(set(computed)), "a unit computed and journaled twice")
        every = {e["id"] for _, events in journals for e in events if e["event"] == "done"}
        self.assertEqual(len(every), FILES * ROWS // CHUNK + FILES)
        return [e for _, events in journals for e in events]

    def test_killed_after_a_commit_before_its_journal_line_resumes_exactly(self):
        for k in (1, 7):
            with self.subTest(after_commit=k):
                out = os.path.join(self.tmp, f"killed-{k}")
                events = self.kill_and_resume(out, {"HPCML_TEST_CAMPAIGN_KILL_AFTER": str(k)})
                self.assertTrue(any(e.get("recovered") for e in events), "the unjournaled part was not recovered")

    def test_killed_at_random_times_resumes_exactly(self):
        rng = random.Random(25)
        for i in range(2):
            out = os.path.join(self.tmp, f"random-{i}")
            # 40 units of 150 ms on 2 workers: about 3 s after start-up.
            self.kill_and_resume(out, {"HPCML_TEST_CAMPAIGN_SLOW": "*:150"}, wait_for=rng.uniform(1.5, 3.0))

    def test_a_killed_writers_temporaries_are_removed_and_a_live_writers_kept(self):
        # A part half-written by a killed process (SIGKILL mid-write) stays under its temporary name
        # <part>.tmp.<host>.<pid>[.tmp]. The next run removes this host's whose process is gone and
        # another host's untouched for two leases; a live process's, or a recent one of another host,
        # may still be written and is kept.
        out = os.path.join(self.tmp, "temporaries")
        self.kill_and_resume(out, {"HPCML_TEST_CAMPAIGN_KILL_AFTER": "3"})
        host = os.uname().nodename
        gone = subprocess.Popen(["true"])
        gone.wait()
        # A killed writer not yet reaped: a zombie child of this test until the end of the run.
        zombie = subprocess.Popen(["true"])
        self.addCleanup(zombie.wait)
        deadline = time.time() + 10
        while time.time() < deadline and process_state(zombie.pid) != "Z":
            time.sleep(0.01)
        self.assertEqual(process_state(zombie.pid), "Z")
        parts = os.path.join(out, "parts")
        dead = [os.path.join(parts, f"f1-r0.h5.tmp.{host}.{gone.pid}.tmp"),
                os.path.join(parts, f"f1-r250.h5.tmp.{host}.{gone.pid}"),
                os.path.join(out, f"summary.json.tmp.{host}.{gone.pid}"),
                os.path.join(parts, f"f1-r500.h5.tmp.{host}.{zombie.pid}.tmp"),
                os.path.join(parts, f"f2-r0.h5.tmp.elsewhere.{os.getpid()}.tmp")]
        alive = [os.path.join(parts, f"f3-r0.h5.tmp.{host}.{os.getpid()}.tmp"),
                 os.path.join(parts, f"f3-r250.h5.tmp.elsewhere.{os.getpid()}")]
        for path in dead + alive:
            with open(path, "wb") as f:
                f.write(b"half")
        day_ago = time.time() - 86400
        os.utime(dead[-1], (day_ago, day_ago))
        rc, _, err, _ = run(["infer"] + self.campaign_args(out), ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        self.assertEqual([p for p in dead if os.path.exists(p)], [])
        self.assertEqual([p for p in alive if not os.path.exists(p)], [])
        self.outputs_equal(self.reference, out)

    def test_a_corrupt_input_fails_its_file_only_and_retry_failed_completes_it(self):
        data = os.path.join(self.tmp, "mixed")
        os.makedirs(data, exist_ok=True)
        for path in self.inputs:
            shutil.copy(path, data)
        bad = os.path.join(data, "jets-00002.h5")
        with open(bad, "r+b") as f:
            f.truncate(4096)
        out = os.path.join(self.tmp, "mixed-out")
        args = self.campaign_args(out, [os.path.join(data, "jets-*.h5")])
        rc, stdout, err, _ = run(["infer"] + args, ranks=2, timeout=300)
        self.assertEqual(rc, 1, err)
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
        self.assertEqual(len(summary["failures"]), 1)
        self.assertIn("jets-00002.h5", summary["failures"][0]["error"])
        self.assertEqual(summary["files_written"], FILES - 1)
        self.assertFalse(os.path.exists(os.path.join(out, "jets-00002.predictions.h5")))
        shutil.copy(self.inputs[2], bad)  # repaired
        rc, stdout, err, _ = run(["infer", "--retry-failed"] + args, ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        self.outputs_equal(self.reference, out)

    def test_a_changed_checkpoint_is_refused_and_new_starts_over(self):
        out = os.path.join(self.tmp, "fingerprint")
        rc, _, err, _ = run(["infer"] + self.campaign_args(out), ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        other = os.path.join(self.tmp, "other-run")
        rc, _, err, _ = run(["train"] + self.model_args() + ["--set", f"run.dir={other}", "--set", "train.seed=9"],
                            ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        ckpt = os.path.join(other, "checkpoints", sorted(os.listdir(os.path.join(other, "checkpoints")))[-1])
        args = self.campaign_args(out, extra=["--set", f"infer.checkpoint={ckpt}"])
        rc, _, err, _ = run(["infer"] + args, ranks=2, timeout=300)
        self.assertEqual(rc, 2, err)
        lines = [l for l in err.splitlines() if "holds another campaign" in l]
        self.assertEqual(len(lines), 1, err)
        self.assertIn("the checkpoint's parameters", lines[0])
        rc, _, err, _ = run(["infer", "--new"] + args, ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        self.assertTrue([d for d in os.listdir(self.tmp) if d.startswith("fingerprint.replaced-")])

    def test_a_slow_unit_does_not_stall_the_other_rank(self):
        out = os.path.join(self.tmp, "slow")
        env = dict(os.environ, HPCML_TEST_CAMPAIGN_SLOW="0:0:2500")
        rc, _, err, _ = run(["infer"] + self.campaign_args(out), ranks=2, timeout=300, env=env)
        self.assertEqual(rc, 0, err)
        [(_, events)] = read_journals(out)
        slow = [e for e in events if e["event"] == "start" and e["id"] == "0:0"][0]
        slow_end = [e for e in events if e["event"] == "done" and e["id"] == "0:0"][0]["t"]
        # While the slow unit ran, the other worker took every unit handed out.
        during = [e for e in events if e["event"] == "start" and slow["t"] < e["t"] < slow_end]
        self.assertGreater(len(during), FILES * ROWS // CHUNK // 2)
        self.assertTrue(all(e["worker"] != slow["worker"] for e in during))
        self.outputs_equal(self.reference, out)

    def start_job(self, out, env, extra=()):
        cmd = [MPIEXEC, "-n", "2"] + MPIEXEC_PREFLAGS + [BIN, "infer"] + self.campaign_args(out, extra=extra)
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env=dict(os.environ, **env))

    def wait_for(self, path, seconds=60):
        deadline = time.time() + seconds
        while time.time() < deadline and not os.path.exists(path):
            time.sleep(0.02)
        self.assertTrue(os.path.exists(path), f"{path} never appeared")

    def test_two_jobs_share_one_campaign_and_compute_each_unit_once(self):
        out = os.path.join(self.tmp, "two-jobs")
        slow = {"HPCML_TEST_CAMPAIGN_SLOW": "*:200"}  # 40 units of 200 ms: about 4 s for one job
        a = self.start_job(out, slow)
        self.wait_for(os.path.join(out, "campaign.json"))
        b = self.start_job(out, slow)
        for job in (a, b):
            _, err = job.communicate(timeout=120)
            self.assertEqual(job.returncode, 0, err)
        self.outputs_equal(self.reference, out)
        journals = read_journals(out)
        self.assertEqual(len(journals), 2)
        computed = computed_done(journals)
        self.assertEqual(sorted(computed), sorted(set(computed)), "a unit computed by both jobs")
        units = [i for i in computed if not i.startswith("assemble:")]
        self.assertEqual(len(units), FILES * ROWS // CHUNK)
        for name, events in journals:
            self.assertTrue([e for e in events if e["event"] == "done" and not e.get("recovered")],
                            f"{name} computed nothing: the jobs did not share the work")

    def test_a_killed_jobs_claim_on_this_host_is_taken_over_at_once(self):
        out = os.path.join(self.tmp, "killed-claim")
        a = self.start_job(out, {"HPCML_TEST_CAMPAIGN_SLOW": "0:0:60000"})
        self.wait_for(os.path.join(out, "claims", "0_0.claim"))
        with open(os.path.join(out, "claims", "0_0.claim")) as f:
            holder = f.read().split()[0]
        kill_session(a.pid)
        a.communicate(timeout=30)
        start = time.monotonic()
        rc, _, err, _ = run(["infer"] + self.campaign_args(out), ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        # The default lease is 60 s: the dead process's claim must not wait for it.
        self.assertLess(time.monotonic() - start, 30, "the dead job's claim waited for its lease")
        self.assertIn(f"took over the claim of unit 0:0 from '{holder}' (its process is gone from this host)", err)
        self.outputs_equal(self.reference, out)

    def test_a_live_or_another_hosts_claim_is_taken_over_only_after_its_lease(self):
        # Planted claims: one of another host (its process cannot be looked at), one of a
        # live process on this host (this test's). Both wait for the 10 s lease.
        out = os.path.join(self.tmp, "leased-claims")
        os.makedirs(os.path.join(out, "claims"))
        holders = {"0_0": "node-b.cluster-4242", "1_0": f"{os.uname().nodename}-{os.getpid()}"}
        for unit, holder in holders.items():
            with open(os.path.join(out, "claims", unit + ".claim"), "w") as f:
                f.write(f"{holder} 7\n")
        start = time.monotonic()
        rc, _, err, _ = run(["infer"] + self.campaign_args(out, extra=["--set", "infer.lease_s=10"]), ranks=2,
                            timeout=300)
        self.assertEqual(rc, 0, err)
        self.assertGreaterEqual(time.monotonic() - start, 10, "a claim was taken before its lease ran out")
        for unit, holder in holders.items():
            self.assertIn(f"took over the claim of unit {unit.replace('_', ':')} from '{holder}' (no heartbeat for 10 s)",
                          err)
        self.outputs_equal(self.reference, out)

    def test_a_late_finisher_is_superseded(self):
        out = os.path.join(self.tmp, "late")
        a = self.start_job(out, {"HPCML_TEST_CAMPAIGN_SLOW": "0:0:3000"}, ["--set", "infer.lease_s=10"])
        self.wait_for(os.path.join(out, "claims", "0_0.claim"))
        kill_session(a.pid, signal.SIGSTOP)  # job A hangs while holding unit 0:0
        try:
            rc, _, err, _ = run(["infer"] + self.campaign_args(out, extra=["--set", "infer.lease_s=10"]), ranks=2,
                                timeout=300)
            self.assertEqual(rc, 0, err)
        finally:
            kill_session(a.pid, signal.SIGCONT)
        _, err = a.communicate(timeout=120)
        self.assertEqual(a.returncode, 0, err)
        self.outputs_equal(self.reference, out)
        journals = dict(read_journals(out))
        late = [e for name, events in journals.items() for e in events
                if e["event"] == "done" and e["id"] == "0:0" and e.get("result", {}).get("superseded")]
        self.assertEqual(len(late), 1, "job A's late copy of unit 0:0 is recorded as superseded")
        self.assertEqual(os.listdir(os.path.join(out, "parts")), [])

    def test_a_full_disk_ends_the_campaign_with_one_line_and_nothing_half_written(self):
        disk = os.path.join(self.tmp, "small-disk")
        os.makedirs(disk)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", disk], capture_output=True,
                                 text=True)
        self.assertEqual(mounted.returncode, 0, f"this test mounts a 200 KiB tmpfs (needs root): {mounted.stderr}")
        try:
            out = os.path.join(disk, "out")
            rc, _, err, _ = run(["infer"] + self.campaign_args(out), ranks=2, timeout=120)
            self.assertNotEqual(rc, 0)
            # The disk fills under a part (a worker's "cannot write the campaign's outputs") or,
            # seen once in 150 runs, under a claim file (the coordinator's "cannot write claim").
            lines = [l for l in err.splitlines() if l.startswith("hpcml:") and "No space left on device" in l]
            self.assertGreaterEqual(len(lines), 1, f"exit code {rc}, stderr:\n{err}")
            for line in lines:
                if "cannot write the campaign's outputs" in line:
                    self.assertIn("No space left on device; stopping (not an input's fault", line)
                else:
                    self.assertIn("cannot write claim", line)
            self.assertNotIn("Traceback", err)
            left = [os.path.join(d, f) for d, _, files in os.walk(out) for f in files]
            self.assertEqual([f for f in left if ".tmp" in f or f.endswith(".predictions.h5")], [],
                             "a temporary or an output file was left in place")
        finally:
            unmount(disk)

    def test_a_stop_signal_ends_with_75_and_the_rerun_completes(self):
        out = os.path.join(self.tmp, "signalled")
        job = self.start_job(out, {"HPCML_TEST_CAMPAIGN_SLOW": "*:150"})
        deadline = time.time() + 60
        while time.time() < deadline:  # a few units committed
            parts = os.path.join(out, "parts")
            if os.path.isdir(parts) and len(os.listdir(parts)) >= 3:
                break
            time.sleep(0.02)
        job.send_signal(signal.SIGUSR1)  # mpirun forwards it to every rank
        _, err = job.communicate(timeout=60)
        self.assertEqual(job.returncode, 75, err)
        self.assertIn("no more tasks are handed out", err)
        [(_, events)] = read_journals(out)
        self.assertEqual(events[-1]["event"], "stopped")
        self.assertGreater(events[-1]["left"], 0)
        rc, _, err, _ = run(["infer"] + self.campaign_args(out), ranks=2, timeout=300)
        self.assertEqual(rc, 0, err)
        self.outputs_equal(self.reference, out)

    def test_inputs_sharing_a_file_name_get_distinct_outputs(self):
        a, b = os.path.join(self.tmp, "site-a"), os.path.join(self.tmp, "site-b")
        for d in (a, b):
            os.makedirs(d, exist_ok=True)
            shutil.copy(self.inputs[0], d)
        out = os.path.join(self.tmp, "same-names")
        rc, _, err, _ = run(["infer"] + self.campaign_args(out, [os.path.join(a, "*.h5"), os.path.join(b, "*.h5")]),
                            ranks=2, timeout=120)
        self.assertEqual(rc, 0, err)
        # The documented rule: <stem>-<k>.predictions.h5, k the input's position in the list.
        for k, d in enumerate((a, b)):
            path = os.path.join(out, f"jets-00000-{k}.predictions.h5")
            with h5py.File(path, "r") as f:
                self.assertEqual(f.attrs["input_file"], os.path.join(d, "jets-00000.h5"))
        self.assertFalse(os.path.exists(os.path.join(out, "jets-00000.predictions.h5")))

    def test_bad_configs_are_one_line(self):
        for extra, want in ((["--set", "infer.inputs=[/nonexistent/*.h5]"], "key 'infer.inputs'"),
                            (["--set", "model.name=nsf-gw"], "key 'data.inputs.strain'")):
            rc, _, err, _ = run(["infer"] + self.campaign_args(os.path.join(self.tmp, "bad")) + extra, ranks=2,
                                timeout=120)
            self.assertNotEqual(rc, 0)
            self.assertEqual(len([l for l in err.splitlines() if want in l]), 1, err)


if __name__ == "__main__":
    unittest.main()


class ShippedReprocessConfigTest(unittest.TestCase):
    def test_reprocess_yaml_scores_every_file_of_a_trained_particlenet_lite(self):
        """configs/reprocess.yaml (the campaign DESIGN.md's sbatch line names), pointed at tiny jets and a
        ParticleNet-Lite trained by configs/particlenet-lite.yaml, both given as arguments: one
        predictions file per input, every row, probabilities, the label copied, the training's parameters
        fingerprinted; the same command again has nothing left to do and leaves the bytes as they were."""
        configs = os.path.join(SOURCE_DIR, "configs")
        with tempfile.TemporaryDirectory() as tmp:
            data, run_dir, out = (os.path.join(tmp, d) for d in ("jets", "pnl", "out"))
            rc, _, err, _ = run(["datagen", "jets", "-o", data, "--files", "2", "--events-per-file", "300"], ranks=2)
            self.assertEqual(rc, 0, err)
            rc, _, err, _ = run(["train", os.path.join(configs, "particlenet-lite.yaml"),
                                 "--set", f"data.files=[{data}/jets-00000.h5]", "--set", f"data.validation_files=[{data}/jets-00001.h5]",
                                 "--set", "train.max_steps=3", "--set", f"run.dir={run_dir}"], ranks=2, timeout=300)
            self.assertEqual(rc, 0, err)
            command = ["infer", os.path.join(configs, "reprocess.yaml"), "--set", f"run.dir={run_dir}",
                       "--set", f"infer.inputs=[{data}/jets-*.h5]", "--set", f"infer.output_dir={out}"]
            rc, _, err, _ = run(command, ranks=2, timeout=300)
            self.assertEqual(rc, 0, err)
            with open(os.path.join(run_dir, "summary.json")) as f:
                digest = json.load(f)["parameters_sha256"]
            first = {}
            for k in range(2):
                path = os.path.join(out, f"jets-0000{k}.predictions.h5")
                with h5py.File(path, "r") as f, h5py.File(os.path.join(data, f"jets-0000{k}.h5"), "r") as x:
                    np.testing.assert_array_equal(f["row"][...], np.arange(300))
                    self.assertEqual(f["scores"].shape, (300, 2))
                    np.testing.assert_allclose(f["scores"][...].sum(1), 1.0, rtol=1e-5)
                    np.testing.assert_array_equal(f["label"][...], x["label"][...])
                    self.assertEqual(f.attrs["checkpoint_sha256"], digest)
                with open(path, "rb") as f:
                    first[path] = f.read()
            rc, _, err, _ = run(command, ranks=2, timeout=300)
            self.assertEqual(rc, 0, err)
            for path, content in first.items():
                with open(path, "rb") as f:
                    self.assertEqual(f.read(), content, path)
