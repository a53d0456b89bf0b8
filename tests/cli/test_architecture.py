"""The map matches the tree: every path in docs/architecture.md's "To change X, look in Y"
table exists, the layers include only downwards, models/ includes nothing from io/datagen/,
and no source file in launch/ is over 600 lines."""
import glob
import os
import re
import unittest

from support import SOURCE_DIR

LAYERS = ["core", "collectives", "io", "hpo", "models", "launch"]
# What each layer may include from (itself and the layers below it).
ALLOWED = {"core": {"core"}, "collectives": {"core", "collectives"}, "io": {"core", "io"}, "hpo": {"core", "hpo"},
           "models": {"core", "collectives", "io", "hpo", "models"}, "launch": set(LAYERS)}


def sources(folder):
    out = []
    for ext in ("cpp", "hpp"):
        out += glob.glob(os.path.join(SOURCE_DIR, folder, "**", "*." + ext), recursive=True)
    return sorted(out)


class ArchitectureTest(unittest.TestCase):
    def test_every_path_in_the_table_exists(self):
        with open(os.path.join(SOURCE_DIR, "docs", "architecture.md")) as f:
            text = f.read()
        table = text.split("## To change X, look in Y", 1)[1]
        paths = []
        for line in table.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 2 and cells[1] not in ("look in", "---"):
                paths += re.findall(r"`([^`]+)`", cells[1])
        self.assertGreater(len(paths), 20)
        missing = [p for p in paths if not os.path.exists(os.path.join(SOURCE_DIR, p))]
        self.assertEqual(missing, [], "docs/architecture.md names paths that do not exist")

    def test_layers_include_only_downwards(self):
        wrong = []
        for layer in LAYERS:
            for path in sources(layer):
                with open(path) as f:
                    for include in re.findall(r'^#include "([a-z_]+)/', f.read(), re.M):
                        if include in LAYERS and include not in ALLOWED[layer]:
                            wrong.append(f"{os.path.relpath(path, SOURCE_DIR)} includes {include}/")
        self.assertEqual(wrong, [])

    def test_models_do_not_depend_on_a_data_generator(self):
        wrong = []
        for path in sources("models"):
            with open(path) as f:
                if re.search(r'^#include "io/datagen/', f.read(), re.M):
                    wrong.append(os.path.relpath(path, SOURCE_DIR))
        self.assertEqual(wrong, [])

    def test_no_launch_source_over_600_lines(self):
        long = []
        for path in sources("launch"):
            with open(path) as f:
                n = sum(1 for _ in f)
            if n > 600:
                long.append(f"{os.path.relpath(path, SOURCE_DIR)}: {n} lines")
        self.assertEqual(long, [])


if __name__ == "__main__":
    unittest.main()
