"""A fuzzer for the command line (issue 22, item 8).

Generates a few hundred bad invocations of every subcommand, deterministically from a seed,
and runs each against small data prepared once: random keys of the config references
(`config --reference`, `serve --reference`, `tracking reference`, parsed at test time so new
keys are fuzzed too) with out-of-range, wrong-typed and huge values; unknown keys; bad paths
(missing files, a directory for a file, an HDF5 file of another domain, truncated and garbage
files, configs that are not YAML or repeat a key); outputs aimed at the command's own inputs;
bad option values of bench, datagen, export and infer; unknown subcommands.

A case fails on:
  - a raw trace in stdout or stderr (`frame #`, `terminate called`, a Python traceback, ...),
    death by a signal, or an exit code the binary does not document;
  - a hang (no exit within HPCML_FUZZ_TIMEOUT_S);
  - exit 0 where the invocation is invalid by construction;
  - exit 2 (a bad command line or config) with an error message that is not one line;
  - any change to the pre-existing inputs: the data sets, the configs, the bad files and
    four finished run directories (hashed before and after every batch of HPCML_FUZZ_JOBS
    cases; new files count).

All failures are reported together at the end. Knobs (environment):
  HPCML_FUZZ_SEED      seed of the campaign (default 22)
  HPCML_FUZZ_CASES     number of generated cases (default 200: about 2 minutes on 2 cores);
                       raise it for a longer campaign by hand: case i depends only on the seed,
                       i and this file, so a longer campaign starts with the same cases
  HPCML_FUZZ_ONLY      comma-separated case numbers: rerun only these (to reproduce one)
  HPCML_FUZZ_TIMEOUT_S per-case limit (default 60)
  HPCML_FUZZ_BUDGET_S  stop starting new cases after this many seconds (default 660)
  HPCML_FUZZ_MEMORY_GB address-space limit of every process a case starts (default 4), so a
                       runaway allocation fails fast instead of exhausting the machine
  HPCML_FUZZ_VERBOSE=1 print every case as it runs
  HPCML_FUZZ_JOBS      cases run at once (default 2, the machines' cores: most cases are bound by
                       the binary's start-up). A batch that changes the inputs runs again a case
                       at a time, so the change is reported against its own case
"""
import concurrent.futures
import glob
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from support import BIN, MPIEXEC, MPIEXEC_PREFLAGS, SOURCE_DIR, run, session_pids

SEED = int(os.environ.get("HPCML_FUZZ_SEED", "22"))
CASES = int(os.environ.get("HPCML_FUZZ_CASES", "200"))
ONLY = [int(x) for x in os.environ.get("HPCML_FUZZ_ONLY", "").replace(" ", "").split(",") if x]
TIMEOUT_S = float(os.environ.get("HPCML_FUZZ_TIMEOUT_S", "60"))
BUDGET_S = float(os.environ.get("HPCML_FUZZ_BUDGET_S", "660"))
MEMORY_BYTES = int(float(os.environ.get("HPCML_FUZZ_MEMORY_GB", "4")) * (1 << 30))
VERBOSE = os.environ.get("HPCML_FUZZ_VERBOSE", "") not in ("", "0")
JOBS = max(1, int(os.environ.get("HPCML_FUZZ_JOBS", "2")))

DOCUMENTED_EXIT_CODES = {0, 1, 2, 75, 86}
TRACE_MARKERS = ("frame #", "Exception raised from", "terminate called", "Traceback (most recent call last)",
                 "Segmentation fault", "core dumped", "*** Process received signal", "what():  ",
                 "AddressSanitizer", "stack smashing")
LOG_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\.\d+\] \[rank \d+/\d+\] (trace|debug|info): ")
MPIRUN_NOTE = re.compile(r"^\[[A-Za-z][\w.-]*:\d+\] ")  # "[host:pid] 1 more process has sent help message ..."

# Iteration counts: a huge value is a long run the user asked for, not a bad size.
LONG_RUNNING_KEYS = {"train.epochs", "train.max_steps", "embedding.steps", "filter.steps", "gnn.steps",
                     "serve.client.events", "serve.client.cpu_work_us", "serve.client.warmup_events"}

INT64_OVERFLOW = ["9223372036854775808", "18446744073709551616", "-9223372036854775809", "1" + "0" * 40]
HUGE_INTS = ["1000000000000", "2147483648", "4611686018427387904"]


# --- the references ---------------------------------------------------------------------------

class Key:
    def __init__(self, name, type_, default, accepted):
        self.name, self.type, self.default, self.accepted = name, type_, default, accepted
        self.choices, self.lo, self.lo_open, self.hi = None, None, False, None
        m = re.fullmatch(r"one of \[(.*)\]", accepted)
        if m:
            self.choices = [c.strip() for c in m.group(1).split(",")]
        m = re.fullmatch(r"in \[([^,]+), ([^\]]+)\]", accepted)
        if m:
            self.lo, self.hi = float(m.group(1)), float(m.group(2))
        m = re.fullmatch(r"(>=|>) (\S+)", accepted)
        if m:
            self.lo, self.lo_open = float(m.group(2)), m.group(1) == ">"

    def __repr__(self):
        return f"Key({self.name}, {self.type}, {self.accepted})"

    def out_of_range(self, x):
        """Whether the number x is outside the accepted range (False where there is none)."""
        if x != x:  # NaN is in no range
            return self.lo is not None or self.hi is not None
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return True
        return self.hi is not None and x > self.hi


def parse_reference(markdown):
    """{section title or '': [Key]} from the Markdown tables of a reference."""
    sections, title = {}, ""
    for line in markdown.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            continue
        m = re.match(r"^\| `([^`]+)` \| ([^|]*) \| ([^|]*) \| ([^|]*) \|", line)
        if m:
            default = m.group(3).strip().strip("`")
            sections.setdefault(title, []).append(Key(m.group(1), m.group(2).strip(), default, m.group(4).strip()))
    return sections


def fmt(x):
    if isinstance(x, float):
        if x == int(x) and abs(x) < 1e15:
            return str(int(x))
        return format(x, ".17g")
    return str(x)


def bad_values(key, in_scope):
    """[(value, invalid by construction)] for --set key=value."""
    t = key.type
    out = []
    if t == "an integer":
        out += [(v, True) for v in ("abc", "1.5", "1e3", "[a]", "[[1]]", "{a: 1}", "", "true", "nan", ".inf",
                                    "64Q")]
        out += [(v, True) for v in INT64_OVERFLOW]
        for v in (-1, 0):
            out.append((str(v), key.out_of_range(v)))
        if key.lo is not None:
            out.append((fmt(int(key.lo) - 1), True))
        if key.hi is not None:
            out += [(fmt(int(key.hi) + 1), True), (fmt(int(key.hi) * 1000 + 7), True)]
        if key.name not in LONG_RUNNING_KEYS or key.hi is not None:
            out += [(v, key.out_of_range(int(v))) for v in HUGE_INTS]
    elif t == "a number":
        out += [(v, True) for v in ("abc", "[1]", "{a: 1}", "", "true", "1.2.3", "0x")]
        for v in ("nan", ".nan", "NaN"):
            out.append((v, key.lo is not None or key.hi is not None))
        out += [(".inf", key.hi is not None), ("-.inf", key.lo is not None), ("1e400", key.hi is not None)]
        for v in (-1.0, 0.0, 1e12, 1e300, -1e300):
            if abs(v) < 1e12 or key.name not in LONG_RUNNING_KEYS or key.hi is not None:
                out.append((fmt(v), key.out_of_range(v)))
        if key.lo is not None:
            out.append((fmt(key.lo if key.lo_open else key.lo - 1), True))
        if key.hi is not None:
            out.append((fmt(key.hi + 1), True))
    elif t == "a boolean":
        out += [(v, True) for v in ("maybe", "2", "[true]", "", "{a: 1}", "nan", "-1")]
    elif t == "a string":
        out += [(v, True) for v in ("[a]", "{a: 1}", "[[1]]", "[]")]
        if key.choices:
            out += [(v, True) for v in ("bogus", "", key.choices[0] + "x", "-1", "nan", "[" + key.choices[0] + "]")]
        else:
            out += [("x" * 5000, False), ("{o}/" + "y" * 300, False)]  # names too long: ENAMETOOLONG
    elif t == "a list of integers":  # every such key is a list of layer widths
        out += [(v, True) for v in ("[-1]", "[0]", "[16, -3]", "[a]", "[[1]]", "abc", "[1.5]", "{a: 1}",
                                    "[9223372036854775808]", "[nan]")]
        out += [(v, False) for v in ("[2000000000]", "[1000000, 1000000]", "[4611686018427387904]")]
    elif t == "a list of strings":
        out += [(v, True) for v in ("[[a]]", "{a: b}", "[a, [b]]", "[{a: b}]")]
    elif t == "a mapping of strings":
        out += [(v, True) for v in ("[a]", "abc", "{a: [1]}", "{a: {b: c}}", "5")]
    elif t == "a mapping":
        out += [(v, True) for v in ("5", "abc", "[a]", "[[1]]", "true")]
    else:
        out += [("[a]", False)]
    if not in_scope:  # an unknown key for this subcommand, whatever the value
        out = [(v, True) for v, _ in out]
    return out


# --- the inputs -------------------------------------------------------------------------------

def tree_digest(root):
    """{relative path: 'dir' or (size, sha256)} of everything under root."""
    found = {}
    for base, dirs, files in os.walk(root):
        for d in dirs:
            found[os.path.relpath(os.path.join(base, d), root)] = "dir"
        for name in files:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                found[rel] = ("link", os.readlink(path))
                continue
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            found[rel] = (os.path.getsize(path), h.hexdigest())
    return found


def digest_changes(before, after):
    changes = []
    for rel in sorted(set(before) | set(after)):
        if rel not in after:
            changes.append(f"removed {rel}")
        elif rel not in before:
            changes.append(f"new {rel}")
        elif before[rel] != after[rel]:
            changes.append(f"changed {rel}")
    return changes


def without_mpirun_notes(text):
    """The lines of text, without blank ones and the notes mpirun adds between dashed rules."""
    kept, inside = [], False
    for line in text.splitlines():
        if re.fullmatch(r"-{20,}", line.strip()):
            inside = not inside
        elif not inside and line.strip() and not MPIRUN_NOTE.match(line):
            kept.append(line)
    return kept


def wait_for_binary(max_wait=600):
    """The other half of the team may be relinking build/bin/hpcml: wait until it runs."""
    deadline = time.monotonic() + max_wait
    while True:
        try:
            if os.access(BIN, os.X_OK):
                mtime = os.path.getmtime(BIN)
                proc = subprocess.run([BIN, "--version"], capture_output=True, text=True, timeout=60)
                if proc.returncode == 0 and os.path.getmtime(BIN) == mtime and time.time() - mtime > 3:
                    return
        except (OSError, subprocess.TimeoutExpired):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{BIN} is missing or does not run")
        time.sleep(5)


def run_case(args, ranks, cwd, timeout):
    """(rc or None on a hang, stdout, stderr, seconds): args run as hpcml ARGS, in its own
    session, with the memory limit; a hang is killed with every process of its session."""
    cmd = [BIN] + list(args)
    if ranks is not None:
        cmd = [MPIEXEC, "-n", str(ranks)] + MPIEXEC_PREFLAGS + cmd
    # The limits through util-linux's prlimit, which sets them and execs the command: cases run
    # from threads, where a preexec_fn could deadlock the child before its exec.
    cmd = ["prlimit", f"--as={MEMORY_BYTES}", "--core=0", "--"] + cmd
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        for pid in [proc.pid] + session_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        out, err = proc.communicate()
        rc = None
    for pid in session_pids(proc.pid):  # a rank left behind by a launcher that exited
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return rc, out, err, time.monotonic() - start


# --- the cases --------------------------------------------------------------------------------

class Case:
    def __init__(self, number, target, kind, args, invalid, note, ranks=None):
        self.number, self.target, self.kind, self.args = number, target, kind, list(args)
        self.invalid, self.note, self.ranks = invalid, note, ranks


class Fuzzer:
    """The targets (a valid small invocation of each subcommand) and the mutations of each."""

    def __init__(self, p, scopes):
        self.p, self.scopes = p, scopes
        self.bad_content = [(p[f"{n}_h5"], what) for n, what in (
            ("nan", "all-NaN inputs"), ("narrow", "a calo file with 14 input columns"),
            ("short", "a calo file with one target row fewer than inputs")) if f"{n}_h5" in p]
        self.all_keys = {}
        for keys in scopes.values():
            for k in keys:
                self.all_keys.setdefault(k.name, k)

    # Each target: name -> (weight, scope, base(out) -> args, with -c?, options, path cases(out) -> [...])
    def targets(self):
        p = self.p
        mlp_train = ["--set", "train.epochs=1", "--set", "data.samples=64", "--set", "data.validation_samples=32",
                     "--set", "data.features=8", "--set", "model.hidden=[16]", "--set", "train.batch_size=16",
                     "--set", "run.progress=lines"]
        datagen_common = [("--events-per-file", "count1", True), ("--files", "count1", True), ("--seed", "uint", True)]
        return {
            "info": dict(weight=0.7, scope="run", base=lambda o: ["info"], options=[("--json", "outpath", True)]),
            "config": dict(weight=0.7, scope="run", base=lambda o: ["config"], options=[("--for", "choice", True)]),
            "config-train": dict(weight=2, scope="train", base=lambda o: ["config", "--for", "train"], options=[]),
            "models": dict(weight=0.5, scope="run", base=lambda o: ["models"], options=[("--json", "outpath", True)]),
            "train-mlp": dict(weight=3, scope="train",
                              base=lambda o: ["train"] + mlp_train + ["--set", f"run.dir={o}/run"], options=[]),
            "train-facile": dict(weight=2, scope="train", config=p["facile_yaml"],
                                 base=lambda o: ["train", "-c", p["facile_yaml"], "--set", f"run.dir={o}/run"],
                                 options=[]),
            "eval-facile": dict(weight=1, scope="train", config=p["facile_run"] + "/config.yaml",
                                base=lambda o: ["eval", "-c", p["facile_run"] + "/config.yaml", "--checkpoint",
                                                p["facile_ckpt"], "--set", f"run.dir={o}/run"], options=[]),
            "eval-mlp": dict(weight=1, scope="train", config=p["mlp_run"] + "/config.yaml",
                             base=lambda o: ["eval", "-c", p["mlp_run"] + "/config.yaml", "--checkpoint",
                                             p["mlp_ckpt"], "--set", f"run.dir={o}/run"], options=[]),
            "infer": dict(weight=2, scope="train", config=p["nsf_run"] + "/config.yaml",
                          base=lambda o: ["infer", "-c", p["nsf_run"] + "/config.yaml", "--checkpoint", p["nsf_ckpt"],
                                          "-i", p["gw"], "-o", f"{o}/posterior.h5", "--samples", "50",
                                          "--set", f"run.dir={o}/run"],
                          options=[("--samples", "count1", True), ("--first", "row", True),
                                   ("--events", "count0", True), ("--seed", "uint", True)]),
            "ensemble": dict(weight=1.5, scope="ensemble", config=p["ensemble_yaml"],
                             base=lambda o: ["ensemble", "-c", p["ensemble_yaml"], "--set", f"ensemble.dir={o}/ens"],
                             options=[]),
            "export": dict(weight=1.5, scope="run", base=lambda o: ["export", p["mlp_ckpt"], "-o", f"{o}/params.h5"],
                           options=[]),
            "datagen-tracking": dict(weight=1, scope="run",
                                     base=lambda o: ["datagen", "tracking", "-o", f"{o}/data", "--files", "1",
                                                     "--events-per-file", "4", "--mean-particles", "20"],
                                     options=datagen_common + [("--mean-particles", "float_nonneg", True),
                                                               ("--noise-fraction", "float_nonneg", True),
                                                               ("--b-field", "float_any", False),
                                                               ("--pt-min", "float_nonneg", False)]),
            "datagen-jets": dict(weight=1, scope="run",
                                 base=lambda o: ["datagen", "jets", "-o", f"{o}/data", "--files", "1",
                                                 "--events-per-file", "10"],
                                 options=datagen_common + [("--signal-fraction", "unit", False),
                                                           ("--pt-min", "float_nonneg", False),
                                                           ("--pt-max", "float_pos", False)]),
            "datagen-gw": dict(weight=1, scope="run",
                               base=lambda o: ["datagen", "gw", "-o", f"{o}/data", "--files", "1",
                                               "--events-per-file", "10", "--sample-rate", "512", "--length", "1024"],
                               options=datagen_common + [("--sample-rate", "float_pos", True),
                                                         ("--length", "pow2", True), ("--f-low", "float_nonneg", False)]),
            "datagen-calo": dict(weight=1, scope="run",
                                 base=lambda o: ["datagen", "calo", "-o", f"{o}/data", "--files", "1",
                                                 "--events-per-file", "10"],
                                 options=datagen_common + [("--pileup", "float_nonneg", True),
                                                           ("--cell-noise", "float_nonneg", False)]),
            "datagen-lr": dict(weight=1, scope="run",
                               base=lambda o: ["datagen", "lr", "-o", f"{o}/data", "--files", "1",
                                               "--events-per-file", "10"],
                               options=datagen_common + [("--mu", "float_nonneg", False),
                                                         ("--signal-fraction", "unit", False)]),
            "bench-allreduce": dict(weight=1, scope="run",
                                    base=lambda o: ["bench", "allreduce", "--min-bytes", "4K", "--max-bytes", "16K",
                                                    "--reps", "1", "--target-ms", "1"],
                                    options=[("--min-bytes", "bytes", True), ("--max-bytes", "bytes", True),
                                             ("--reps", "count1", False), ("--target-ms", "float_pos", False),
                                             ("--json", "outpath", True)]),
            "bench-ddp": dict(weight=1, scope="run",
                              base=lambda o: ["bench", "ddp", "--steps", "2", "--warmup", "0", "--batch", "8"],
                              options=[("--model", "choice", True), ("--batch", "count1", True),
                                       ("--steps", "count1", False), ("--warmup", "count0", False),
                                       ("--compression", "choice", True), ("--transport", "choice", True),
                                       ("--overlap", "choice", True), ("--bucket-cap-mb", "float_pos", True),
                                       ("--direct-min-kb", "count0", True), ("--json", "outpath", True)]),
            "bench-io": dict(weight=1, scope="run",
                             base=lambda o: ["bench", "io", "--events", "200", "--files", "1", "--batch", "16",
                                             "--steps", "2", "--reps", "1", "--window", "64", "--chunk-rows", "16",
                                             "--hidden", "8", "--kind", "fixed"],
                             options=[("--kind", "choice", True), ("--events", "count1", True),
                                      ("--files", "count1", True), ("--batch", "count1", True),
                                      ("--hidden", "count1", True), ("--steps", "count1", False),
                                      ("--reps", "count1", False), ("--prefetch", "prefetch", True),
                                      ("--mpi-io", "choice", True), ("--chunk-rows", "count1", True),
                                      ("--window", "count1", True), ("--json", "outpath", True)]),
            "bench-model": dict(weight=1, scope="run",
                                base=lambda o: ["bench", "model", "facile", "--steps", "2", "--warmup", "0", "--reps",
                                                "1", "--batch", "8"],
                                options=[("--batch", "count1", True), ("--steps", "count1", False),
                                         ("--warmup", "count0", False), ("--reps", "count1", False),
                                         ("--threads", "count0", True), ("--json", "outpath", True)]),
            "bench-scaling": dict(weight=1, scope="run",
                                  base=lambda o: ["bench", "scaling", "--out", f"{o}/sweep", "--steps", "2",
                                                  "--interval", "1", "--no-plots", "--set", "data.samples=64",
                                                  "--set", "model.hidden=[4]", "--set", "train.batch_size=8"],
                                  options=[("--mode", "choice", True), ("--global-batch", "count1", False),
                                           ("--steps", "count1", False), ("--interval", "count1", False),
                                           ("--target", "choice", True)]),
            # bench serve checks its rank count first: its options only matter on 2 ranks.
            "bench-serve": dict(weight=1, scope="run", ranks=2,
                                base=lambda o: ["bench", "serve", "--streams", "1", "--seconds", "0.05",
                                                "--warmup-s", "0", "--cases", "facile"],
                                options=[("--streams", "count1", True), ("--seconds", "seconds", False),
                                         ("--warmup-s", "warmup_s", False), ("--cases", "choice", True),
                                         ("--client-progress", "choice", True), ("--json", "outpath", True)]),
            # serve runs on 2 ranks; its config is checked before the rank count.
            "serve": dict(weight=1.5, scope="serve", config=p["serve_yaml"], base_ranks=2,
                          base=lambda o: ["serve", "-c", p["serve_yaml"], "--set",
                                          f"serve.client.metrics={o}/metrics.json"], options=[]),
            "hpo": dict(weight=1, scope="hpo", config=p["hpo_yaml"],
                        base=lambda o: ["hpo", "-c", p["hpo_yaml"], "--set", f"hpo.study_dir={o}/study"], options=[]),
            "hpo-ask": dict(weight=0.5, scope="hpo", config=p["hpo_yaml"],
                            base=lambda o: ["hpo", "ask", "--study", f"{o}/ask", "-c", p["hpo_yaml"]], options=[]),
            # project takes no config: every --set and -c case is an unknown option (one line, exit 2).
            "project-train": dict(weight=0.7, scope="run",
                                  base=lambda o: ["project", "train", "--profile", p["profile_json"], "--system",
                                                  "ib-hdr", "--ranks", "1,2,...,64"],
                                  options=[("--mode", "choice", True), ("--global-batch", "float_pos", True),
                                           ("--compute-per-sample", "float_pos", True),
                                           ("--algorithm", "choice", True), ("--system", "choice", True),
                                           ("--backward-fraction", "unit", True), ("--json", "outpath", True)]),
            "project-fit": dict(weight=0.5, scope="run",
                                base=lambda o: ["project", "fit", "--allreduce", p["allreduce_json"]],
                                options=[("--algorithm", "choice", True), ("--impl", "choice", True),
                                         ("--ranks", "count1", True), ("--min-bytes", "float_pos", True),
                                         ("--max-bytes", "float_pos", True), ("--json", "outpath", True),
                                         ("--system-out", "outpath", True)]),
            "project-service": dict(weight=0.5, scope="run",
                                    base=lambda o: ["project", "service", "--batch-times", "1:0.002,8:0.004",
                                                    "--client-s-per-event", "0.5", "--clients", "1,2"],
                                    options=[("--client-s-per-event", "float_pos", True),
                                             ("--rows-per-event", "float_pos", True),
                                             ("--request-overhead-s", "float_nonneg", True),
                                             ("--servers", "count1", True), ("--clients", "count1", True),
                                             ("--batch-times", "choice", True), ("--json", "outpath", True)]),
            "tracking-train": dict(weight=1.5, scope="tracking", config=p["tracking_yaml"],
                                   base=lambda o: ["tracking", "train", "-c", p["tracking_yaml"], "--set",
                                                   f"run.dir={o}/run"], options=[]),
            "tracking-eval": dict(weight=1, scope="tracking", config=p["tracking_yaml"],
                                  base=lambda o: ["tracking", "eval", "-c", p["tracking_yaml"], "--weights",
                                                  p["tracking_weights"], "--set", f"run.dir={o}/run"],
                                  options=[("--dump-event", "outpath", True)]),
        }

    def option_values(self, flag, kind, size_like):
        """[(value, invalid by construction)] for a command-line option."""
        common = [("abc", True), ("", True), ("nan", True), ("64Q", True)]
        if kind in ("count1", "count0", "row", "prefetch"):
            lo = {"count1": 1, "count0": 0, "row": 0, "prefetch": -1}[kind]
            vals = common + [("1.5", True), ("-1", -1 < lo), ("0", 0 < lo), (str(lo - 1), True), ("-5", True),
                             ("2e3", True)] + [(v, True) for v in INT64_OVERFLOW]
            if kind == "row":  # past the end of the 200-row input
                vals += [("200", True), ("1000000000000", True)]
            elif size_like:
                vals += [(v, False) for v in HUGE_INTS]
            return vals
        if kind == "uint":
            return common + [("-1", True), ("18446744073709551616", True), ("1e3", True), ("-18446744073709551615", True)]
        if kind == "bytes":
            return common + [("-1", True), ("0", True), ("-4K", True), ("4KK", True), ("K", True),
                             ("99999999999999999999G", True), ("9223372036854775807G", True),
                             ("64G", False), ("1T", False), ("1e12", False)]
        if kind in ("float_pos", "float_nonneg", "float_any", "unit", "seconds", "warmup_s"):
            vals = [("abc", True), ("", True), ("nan", True), ("inf", True), ("1e400", True), ("1.2.3", True)]
            if kind == "float_pos":
                vals += [("-5", True), ("0", True), ("-inf", True)]
            if kind == "float_nonneg":
                vals += [("-5", True), ("-0.001", True), ("-inf", True)]
            if kind == "unit":
                vals += [("2", True), ("-0.1", True)]
            if kind == "seconds":
                vals += [("0", True), ("-1", True), ("601", True), ("1e12", True)]
            if kind == "warmup_s":
                vals += [("-1", True), ("61", True), ("1e12", True)]
            if size_like and kind in ("float_pos", "float_nonneg"):
                vals += [("1e12", False), ("1e300", False)]
            return vals
        if kind == "pow2":
            return common + [("1000", True), ("0", True), ("-1", True), ("8", True), ("1099511627776", False),
                             ("4611686018427387904", False)]
        if kind == "choice":
            return [("bogus", True), ("", True), ("NONE", True), ("-1", True), ("nan", True)]
        if kind == "outpath":
            return [(self.p["a_dir"], True), ("", False), (self.p["missing_dir"] + "/sub/x.json", False)]
        raise ValueError(kind)

    def config_file_cases(self, scope):
        p = self.p
        cases = [(p["missing"] + ".yaml", "a missing config"), (p["a_dir"], "a directory as config"),
                 (p["notyaml"], "a config that is not YAML"), (p["binary"], "a binary file as config"),
                 (p["list_yaml"], "a YAML list as config"), (p["dup_run"], "a config with a duplicate key"),
                 (p["dup_top"], "a config with a duplicate section"), (p["gw"], "an HDF5 file as config"),
                 (p["unknown_yaml"], "a config with an unknown key"), (p["tab_yaml"], "a config indented with a tab")]
        if scope == "train":
            cases.append((p["dup_train"], "a train config with a duplicate key"))
        return cases

    def path_cases(self, name, o):
        """[(args, invalid by construction, note, ranks)] for the bad paths of a target."""
        p = self.p
        bad_data = [(p["missing"] + ".h5", "a missing file"), (p["a_dir"], "a directory"),
                    (p["garbage_h5"], "a garbage .h5"), (p["truncated_h5"], "a truncated .h5"),
                    (p["empty"], "an empty file"), (p["plain"], "a text file"),
                    (p["missing"] + "-*.h5", "a pattern matching nothing")]
        bad_ckpt = [(p["garbage_pt"], "a garbage checkpoint"), (p["truncated_pt"], "a truncated checkpoint"),
                    (p["empty"], "an empty checkpoint"), (p["a_dir"], "a directory as checkpoint"),
                    (p["missing"] + ".pt", "a missing checkpoint"), (p["gw"], "an HDF5 data file as checkpoint"),
                    (p["plain"], "a text file as checkpoint")]
        base = self.targets()[name]["base"](o)
        cases = []
        s = lambda key, value: ["--set", f"{key}={value}"]
        if name in ("train-facile", "eval-facile"):
            other = [(p["jets"], "a jets file"), (p["gw"], "a gw file"), (p["showers"], "a calo showers file"),
                     (p["tracking"], "a tracking file")] + self.bad_content
            keys = ["data.validation_files"] + (["data.files"] if name == "train-facile" else [])
            for key in keys:
                for path, what in bad_data + other:
                    # A validation set of NaN inputs gives NaN metrics: not invalid by construction.
                    invalid = not (key == "data.validation_files" and "NaN" in what)
                    cases.append((base + s(key, f"[{path}]"), invalid, f"{key}: {what}", None))
        if name == "train-facile":
            cases += [
                (base + s("run.dir", p["facile_run"]) + s("data.files", f"[{p['gw']}]"), True,
                 "a failing start (gw data for facile) into an existing run.dir", None),
                (["train", "-c", p["facile_run"] + "/config.yaml"], True,
                 "a finished run's config.yaml again, into its own run.dir, without --resume", None),
                (base + s("run.dir", p["facile_run"]) + s("model.name", "deepcalo") + ["--resume"], True,
                 "--resume of an existing run with another model", None),
            ]
        if name == "train-mlp":
            cases += [
                (base + s("run.dir", p["mlp_run"]), True, "a fresh run into an existing run.dir (no --resume)", None),
                (base + s("run.dir", p["nsf_run"]) + ["--resume"], True,
                 "--resume of an nsf-gw run with an mlp config", None),
                (base + s("run.dir", p["facile_run"]) + ["--resume"], True,
                 "--resume of a facile run with an mlp config", None),
                (base + s("run.dir", p["mlp_run"]) + s("data.features", "9") + ["--resume"], True,
                 "--resume with another input width", None),
                (base + s("run.dir", p["plain"]), True, "run.dir is a regular file", None),
                (base + s("run.dir", p["gw"]), True, "run.dir is an HDF5 input file", None),
                (base + s("model.name", "torchscript") + s("model.torchscript", p["garbage_pt"]), True,
                 "model.torchscript: a garbage file", None),
                (base + s("model.name", "torchscript") + s("model.torchscript", p["mlp_ckpt"]), True,
                 "model.torchscript: an hpcml checkpoint", None),
                (base + s("model.name", "torchscript") + s("model.torchscript", p["missing"] + ".pt"), True,
                 "model.torchscript: a missing file", None),
            ]
        if name in ("eval-facile", "eval-mlp"):
            ckpts = bad_ckpt + [(p["nsf_ckpt"], "an nsf-gw checkpoint")]
            ckpts.append((p["mlp_ckpt"], "an mlp checkpoint") if name == "eval-facile"
                         else (p["facile_ckpt"], "a facile checkpoint"))
            i = base.index("--checkpoint")
            for path, what in ckpts:
                cases.append((base[:i + 1] + [path] + base[i + 2:], True, f"--checkpoint: {what}", None))
        if name == "infer":
            i, j, k = base.index("-i"), base.index("-o"), base.index("--checkpoint")
            with_input = lambda path: base[:i + 1] + [path] + base[i + 2:]
            with_output = lambda path: base[:j + 1] + [path] + base[j + 2:]
            for path, what in bad_data + [(p["calo"], "a calo channels file"), (p["jets"], "a jets file"),
                                          (p["tracking"], "a tracking file")]:
                cases.append((with_input(path), True, f"-i: {what}", None))
            cases += [(with_output(p["gw"]), True, "-o is the input strain file", None),
                      (with_output(p["nsf_ckpt"]), True, "-o is the checkpoint", None),
                      (with_output(p["nsf_run"] + "/config.yaml"), True, "-o is the config", None),
                      (with_output(p["a_dir"]), True, "-o is a directory", None),
                      (with_output(""), True, "-o is empty", None)]
            for path, what in bad_ckpt + [(p["mlp_ckpt"], "an mlp checkpoint")]:
                cases.append((base[:k + 1] + [path] + base[k + 2:], True, f"--checkpoint: {what}", None))
            cases.append((["infer", "-c", p["mlp_run"] + "/config.yaml", "-i", p["gw"], "-o", f"{o}/x.h5"], True,
                          "an mlp run's config", None))
        if name == "ensemble":
            cases += [(base + s("ensemble.dir", p["plain"]), True, "ensemble.dir is a regular file", None),
                      (base + s("ensemble.dir", p["mlp_run"]), True, "ensemble.dir is a training run", None),
                      (base + s("ensemble.dir", ""), True, "ensemble.dir is empty", None),
                      (base + s("ensemble.base", p["missing"] + ".yaml"), True, "ensemble.base: a missing file", None),
                      (base + s("ensemble.base", p["gw"]), True, "ensemble.base: an HDF5 file", None),
                      (base + s("ensemble.variations", "[a, b]"), True, "ensemble.variations: a list", None),
                      (base + s("ensemble.variations.x", "{run.dir: " + p["mlp_run"] + "}"), True,
                       "a variation setting run.dir", None)]
        if name == "export":
            for path, what in bad_ckpt:
                cases.append((["export", path, "-o", f"{o}/params.h5"], True, f"checkpoint: {what}", None))
            cases += [(["export", p["mlp_ckpt"], "-o", p["a_dir"]], True, "-o is an existing directory", None),
                      (["export", p["mlp_ckpt"], "-o", p["mlp_ckpt"]], True, "-o is the checkpoint itself", None),
                      (["export", p["mlp_ckpt"], "-o", ""], True, "-o is empty", None),
                      (["export", p["mlp_ckpt"], "-o", p["mlp_ckpt"], "-c", p["run_yaml"]], True,
                       "-o is the checkpoint, with a config", None),
                      (["export", p["mlp_ckpt"], "-o", p["run_yaml"], "-c", p["run_yaml"]], True,
                       "-o is the config", None)]
        if name.startswith("datagen-"):
            i = base.index("-o")
            for path, what in [(p["plain"], "an existing text file"), (p["calo"], "an existing data file"),
                               ("", "empty"), (p["gw"] + "/sub", "below a file")]:
                cases.append((base[:i + 1] + [path] + base[i + 2:], True, f"-o: {what}", None))
        if name == "bench-io":
            for path, what in bad_data:
                cases.append((base + ["--input", path], True, f"--input: {what}", None))
            cases += [(base + ["--generate", p["plain"]], True, "--generate: an existing text file", None),
                      (base + ["--generate", p["gw"]], True, "--generate: an existing data file", None)]
        if name == "bench-model":
            cases += [(base + ["--python", p["missing"]], True, "--python: a missing program", None),
                      (base + ["--python", p["plain"]], True, "--python: a text file", None),
                      (base + ["--twin-script", p["missing"] + ".py"], True, "--twin-script: a missing file", None),
                      (["bench", "model", "bogus"] + base[3:], True, "an unknown model", None)]
        if name == "serve":
            for path, what in [(p["missing"], "missing"), (p["a_dir"], "a directory without models"),
                               (p["plain"], "a text file"), ("", "empty")]:
                cases.append((base + s("serve.repository", path), True, f"serve.repository: {what}", 2))
            for path, what in bad_data + [(p["gw"], "a gw file"), (p["jets"], "a jets file")] + self.bad_content[1:]:
                cases.append((base + s("serve.client.files", f"[{path}]"), True, f"serve.client.files: {what}", 2))
            cases += [(base + s("serve.client.model", "bogus"), True, "serve.client.model: not in the repository", 2),
                      (base + s("serve.client.metrics", p["a_dir"]), True, "serve.client.metrics: a directory", 2),
                      (base + s("serve.client.metrics", p["calo"]), True, "serve.client.metrics: an input file", 2),
                      (base + s("serve.servers", "2"), True, "more servers than the ranks allow", 2),
                      (base + s("serve.servers", "1000000"), True, "a million servers", 2)]
        if name == "hpo":
            cases += [(base + s("hpo.base", p["missing"] + ".yaml"), True, "hpo.base: a missing file", None),
                      (base + s("hpo.base", p["a_dir"]), True, "hpo.base: a directory", None),
                      (base + s("hpo.base", p["gw"]), True, "hpo.base: an HDF5 file", None),
                      (base + s("hpo.study_dir", p["plain"]), True, "hpo.study_dir: a file", None)]
        if name == "tracking-train":
            for key in ("data.files", "data.validation_files"):
                for path, what in bad_data + [(p["jets"], "a jets file"), (p["calo"], "a calo file")]:
                    cases.append((base + s(key, f"[{path}]"), True, f"{key}: {what}", None))
            cases += [(base + s("run.dir", p["tracking_run"]) + s("data.files", f"[{p['jets']}]"), True,
                       "a failing start (jets data) into an existing tracking run.dir", None),
                      (base + s("run.dir", p["plain"]), True, "run.dir is a regular file", None),
                      (base + s("run.dir", p["tracking_run"]), False, "into an existing tracking run.dir", None)]
        if name == "tracking-eval":
            i = base.index("--weights")
            for path, what in bad_ckpt + [(p["calo"], "a calo file"), (p["mlp_ckpt"], "an hpcml checkpoint")]:
                cases.append((base[:i + 1] + [path] + base[i + 2:], True, f"--weights: {what}", None))
            for path, what in bad_data + [(p["jets"], "a jets file")]:
                cases.append((base + s("data.validation_files", f"[{path}]"), True,
                              f"data.validation_files: {what}", None))
            cases += [(base + ["--dump-event", p["tracking_weights"]], True, "--dump-event is the weights file", None),
                      (base + ["--dump-event", p["a_dir"]], True, "--dump-event is a directory", None)]
        if name in ("info", "models", "bench-allreduce", "bench-ddp"):
            flag = "--json"
            cases += [(base + [flag, p["a_dir"]], True, f"{flag} is a directory", None),
                      (base + [flag, p["gw"] + "/sub.json"], True, f"{flag} is below a file", None)]
        return cases

    UNKNOWN_COMMANDS = [
        (["trian"], "a typo of a subcommand"), (["datagen", "muons", "-o", "{o}/x"], "an unknown datagen domain"),
        ([], "no subcommand"), (["bench"], "bench without a benchmark"), (["bench", "foo"], "an unknown benchmark"),
        (["tracking", "foo"], "an unknown tracking subcommand"),
        (["project"], "project without a mode"), (["project", "train"], "project train without --profile"), (["TRAIN"], "a subcommand in capitals"),
        (["--bogus"], "an unknown global option"), (["info", "extra"], "an extra positional"),
        (["export"], "export without a checkpoint"), (["infer"], "infer without -i and -o"),
        (["datagen", "jets"], "datagen without -o"), (["tracking", "reference", "--bogus"], "an unknown option"),
        (["train", "--resum"], "a typo of an option"), (["config", "--for", "serve"], "config --for an unknown command"),
        (["models", "--json"], "an option without its value"), (["info", "--set"], "--set without a value"),
        (["info", "--set", "runtime.threads"], "--set without '='"), (["info", "--set", "=1"], "--set without a key"),
        (["info", "--set", "runtime..threads=1"], "--set with an empty key part"),
        (["info", "--set", ".=1"], "--set with the key '.'"), (["-"], "a lone dash"),
        (["bench", "allreduce", "--min-bytes", "1M", "--max-bytes", "4K"], "--min-bytes above --max-bytes"),
        (["datagen", "jets", "-o", "{o}/x", "--pt-min", "700", "--pt-max", "600"], "--pt-min above --pt-max"),
        (["serve", "--reference", "extra"], "an extra positional"),
    ]

    def generate(self, number):
        rng = random.Random(f"hpcml-fuzz:{SEED}:{number}")
        targets = self.targets()
        names = sorted(targets)
        if rng.random() < 0.06:
            args, note = rng.choice(self.UNKNOWN_COMMANDS)
            return Case(number, "cli", "unknown command", args, True, note)
        name = rng.choices(names, weights=[targets[n]["weight"] for n in names])[0]
        t = targets[name]
        o = "{o}"
        base = t["base"](o)
        ranks = t.get("ranks")
        if ranks is None and name not in ("config", "config-train") and rng.random() < 0.06:
            ranks = 2
        kinds = ["key value"] * 5 + ["unknown key", "config file"]
        if t["options"]:
            kinds += ["option"] * 4
        if self.path_cases(name, o):
            kinds += ["path"] * 3
        kind = rng.choice(kinds)
        if kind == "key value":
            in_scope = {k.name for k in self.scopes[t["scope"]]}
            if rng.random() < 0.8:
                key = rng.choice(self.scopes[t["scope"]])
            else:
                key = self.all_keys[rng.choice(sorted(self.all_keys))]
                key = next((k for k in self.scopes[t["scope"]] if k.name == key.name), key)  # its type here
            value, invalid = rng.choice(bad_values(key, key.name in in_scope))
            where = "" if key.name in in_scope else " (a key of another command)"
            shown = value if len(value) < 60 else value[:20] + f"...({len(value)} chars)"
            return Case(number, name, kind, base + ["--set", f"{key.name}={value}"], invalid,
                        f"{key.name}={shown}{where}", ranks)
        if kind == "unknown key":
            key = rng.choice(self.scopes[t["scope"]])
            parts = key.name.split(".")
            typo = rng.choice([
                lambda: key.name + "x", lambda: key.name[:-1] if len(parts[-1]) > 1 else key.name + "_",
                lambda: key.name + ".sub", lambda: "bogus." + key.name, lambda: key.name.upper(),
                lambda: ".".join(parts[:-1] + ["bogus"]), lambda: "bogus", lambda: key.name.replace(".", "_"),
                lambda: key.name + ".", lambda: "." + key.name])()
            if typo in {k.name for k in self.scopes[t["scope"]]}:
                typo = typo + "zz"
            value = key.default if key.default not in ("", "[]", "{}") else "1"
            return Case(number, name, kind, base + ["--set", f"{typo}={value}"], True, f"unknown key {typo}", ranks)
        if kind == "config file":
            path, note = rng.choice(self.config_file_cases(t["scope"]))
            args = list(base)
            if "-c" in args:
                args[args.index("-c") + 1] = path
            else:
                args += ["-c", path]
            return Case(number, name, kind, args, True, note, ranks)
        if kind == "option":
            flag, okind, size_like = rng.choice(t["options"])
            value, invalid = rng.choice(self.option_values(flag, okind, size_like))
            args = list(base)
            if flag in args:
                args[args.index(flag) + 1] = value
            else:
                args += [flag, value]
            shown = value if len(value) < 60 else value[:20] + "..."
            return Case(number, name, kind, args, invalid, f"{flag} {shown!r}", ranks)
        args, invalid, note, path_ranks = rng.choice(self.path_cases(name, o))
        return Case(number, name, kind, args, invalid, note, path_ranks or ranks)


# --- the test ---------------------------------------------------------------------------------

class CliFuzzTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        wait_for_binary()
        cls.tmp = tempfile.TemporaryDirectory(prefix="hpcml-fuzz-")
        cls.old_cwd = os.getcwd()
        os.chdir(cls.tmp.name)  # a relative default (runs/train) never lands in the source tree
        cls.started = time.monotonic()
        root = cls.tmp.name
        inputs = os.path.join(root, "inputs")
        data, bad, configs, runs = (os.path.join(inputs, d) for d in ("data", "bad", "configs", "runs"))
        for d in (data, bad, configs, runs, os.path.join(root, "out")):
            os.makedirs(d)

        def ok(args, ranks=None, timeout=300):
            for attempt in range(3):
                try:
                    rc, out, err, _ = run(args, ranks=ranks, timeout=timeout)
                except OSError:  # being relinked
                    rc, out, err = 126, "", ""
                if rc not in (126, 127):
                    break
                wait_for_binary()
            assert rc == 0, f"setup: {args} failed with {rc}: {err[-2000:]}"
            return out

        # Small data, one file per domain.
        for domain, extra in (("calo", []), ("jets", []), ("gw", ["--sample-rate", "512", "--length", "1024"]),
                              ("tracking", ["--mean-particles", "40"])):
            events = "6" if domain == "tracking" else "200"
            ok(["datagen", domain, "-o", os.path.join(data, domain), "--files", "1", "--events-per-file", events]
               + extra)
        p = {"calo": f"{data}/calo/calo-channels-00000.h5", "showers": f"{data}/calo/calo-showers-00000.h5",
             "jets": f"{data}/jets/jets-00000.h5", "gw": f"{data}/gw/gw-00000.h5",
             "tracking": f"{data}/tracking/tracking-00000.h5"}

        # Configs.
        def write(path, text, mode="w"):
            with open(path, mode) as f:
                f.write(text)
            return path

        p["facile_yaml"] = write(f"{configs}/facile.yaml", f"""model:
  name: facile
data:
  name: hdf5
  files: [{p['calo']}]
  validation_files: [{p['calo']}]
  chunk_rows: 50
  window: 100
train:
  epochs: 1
  batch_size: 32
  loss: relative_mse
run:
  dir: {runs}/facile
  progress: lines
""")
        p["ensemble_yaml"] = write(f"{configs}/ensemble.yaml", f"""model: {{name: mlp, hidden: [8]}}
data: {{samples: 64, validation_samples: 32, features: 8}}
train: {{epochs: 1, batch_size: 16}}
run: {{progress: lines}}
ensemble: {{members: 1, dir: {runs}/ensemble-unused, variations: {{nominal: {{}}, small: {{model.hidden: [4]}}}}}}
""")
        p["tracking_yaml"] = write(f"{configs}/tracking.yaml", f"""data:
  files: ["{data}/tracking/tracking-*.h5"]
  validation_files: ["{data}/tracking/tracking-*.h5"]
  baseline_tune_events: 4
embedding: {{steps: 2, events_per_step: 2, dim: 4, hidden: [16], random_pairs: 200, radius: 0.6, max_neighbours: 8}}
filter: {{steps: 2, events_per_step: 2, hidden: [16], threshold: 0.2}}
gnn: {{steps: 2, events_per_step: 2, hidden: 8, iterations: 1}}
run: {{dir: {runs}/tracking, log_every: 1}}
""")
        with open(os.path.join(SOURCE_DIR, "configs", "serve-facile.yaml")) as f:
            serve = f.read()
        serve = serve.replace("repository: configs/serve-models",
                              "repository: " + os.path.join(SOURCE_DIR, "configs", "serve-models"))
        serve = serve.replace("[data/calo/calo-channels-*.h5]", f"[{data}/calo/calo-channels-*.h5]")
        serve = serve.replace("metrics: serve-metrics.json", f"metrics: {root}/out/serve-metrics.json")
        serve = serve.replace("cpu_work_us: 50", "cpu_work_us: 10")
        assert os.path.join(SOURCE_DIR, "configs", "serve-models") in serve and data in serve, serve
        p["serve_yaml"] = write(f"{configs}/serve-facile.yaml", serve)
        p["run_yaml"] = write(f"{configs}/run.yaml", "runtime:\n  threads: 1\nlog:\n  level: info\n")
        p["profile_json"] = write(f"{configs}/profile.json", json.dumps(
            {"model": "mlp", "batch_per_rank": 16, "compute_per_sample_s": 1e-4, "optimizer_per_step_s": 1e-4,
             "data_per_sample_s": 1e-6, "parameter_bytes": [4096, 64, 2048, 32]}))
        p["allreduce_json"] = write(f"{configs}/allreduce.json", json.dumps(
            [{"impl": "mpi", "path": "blocking", "bytes": b, "latency_us": 5 + b * 2e-4, "ranks": 2}
             for b in (4096, 65536, 1048576)]))
        p["hpo_yaml"] = write(f"{configs}/hpo.yaml", """runtime: {threads: 1}
data: {name: synthetic, samples: 64, validation_samples: 32, features: 8}
model: {name: mlp, hidden: [16]}
train: {epochs: 1, batch_size: 16}
hpo:
  space: {optimizer.lr: {type: loguniform, low: 0.001, high: 0.1}}
  sampler: random
  trials: 1
  plots: false
""")

        # Bad files.
        rng = random.Random(SEED)
        garbage = bytes(rng.randrange(256) for _ in range(4096))
        p["garbage_h5"] = write(f"{bad}/garbage.h5", garbage, "wb")
        p["garbage_pt"] = write(f"{bad}/garbage.pt", garbage, "wb")
        p["binary"] = write(f"{bad}/binary.yaml", garbage, "wb")
        with open(p["gw"], "rb") as f:
            p["truncated_h5"] = write(f"{bad}/truncated.h5", f.read()[:os.path.getsize(p["gw"]) // 2], "wb")
        p["empty"] = write(f"{bad}/empty.h5", "")
        p["plain"] = write(f"{bad}/plain.txt", "hello\n")
        p["notyaml"] = write(f"{bad}/notyaml.yaml", "runtime: {threads: 2\n")
        p["list_yaml"] = write(f"{bad}/list.yaml", "- runtime\n- log\n")
        p["dup_run"] = write(f"{bad}/dup-run.yaml", "log:\n  level: info\n  level: debug\n")
        p["dup_top"] = write(f"{bad}/dup-top.yaml", "log:\n  level: info\nlog:\n  all_ranks: true\n")
        p["dup_train"] = write(f"{bad}/dup-train.yaml", "train:\n  epochs: 1\n  batch_size: 16\n  epochs: 3\n")
        p["unknown_yaml"] = write(f"{bad}/unknown.yaml", "runtime:\n  thread: 2\n")
        p["tab_yaml"] = write(f"{bad}/tab.yaml", "runtime:\n\tthreads: 2\n")
        p["a_dir"] = os.path.join(bad, "a_dir")
        os.makedirs(p["a_dir"])
        write(os.path.join(p["a_dir"], "keep.txt"), "keep me\n")
        p["missing"] = os.path.join(root, "missing", "nothing")
        # Calo channel files that are valid HDF5 with bad content: all-NaN inputs, 14 input
        # columns where the model takes 15, and a target one row short of the inputs.
        try:
            import h5py
            import numpy as np
        except ImportError:  # run by hand with a Python without h5py: fewer cases
            print("note: h5py missing, no NaN / wrong-shape data cases", file=sys.stderr)
        else:
            for name, edit in (("nan", lambda x, y: (np.full_like(x, np.nan), y)),
                               ("narrow", lambda x, y: (x[:, :14], y)), ("short", lambda x, y: (x, y[:-1]))):
                path = p[f"{name}_h5"] = f"{bad}/calo-{name}.h5"
                shutil.copyfile(p["calo"], path)
                with h5py.File(path, "r+") as f:
                    x, y = edit(f["inputs"][()], f["energy"][()])
                    for key, value in (("inputs", x), ("energy", y)):
                        attrs = dict(f[key].attrs)
                        del f[key]
                        f[key] = value
                        f[key].attrs.update(attrs)
        p["missing_dir"] = os.path.join(root, "missing")

        # Finished runs: mlp (synthetic), facile (hdf5), a tiny nsf-gw, a tiny tracking run.
        ok(["train", "--set", "train.epochs=1", "--set", "data.samples=64", "--set", "data.validation_samples=32",
            "--set", "data.features=8", "--set", "model.hidden=[16]", "--set", "train.batch_size=16",
            "--set", "run.progress=lines", "--set", f"run.dir={runs}/mlp"])
        ok(["train", "-c", p["facile_yaml"]])
        ok(["train", "--set", "model.name=nsf-gw", "--set", "data.name=hdf5", "--set", f"data.files=[{p['gw']}]",
            "--set", f"data.validation_files=[{p['gw']}]", "--set", "data.chunk_rows=50", "--set", "data.window=200",
            "--set", "optimizer.name=adam", "--set", "optimizer.lr=0.001", "--set", "run.progress=lines",
            "--set", f"run.dir={runs}/nsf", "--set", "model.flow.basis=16", "--set", "model.flow.hidden=32",
            "--set", "model.flow.steps=2", "--set", "model.flow.embedding_hidden=[64]",
            "--set", "model.flow.context=16", "--set", "model.flow.svd_waveforms=100",
            "--set", "model.flow.posterior_samples=20", "--set", "train.max_steps=2", "--set", "train.batch_size=16"])
        ok(["tracking", "train", "-c", p["tracking_yaml"], "--set", "runtime.threads=1"])
        for name in ("mlp", "facile", "nsf"):
            p[f"{name}_run"] = f"{runs}/{name}"
            ckpts = sorted(glob.glob(f"{runs}/{name}/checkpoints/*.pt"))
            assert ckpts, f"setup: no checkpoint in {runs}/{name}"
            p[f"{name}_ckpt"] = ckpts[-1]
        with open(p["mlp_ckpt"], "rb") as f:
            p["truncated_pt"] = write(f"{bad}/truncated.pt", f.read()[:os.path.getsize(p["mlp_ckpt"]) // 2], "wb")
        p["tracking_run"] = f"{runs}/tracking"
        p["tracking_weights"] = f"{runs}/tracking/weights.h5"
        assert os.path.exists(p["tracking_weights"])

        # The config keys, from the references.
        train_ref = parse_reference(ok(["config", "--for", "train", "--reference"]))
        run_keys = [k for title, keys in train_ref.items() if title.startswith("Every") for k in keys]
        train_keys = [k for title, keys in train_ref.items() if "ensemble" not in title for k in keys]
        ensemble_keys = [k for title, keys in train_ref.items() if "ensemble" in title for k in keys]
        serve_keys = [k for keys in parse_reference(ok(["serve", "--reference"])).values() for k in keys]
        tracking_keys = [k for keys in parse_reference(ok(["tracking", "reference"])).values() for k in keys]
        plain_ref = [k.name for keys in parse_reference(ok(["config", "--reference"])).values() for k in keys]
        assert run_keys and len(train_keys) > len(run_keys) and serve_keys and tracking_keys, "no keys parsed"
        assert ensemble_keys, "no ensemble keys parsed"
        assert set(plain_ref) <= {k.name for k in train_keys + ensemble_keys}, \
            "config --reference has keys --for train lacks"
        hpo_keys = [k for keys in parse_reference(ok(["hpo", "--reference"])).values() for k in keys]
        assert hpo_keys, "no hpo keys parsed"
        cls.scopes = {"run": run_keys, "train": train_keys, "ensemble": train_keys + ensemble_keys,
                      "serve": run_keys + serve_keys, "hpo": train_keys + hpo_keys,
                      "tracking": tracking_keys}
        cls.p, cls.inputs = p, inputs
        cls.pristine = os.path.join(root, "pristine")
        shutil.copytree(inputs, cls.pristine, symlinks=True)
        cls.digest = tree_digest(inputs)
        cls.fuzzer = Fuzzer(p, cls.scopes)
        cls.setup_seconds = time.monotonic() - cls.started

    @classmethod
    def tearDownClass(cls):
        os.chdir(cls.old_cwd)
        cls.tmp.cleanup()

    def restore_inputs(self):
        shutil.rmtree(self.inputs, ignore_errors=True)
        shutil.copytree(self.pristine, self.inputs, symlinks=True)

    def check(self, case, rc, out, err, seconds):
        """The problems of one finished case ([] when it behaved)."""
        problems = []
        if rc is None:
            problems.append(f"hang: no exit within {TIMEOUT_S:.0f} s")
        elif rc < 0:
            problems.append(f"killed by signal {-rc} ({signal.Signals(-rc).name})")
        elif rc not in DOCUMENTED_EXIT_CODES:
            problems.append(f"undocumented exit code {rc}")
        for marker in TRACE_MARKERS:
            if marker in out or marker in err:
                problems.append(f"raw trace ({marker.strip()!r})")
                break
        if rc == 0 and case.invalid:
            problems.append("exit 0 for an invalid invocation")
        if rc == 2:
            lines = [l for l in without_mpirun_notes(err) if not LOG_LINE.match(l)]
            if len(lines) != 1:
                problems.append(f"config-time error (exit 2) on {len(lines)} lines of stderr, not 1")
        return problems

    def run_in_own_dir(self, case, index):
        """(args, rc, out, err, seconds) of one case, run in a fresh output folder of its own."""
        out_dir = os.path.join(self.tmp.name, "out", f"case-{case.number}-{index}")
        shutil.rmtree(out_dir, ignore_errors=True)
        os.makedirs(out_dir)
        args = [a.replace("{o}", out_dir) for a in case.args]
        for attempt in range(3):
            if not os.access(BIN, os.X_OK):
                wait_for_binary()
            try:
                rc, out, err, seconds = run_case(args, case.ranks, out_dir, TIMEOUT_S)
            except OSError:  # being relinked
                rc, out, err, seconds = 126, "", "", 0.0
            # 126/127: the binary was being relinked under us; wait and run the case again.
            if rc not in (126, 127):
                break
            wait_for_binary()
        shutil.rmtree(out_dir, ignore_errors=True)
        return args, rc, out, err, seconds

    def input_changes(self):
        """What the cases run since the last call changed in the inputs ([] if nothing); the
        inputs are restored."""
        changes = digest_changes(self.digest, tree_digest(self.inputs))
        if changes:
            self.restore_inputs()
            assert tree_digest(self.inputs) == self.digest
        return changes

    def run_batch(self, pool, batch, first_index):
        """[(case, args, rc, out, err, seconds, input changes)] of cases run JOBS at a time. A
        batch that changed the inputs runs again a case at a time, so the change names its case."""
        results = list(pool.map(lambda k: self.run_in_own_dir(batch[k], first_index + k), range(len(batch))))
        changes = self.input_changes()
        if not changes:
            return [(case,) + result + ([],) for case, result in zip(batch, results)]
        if len(batch) == 1:
            return [(batch[0],) + results[0] + (changes,)]
        alone = []
        for k, case in enumerate(batch):
            result = self.run_in_own_dir(case, first_index + k)
            alone.append((case,) + result + (self.input_changes(),))
        return alone

    def test_fuzz_the_command_line(self):
        fuzzer = self.fuzzer
        numbers = ONLY or list(range(CASES))
        bases = [] if ONLY else sorted(fuzzer.targets())
        failures, ran, skipped = [], 0, 0
        start = time.monotonic()
        # First every target's base invocation, which must succeed (or the cases built on it
        # would say nothing), then the generated cases.
        targets = fuzzer.targets()
        plan = [Case(-1, name, "base", targets[name]["base"]("{o}"), False, "the valid base invocation",
                     targets[name].get("base_ranks", targets[name].get("ranks"))) for name in bases]
        plan += [fuzzer.generate(n) for n in numbers]
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=JOBS)
        self.addCleanup(pool.shutdown)
        for index in range(0, len(plan), JOBS):
            if time.monotonic() - self.started > BUDGET_S:
                skipped = len(plan) - index
                break
            for case, args, rc, out, err, seconds, changes in self.run_batch(pool, plan[index:index + JOBS], index):
                ran += 1
                problems = self.check(case, rc, out, err, seconds)
                if case.kind == "base" and rc != 0:
                    problems.append(f"the base invocation failed (exit {rc})")
                if changes:
                    problems.append("changed the inputs: " + ", ".join(changes[:6]) + (" ..." if len(changes) > 6 else ""))
                shown = " ".join(("''" if a == "" else a if len(a) < 80 else a[:40] + "...") for a in args)
                shown = shown.replace(self.tmp.name, "$TMP")
                prefix = f"mpiexec -n {case.ranks} " if case.ranks else ""
                if VERBOSE:
                    print(f"[{case.number}] {case.target} {case.kind}: {case.note}: rc={rc} {seconds:.1f}s "
                          f"{'FAIL ' + '; '.join(problems) if problems else 'ok'}", file=sys.stderr, flush=True)
                if problems:
                    first = (err.strip() or out.strip())[:200].replace("\n", " | ").replace(self.tmp.name, "$TMP")
                    failures.append(f"case {case.number} [{case.target} / {case.kind}: {case.note}]: {'; '.join(problems)}"
                                    f"\n    rc={rc} {seconds:.1f} s: {prefix}hpcml {shown}\n    stderr: {first}")
        elapsed = time.monotonic() - start
        summary = (f"hpcml CLI fuzzer: seed {SEED}, {ran} invocations ({len(bases)} bases + "
                   f"{ran - len(bases) if ran > len(bases) else 0} generated) in {elapsed:.0f} s "
                   f"(+ {self.setup_seconds:.0f} s setup); {len(failures)} failed")
        if skipped:
            summary += f"; {skipped} not run: the time budget of {BUDGET_S:.0f} s ran out"
        print("\n" + summary, file=sys.stderr, flush=True)
        if failures:
            classes = {}
            for f in failures:
                head = f.split("\n")[0]
                target = re.search(r"\[([^ ]+) / ([^:]+):", head)
                what = re.sub(r" \(.*", "", head.split("]: ", 1)[1])
                classes.setdefault(f"{target.group(1)} / {target.group(2)} -> {what}", []).append(head.split(" ")[1])
            listing = "\n".join(f"  {k}: cases {', '.join(v[:8])}{' ...' if len(v) > 8 else ''}"
                                for k, v in sorted(classes.items()))
            shown = failures[:40]
            more = f"\n... and {len(failures) - 40} more" if len(failures) > 40 else ""
            self.fail(f"{summary}\nby target and problem:\n{listing}\n\n" + "\n".join(shown) + more
                      + "\n(rerun one case: HPCML_FUZZ_SEED=%d HPCML_FUZZ_ONLY=<case> HPCML_FUZZ_VERBOSE=1)" % SEED)


if __name__ == "__main__":
    unittest.main()
