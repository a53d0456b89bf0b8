"""Bad configs and bad command lines: one line naming the key, exit code 2,
never a stack trace or an abort; on 1 rank and on 2 ranks."""
import os
import re
import subprocess
import tempfile
import unittest

from support import BIN, SOURCE_DIR, run, without_mpirun_notes

TRACE_MARKERS = ("terminate called", "Aborted", "core dumped", "Segmentation", "MPI_ABORT", "Traceback", "what():")


class ConfigErrorTest(unittest.TestCase):
    def config_file(self, text):
        f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        f.write(text)
        f.close()
        self.addCleanup(os.unlink, f.name)
        return f.name

    def assert_one_line_error(self, args, pattern, ranks=None):
        rc, out, err, _ = run(args, ranks=ranks)
        self.assertEqual(rc, 2, f"exit code for {args}: stdout={out!r} stderr={err!r}")
        lines = without_mpirun_notes(err)
        self.assertEqual(len(lines), 1, f"expected one line on stderr, got: {err!r}")
        self.assertRegex(lines[0], pattern)
        for marker in TRACE_MARKERS:
            self.assertNotIn(marker, err)
        return lines[0]

    def test_unknown_key(self):
        path = self.config_file("runtime:\n  thread: 2\n")
        line = self.assert_one_line_error(["config", "-c", path], r"unknown key 'runtime\.thread'")
        self.assertIn("did you mean 'runtime.threads'?", line)
        self.assertIn(path, line)

    def test_wrong_type(self):
        path = self.config_file("runtime:\n  threads: two\n")
        self.assert_one_line_error(["info", "-c", path],
                                   r"key 'runtime\.threads': expected an integer in \[0, 1024\], found 'two'")

    def test_out_of_range(self):
        path = self.config_file("runtime:\n  collective_timeout_s: -5\n")
        self.assert_one_line_error(["config", "-c", path],
                                   r"key 'runtime\.collective_timeout_s': expected a number in .*found '-5'")

    def test_bad_choice_from_set(self):
        self.assert_one_line_error(["config", "--set", "runtime.backend=gloo"],
                                   r"config error in --set runtime\.backend: key 'runtime\.backend': "
                                   r"expected one of \[mpi, local, nccl, auto\], found 'gloo'")

    def test_malformed_set(self):
        self.assert_one_line_error(["config", "--set", "runtime.threads"], r"expected KEY=VALUE")

    def test_not_yaml(self):
        path = self.config_file("runtime: {threads: 2\n")
        self.assert_one_line_error(["config", "-c", path], r"not valid YAML at line \d+")

    def test_bad_environment_variable(self):
        rc, out, err, _ = run(["config"], env={"HPCML_NUM_THREADS": "lots"})
        self.assertEqual(rc, 2)
        self.assertEqual(err.strip(), "hpcml: config error in environment variable HPCML_NUM_THREADS: key "
                                      "'runtime.threads': expected an integer in [0, 1024], found 'lots'")

    def test_unknown_option_and_missing_file(self):
        self.assert_one_line_error(["info", "--bogus"], r"--bogus")
        self.assert_one_line_error(["info", "-c", "/nonexistent.yaml"], r"/nonexistent\.yaml")

    def test_two_ranks_print_one_line(self):
        path = self.config_file("runtime:\n  threads: -1\n")
        self.assert_one_line_error(["info", "-c", path], r"key 'runtime\.threads'", ranks=2)

    def test_valid_config_resolves_with_defaults(self):
        path = self.config_file("runtime:\n  threads: 1\n")
        rc, out, err, _ = run(["config", "-c", path, "--set", "log.level=debug"])
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"threads: 1\b")
        self.assertRegex(out, r"level: debug\b")
        self.assertRegex(out, r"collective_timeout_s: 300\b")

    def test_reference_matches_docs(self):
        rc, out, err, _ = run(["config", "--reference"])
        self.assertEqual(rc, 0, err)
        with open(os.path.join(SOURCE_DIR, "docs", "config-reference.md")) as f:
            docs = f.read()
        self.assertIn(out.strip(), docs, "docs/config-reference.md is out of date: regenerate it with "
                                         "`hpcml config --reference`")

    def test_help_explains_every_option(self):
        for sub in (["info"], ["config"], ["bench", "allreduce"]):
            rc, out, err, _ = run(sub + ["--help"])
            self.assertEqual(rc, 0, err)
            for option in re.findall(r"^\s+(--[a-z-]+)", out, re.M):
                line = next(l for l in out.splitlines() if l.strip().startswith(option) or f", {option}" in l)
                self.assertGreater(len(line.split(option, 1)[1].strip()), 10, f"{sub} {option} has no explanation")


    def test_commands_that_need_no_mpi_start_none_outside_a_launcher(self):
        """Outside a launcher, MPI starts once the command line and config have parsed, and not
        at all for the commands that only read and print. With an Open MPI that cannot start
        (OPAL_PREFIX pointing nowhere, as on a login node without MPI), --help, a rejected config,
        `config` and the key references still give their text and exit code. A command that
        runs (info), and --help under a launcher's variable, stop in MPI_Init: the breakage is
        real, and a launched rank starts MPI before it reads its command line."""
        launcher_vars = ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")
        env = {k: v for k, v in os.environ.items() if k not in launcher_vars}
        env["OPAL_PREFIX"] = "/nonexistent-open-mpi"

        def hpcml(args, extra=None):
            proc = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=60,
                                  env=dict(env, **(extra or {})))
            return proc.returncode, proc.stdout, proc.stderr

        rc, out, err = hpcml(["--help"])
        self.assertEqual(rc, 0, err)
        self.assertIn("Usage: hpcml", out)
        rc, out, err = hpcml(["config", "--set", "runtime.thread=2"])
        self.assertEqual(rc, 2, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("unknown key 'runtime.thread'", err)
        rc, out, err = hpcml(["config", "--set", "runtime.threads=3"])
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"(?m)^  threads: 3$")
        for args, key in ((["hpo", "--reference"], "hpo.sampler"), (["serve", "--reference"], "serve.servers"),
                          (["config", "--reference"], "optimizer.lr")):
            rc, out, err = hpcml(args)
            self.assertEqual(rc, 0, f"{args}: {err}")
            self.assertIn(key, out)

        rc, out, err = hpcml(["info"])
        self.assertNotIn(rc, (0, 2), f"info started without MPI: {out!r} {err!r}")
        self.assertIn("MPI_Init", err)
        rc, out, err = hpcml(["--help"], {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1"})
        self.assertNotEqual(rc, 0)
        self.assertNotIn("Usage: hpcml", out)

if __name__ == "__main__":
    unittest.main()
