"""Bad input never crashes, hangs or destroys a run: one test per finding of issue 22
(141 bad inputs tried by hand, 21 handled badly), grouped by the class behind them.

Each asserts what the user must see (exit code, one line naming the key, option, file
or dataset, expected vs found) and, for the data-loss cases, that the files that were
there before are byte for byte what they were (SHA-256 of every file)."""
import glob
import hashlib
import os
import re
import shutil
import tempfile
import unittest

import h5py
import numpy as np

from support import SOURCE_DIR, run

TRACE_MARKERS = ("frame #", "Exception raised from", "terminate called", "Segmentation", "core dumped",
                 "Traceback", "unexpected error")


def tree_digest(path):
    """{relative path: sha256} of every file under `path` (or of the file itself)."""
    files = [path] if os.path.isfile(path) else sorted(glob.glob(os.path.join(path, "**", "*"), recursive=True))
    out = {}
    for f in files:
        if os.path.isfile(f):
            with open(f, "rb") as fh:
                out[os.path.relpath(f, path) if f != path else "."] = hashlib.sha256(fh.read()).hexdigest()
    return out


def hpcml_lines(err):
    """The lines hpcml itself printed on stderr (not mpirun's notes, not log lines)."""
    return [line for line in err.splitlines() if line.startswith("hpcml:")]


class BadInputTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hpcml-bad-input-")
        cls.calo = os.path.join(cls.tmp, "calo")
        rc, _, err, _ = run(["datagen", "calo", "-o", cls.calo, "--files", "1", "--events-per-file", "300"])
        assert rc == 0, err
        cls.channels = os.path.join(cls.calo, "calo-channels-00000.h5")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.tmp, self.id().rsplit(".", 1)[-1] + "-" + name)

    def assert_error(self, args, rc, pattern, timeout=120):
        got_rc, out, err, seconds = run(args, timeout=timeout)
        self.assertEqual(got_rc, rc, f"exit code for {args}: stdout={out[-500:]!r} stderr={err[-2000:]!r}")
        lines = hpcml_lines(err)
        self.assertEqual(len(lines), 1, f"expected one hpcml line on stderr for {args}, got: {err!r}")
        self.assertRegex(lines[0], pattern)
        for marker in TRACE_MARKERS:
            self.assertNotIn(marker, out + err)
        return lines[0], seconds

    def train_args(self, run_dir, *extra):
        return ["train", "--set", "data.samples=256", "--set", "data.validation_samples=64", "--set",
                "train.epochs=1", "--set", "run.dir=" + run_dir, *extra]

    def facile_args(self, run_dir, files, *extra):
        return ["train", "-c", os.path.join(SOURCE_DIR, "configs", "facile.yaml"), "--set", f"data.files=[{files}]",
                "--set", "data.validation_files=[]", "--set", "train.epochs=1", "--set", "run.dir=" + run_dir,
                *extra]

    # ---- sizes are checked where they enter (findings 1-7, 15) ----

    def test_01_02_non_positive_width_is_a_config_error_in_train_and_config(self):
        for width in ("-1", "0"):
            for cmd in (self.train_args(self.path("w"), "--set", f"model.hidden=[{width}]"),
                        ["config", "--for", "train", "--set", f"model.hidden=[{width}]"]):
                self.assert_error(cmd, 2, rf"key 'model\.hidden': expected a list of integers each in \[1, \d+\], "
                                          rf"found \[{width}\] \(element 0 is {width}\)")
        self.assertFalse(os.path.exists(self.path("w")), "a refused run must not create its run.dir")

    def test_03_huge_feature_count_is_refused_before_any_allocation(self):
        self.assert_error(self.train_args(self.path("r"), "--set", "data.features=1000000000"), 2,
                          r"key 'data\.features': expected an integer in \[1, \d+\], found '1000000000'")
        # Each key in range, the product too large for this node: the memory estimate names the keys.
        self.assert_error(self.train_args(self.path("r"), "--set", "data.features=1000000",
                                          "--set", "data.samples=1000000"), 2,
                          r"data\.samples .*data\.features: the synthetic data set would need about .* of this "
                          r"node's memory")

    def test_04_huge_width_is_refused(self):
        self.assert_error(self.train_args(self.path("r"), "--set", "model.hidden=[2000000000]"), 2,
                          r"key 'model\.hidden': .*\(element 0 is 2000000000\)")
        line, _ = self.assert_error(self.train_args(self.path("r"), "--set", "model.hidden=[60000,60000]"), 2,
                                    r"the MLP's parameters and state would need about")
        self.assertIn("model.hidden", line)
        # `config --for train` rejects exactly what train rejects.
        self.assert_error(["config", "--for", "train", "--set", "model.hidden=[60000,60000]"], 2,
                          r"the MLP's parameters and state would need about")

    def test_05_huge_posterior_draws_are_refused(self):
        self.assert_error(["infer", "-c", os.path.join(SOURCE_DIR, "configs", "nsf-gw.yaml"), "-i", self.channels,
                           "-o", self.path("post.h5"), "--samples", "2000000000"], 2, r"--samples: .*2000000000")

    def test_06_15_bench_allreduce_sizes_and_times(self):
        self.assert_error(["bench", "allreduce", "--min-bytes", "64G", "--max-bytes", "64G", "--reps", "1"], 2,
                          r"--max-bytes: expected at most 8\.0 GiB; found '64G'")
        self.assert_error(["bench", "allreduce", "--target-ms", "-5"], 2, r"--target-ms: expected .*found -5")

    def test_07_datagen_refuses_an_unbounded_file_at_once(self):
        out = self.path("g")
        _, seconds = self.assert_error(["datagen", "tracking", "-o", out, "--files", "1", "--events-per-file",
                                        "99999999999"], 2, r"--events-per-file: expected 1 to \d+; found 99999999999",
                                       timeout=30)
        self.assertLess(seconds, 20)
        # Within the cap, but a file that cannot fit in memory: refused by the estimate.
        self.assert_error(["datagen", "tracking", "-o", out, "--files", "1", "--events-per-file", "99999999"], 2,
                          r"one tracking file would need about .* of this node's memory", timeout=30)
        self.assertFalse(os.path.exists(out))

    # ---- clear errors (findings 8-12) ----

    def test_08_a_bad_list_element_is_named(self):
        self.assert_error(["config", "--for", "train", "--set", "model.hidden=[64, a]"], 2,
                          r"key 'model\.hidden': expected a list of integers .*found \[64, a\] \(element 1 is 'a'\)")

    def test_09_a_dataset_of_the_wrong_shape_named_by_the_config(self):
        run_dir = self.path("run")
        self.assert_error(self.facile_args(run_dir, self.channels, "--set", "data.input=energy"), 2,
                          r"key 'data\.input': model facile reads input 'x' with per-event shape \[15\], but dataset "
                          r"'energy' of .*calo-channels-00000\.h5 has per-event shape \[\]")
        self.assertFalse(os.path.exists(run_dir))

    def test_10_a_file_whose_inputs_have_14_columns(self):
        bad = self.path("c14.h5")
        shutil.copy(self.channels, bad)
        with h5py.File(bad, "r+") as f:
            d = f["inputs"]
            data, attrs = d[:, :14], dict(d.attrs)
            del f["inputs"]
            n = f.create_dataset("inputs", data=data)
            for k, v in attrs.items():
                n.attrs[k] = v[:14] if k in ("features", "units") else v
        self.assert_error(self.facile_args(self.path("run"), bad), 1,
                          r"data error: .*c14\.h5: dataset 'inputs' \(model facile's input 'x'\): expected per-event "
                          r"shape \[15\], found \[14\]")

    def test_11_unknown_subcommands_list_the_known_ones(self):
        line, _ = self.assert_error(["datagen", "muons", "-o", self.path("x")], 2,
                                    r"unknown subcommand 'muons' of 'hpcml datagen'; expected one of "
                                    r"\[calo, gw, jets, lr, tracking\]")
        self.assert_error(["bench"], 2, r"'hpcml bench' needs a subcommand: one of \[allreduce, ddp, infer, io, model, "
                                        r"pack, scaling, serve\]")
        line, _ = self.assert_error(["trian"], 2, r"unknown subcommand 'trian' of 'hpcml'; expected one of \[.*train.*\]"
                                                  r"; did you mean 'train'\?")

    def test_12_export_onto_a_directory(self):
        run_dir = self.path("run")
        rc, _, err, _ = run(self.train_args(run_dir))
        self.assertEqual(rc, 0, err)
        checkpoint = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "*.pt")))[-1]
        out = self.path("out")
        os.makedirs(out)
        self.assert_error(["export", checkpoint, "-o", out], 2, rf"-o/--output '{re.escape(out)}' is a directory")
        self.assertFalse(os.path.exists(out + ".tmp"))
        # A file in a directory that does not exist: refused before any work, nothing left.
        self.assert_error(["export", checkpoint, "-o", os.path.join(self.path("missing-dir"), "p.h5")], 2,
                          r"-o/--output '.*p\.h5': directory '.*missing-dir' does not exist")
        self.assertEqual(glob.glob(self.path("missing-dir") + "*"), [])

    # ---- exit 0 on bad input (findings 13-15) ----

    def test_13_a_key_written_twice_is_an_error_with_both_lines(self):
        path = self.path("dup.yaml")
        with open(path, "w") as f:
            f.write("train:\n  epochs: 1\n  batch_size: 8\n  epochs: 2\n")
        self.assert_error(["config", "--for", "train", "-c", path], 2,
                          r"key 'train\.epochs' appears twice in one mapping \(lines 2 and 4\)")
        self.assert_error(["config", "--set", "runtime={threads: 1, threads: 2}"], 2,
                          r"key 'runtime\.threads' appears twice")

    def test_14_nan_inputs_stop_the_run_naming_the_step_and_keep_the_last_finite_checkpoint(self):
        bad = self.path("nan.h5")
        shutil.copy(self.channels, bad)
        with h5py.File(bad, "r+") as f:
            x = f["inputs"][()]
            x[200:] = np.nan  # the second epoch's batches (batch 100, no shuffle) hold NaNs
            f["inputs"][...] = x
        run_dir = self.path("run")
        args = self.facile_args(run_dir, bad, "--set", "train.epochs=2", "--set", "train.batch_size=100",
                                "--set", "train.shuffle=false", "--set", "checkpoint.every_steps=1")
        line, _ = self.assert_error(args, 1, r"training stopped at step 3: the loss is nan: input 'x' \(dataset "
                                             r"'inputs' of data\.files\) holds \d+ non-finite value")
        self.assertIn("step-2.pt", line)
        kept = sorted(os.path.basename(p) for p in glob.glob(os.path.join(run_dir, "checkpoints", "*.pt")))
        self.assertEqual(kept, ["step-1.pt", "step-2.pt"])
        self.assertFalse(os.path.exists(os.path.join(run_dir, "summary.json")))
        # As a warning: the run goes on and ends with exit 0, saying so once.
        rc, out, err, _ = run(args + ["--set", "train.on_nonfinite=warn", "--overwrite"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(re.findall(r"step 3: the loss is nan", out + err)), 1, out + err)

    # ---- data loss (findings 16-19) ----

    def test_16_a_fresh_run_never_lands_in_another_runs_directory(self):
        run_dir = self.path("run")
        rc, _, err, _ = run(self.train_args(run_dir))
        self.assertEqual(rc, 0, err)
        before = tree_digest(run_dir)
        self.assert_error(self.train_args(run_dir), 2, r"key 'run\.dir': .* holds another run \(config\.yaml, "
                                                       r"metrics\.jsonl, summary\.json, 1 checkpoint\(s\)\); "
                                                       r"continue it with --resume.*--overwrite")
        self.assertEqual(tree_digest(run_dir), before)
        # --overwrite moves it aside whole, and the new run holds only its own files.
        rc, out, err, _ = run(self.train_args(run_dir, "--set", "train.max_steps=2", "--overwrite"))
        self.assertEqual(rc, 0, err)
        aside = glob.glob(run_dir + ".replaced-*")
        self.assertEqual(len(aside), 1, aside)
        self.assertEqual(tree_digest(aside[0]), before)
        self.assertEqual([os.path.basename(p) for p in glob.glob(os.path.join(run_dir, "checkpoints", "*"))],
                         ["step-2.pt"])

    def test_17_a_failed_resume_with_another_model_changes_nothing(self):
        run_dir = self.path("run")
        rc, _, err, _ = run(self.train_args(run_dir))
        self.assertEqual(rc, 0, err)
        before = tree_digest(run_dir)
        rc, _, err, _ = run(self.train_args(run_dir, "--set", "model.hidden=[32]", "--resume"))
        self.assertEqual(rc, 1, err)
        self.assertEqual(len(hpcml_lines(err)), 1, err)
        self.assertIn("checkpoint", hpcml_lines(err)[0])
        self.assertEqual(tree_digest(run_dir), before)

    def test_18_a_resume_that_fails_at_start_up_on_bad_data_changes_nothing(self):
        run_dir = self.path("run")
        rc, _, err, _ = run(self.facile_args(run_dir, self.channels))
        self.assertEqual(rc, 0, err)
        before = tree_digest(run_dir)
        self.assert_error(self.facile_args(run_dir, self.channels, "--set", "data.input=energy", "--resume"), 2,
                          r"key 'data\.input'")
        self.assertEqual(tree_digest(run_dir), before)

    def test_19_an_output_never_replaces_an_input(self):
        copy = self.path("strain.h5")
        shutil.copy(self.channels, copy)
        before = tree_digest(copy)
        for out in (copy, os.path.join(os.path.dirname(copy), ".", os.path.basename(copy))):
            self.assert_error(["infer", "-c", os.path.join(SOURCE_DIR, "configs", "nsf-gw.yaml"), "-i", copy, "-o",
                               out, "--samples", "100"], 2, r"-o/--output .* is the same file as the input")
        self.assertEqual(tree_digest(copy), before)

    def test_20_an_ensemble_never_lands_in_another_directory_and_names_its_bad_keys(self):
        run_dir = self.path("run")
        rc, _, err, _ = run(self.train_args(run_dir))
        self.assertEqual(rc, 0, err)
        before = tree_digest(run_dir)
        config = self.path("ensemble.yaml")

        def write(ensemble):
            with open(config, "w") as f:
                f.write("data: {samples: 256, validation_samples: 64}\ntrain: {epochs: 1}\n"
                        f"ensemble: {ensemble}\n")
            return ["ensemble", "-c", config]
        # Into a training run's directory: refused, nothing changed.
        self.assert_error(write("{members: 1, dir: " + run_dir + "}"), 2,
                          r"key 'ensemble\.dir': expected a new or empty directory.*a directory holding other files")
        self.assertEqual(tree_digest(run_dir), before)
        # Into another ensemble's directory: refused, naming what differs.
        ens = self.path("ens")
        rc, _, err, _ = run(write("{members: 1, dir: " + ens + "}"))
        self.assertEqual(rc, 0, err)
        before = tree_digest(ens)
        self.assert_error(write("{members: 1, seed: 5, dir: " + ens + "}"), 2,
                          r"key 'ensemble\.dir': .* holds an ensemble whose 'seed' differs")
        self.assertEqual(tree_digest(ens), before)
        # A variation's bad key, value or name, and a missing section: one line naming it.
        self.assert_error(write("{dir: " + ens + "x, variations: {v1: {optimizer.lr: -1}}}"), 2,
                          r"optimizer\.lr.*ensemble\.variations\.v1|ensemble\.variations\.v1.*optimizer\.lr")
        self.assert_error(write("{dir: " + ens + "x, variations: {v1: {model.hiden: [3]}}}"), 2, r"model\.hiden")
        self.assert_error(write("{dir: " + ens + "x, variations: {'a b': {}}}"), 2, r"ensemble\.variations")
        self.assert_error(write("{dir: " + ens + "x, members: -3}"), 2, r"ensemble\.members")
        self.assert_error(["ensemble", "--set", "train.epochs=1"], 2, r"ensemble: expected a config with an 'ensemble' section \(-c CONFIG, or CONFIG\)")
        # infer.members without an ensemble.
        self.assert_error(["infer", "--set", "infer.inputs=[" + self.channels + "]", "--set", "infer.members=true",
                           "--set", "run.dir=" + run_dir], 2, r"key 'infer\.members': expected false unless run\.dir")


if __name__ == "__main__":
    unittest.main()
