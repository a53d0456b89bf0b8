"""What users see stays the same unless changed on purpose: every subcommand's --help,
the config references, the keys of summary.json and of a metrics line, and the one-line
errors of bad configs, compared with the goldens in tests/cli/golden/.

A deliberate change: rerun with HPCML_UPDATE_GOLDENS=1, check the diff of
tests/cli/golden/, and say in the commit which change it records."""
import json
import os
import re
import tempfile
import unittest

from support import SOURCE_DIR, run

GOLDEN_DIR = os.path.join(SOURCE_DIR, "tests", "cli", "golden")
UPDATE = os.environ.get("HPCML_UPDATE_GOLDENS") == "1"

# Every subcommand, nested ones included.
HELP = [[], ["info"], ["config"], ["train"], ["eval"], ["infer"], ["export"], ["models"], ["serve"],
        ["datagen"], ["datagen", "tracking"], ["datagen", "jets"], ["datagen", "gw"], ["datagen", "calo"], ["datagen", "lr"],
        ["bench"], ["bench", "allreduce"], ["bench", "ddp"], ["bench", "io"], ["bench", "model"], ["bench", "pack"],
        ["bench", "serve"], ["hpo"], ["hpo", "ask"], ["hpo", "tell"], ["tracking"], ["tracking", "train"], ["tracking", "eval"], ["tracking", "reference"],
        ["project"], ["project", "train"], ["project", "fit"], ["project", "service"], ["project", "systems"]]

REFERENCES = {"config-reference": ["config", "--reference"], "serve-reference": ["serve", "--reference"],
              "tracking-reference": ["tracking", "reference"], "hpo-reference": ["hpo", "--reference"]}

# Bad configs and command lines: the one line each gets (paths made relative to the temp dir).
ERRORS = [
    ["config", "--set", "runtime.thread=2"],
    ["config", "--set", "runtime.threads=two"],
    ["config", "--set", "runtime.backend=gloo"],
    ["config", "--set", "runtime.threads"],
    ["config", "--for", "train", "--set", "model.hidden=[64, a]"],
    ["config", "--for", "train", "--set", "model.name=resnet"],
    ["config", "--for", "train", "--set", "optimizer.lr=-1"],
    ["config", "--for", "train", "--set", "data.features=0"],
    ["config", "--for", "train", "--set", "train.on_nonfinite=ignore"],
    ["train", "--set", "train.gradient_accumulation=3", "--set", "train.batch_size=64", "--set", "run.dir=@TMP@/r"],
    ["train", "--set", "model.name=deepcalo", "--set", "train.pack=2", "--set", "run.dir=@TMP@/r"],
    ["train", "--set", "train.pack=2", "--set", "train.clip_grad_norm=1", "--set", "run.dir=@TMP@/r"],
    ["bench", "allreduce", "--max-bytes", "lots"],
    ["bench", "ddp", "--transport", "carrier-pigeon"],
    ["bench", "ddp", "--bucket-cap-mb", "0"],
    ["datagen", "jets", "-o", "@TMP@/j", "--events-per-file", "0"],
    ["trian"],
    ["hpo"],
    ["hpo", "tell", "--study", "@TMP@/s", "--trial", "0"],
    ["project", "train", "--profile", "@TMP@/missing.json"],
    ["project", "service", "--batch-times", "1:0.002,8", "--client-s-per-event", "1"],
]


def flat_keys(value, prefix=""):
    """Sorted dotted keys of a JSON object (lists: the keys of their first element)."""
    if isinstance(value, dict):
        keys = []
        for k, v in value.items():
            keys.append(prefix + k)
            keys += flat_keys(v, prefix + k + ".")
        return keys
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return flat_keys(value[0], prefix + "[]." if prefix else "[].")
    return []


class GoldenTest(unittest.TestCase):
    def compare(self, name, text):
        path = os.path.join(GOLDEN_DIR, name + ".txt")
        if UPDATE:
            os.makedirs(GOLDEN_DIR, exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
            return
        self.assertTrue(os.path.exists(path), f"no golden {path}: record it with HPCML_UPDATE_GOLDENS=1")
        with open(path) as f:
            want = f.read()
        self.assertEqual(text, want, f"{name} differs from {path}; if the change is deliberate, rerun with "
                                     "HPCML_UPDATE_GOLDENS=1 and say so in the commit")

    def test_help_of_every_subcommand(self):
        out_all = []
        for sub in HELP:
            rc, out, err, _ = run(sub + ["--help"])
            self.assertEqual(rc, 0, f"{sub}: {err}")
            out_all.append("$ hpcml " + " ".join(sub + ["--help"]) + "\n" + out)
        # Defaults that are paths in the source tree (bench model's twin script) differ by checkout.
        self.compare("help", "\n".join(out_all).replace(SOURCE_DIR, "@SRC@"))

    def test_config_references(self):
        for name, args in REFERENCES.items():
            rc, out, err, _ = run(args)
            self.assertEqual(rc, 0, err)
            self.compare(name, out)

    def test_keys_of_summary_and_metrics(self):
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = os.path.join(tmp, "run")
            rc, _, err, _ = run(["train", "--set", "data.samples=256", "--set", "data.validation_samples=64",
                                 "--set", "train.epochs=1", "--set", "train.log_every=2", "--set",
                                 "run.dir=" + run_dir])
            self.assertEqual(rc, 0, err)
            with open(os.path.join(run_dir, "summary.json")) as f:
                summary = json.load(f)
            with open(os.path.join(run_dir, "metrics.jsonl")) as f:
                rows = [json.loads(line) for line in f if line.strip()]
        step_rows = [r for r in rows if "loss" in r]
        validation_rows = [r for r in rows if "val_loss" in r]
        self.assertTrue(step_rows and validation_rows, rows)
        text = ("summary.json: " + " ".join(sorted(flat_keys(summary))) + "\n"
                "metrics step line: " + " ".join(sorted(flat_keys(step_rows[0]))) + "\n"
                "metrics validation line: " + " ".join(sorted(flat_keys(validation_rows[0]))) + "\n")
        self.compare("output-keys", text)

    def test_error_lines(self):
        lines = []
        with tempfile.TemporaryDirectory() as tmp:
            for args in ERRORS:
                args = [a.replace("@TMP@", tmp) for a in args]
                rc, out, err, _ = run(args)
                got = [line for line in err.splitlines() if line.startswith("hpcml:")]
                self.assertEqual(len(got), 1, f"{args}: {err}")
                shown = " ".join(a.replace(tmp, "@TMP@") for a in args)
                lines.append(f"$ hpcml {shown}\nexit {rc}: {got[0].replace(tmp, '@TMP@')}\n")
        # Source locations ("(launch/x.cpp:123)") move with any edit; they are not what users read first.
        text = re.sub(r" \(\w+(/\w+)*\.cpp:\d+\)", " (<source>)", "".join(lines))
        self.compare("error-lines", text)


if __name__ == "__main__":
    unittest.main()
