"""The map matches the tree: every path in docs/architecture.md's "To change X, look in Y"
table exists, the layers include only downwards, models/ includes nothing from io/datagen/,
no source file in launch/ is over 600 lines, no function in a .cpp of the layers is
over 150 lines, and only core/ and collectives/ call MPI."""
import glob
import os
import re
import unittest

from support import SOURCE_DIR

LAYERS = ["core", "collectives", "io", "hpo", "perf", "models", "launch"]
# What each layer may include from (itself and the layers below it).
ALLOWED = {"core": {"core"}, "collectives": {"core", "collectives"}, "io": {"core", "io"}, "hpo": {"core", "hpo"},
           "perf": {"core", "perf"}, "models": {"core", "collectives", "io", "hpo", "models"}, "launch": set(LAYERS)}

# Functions longer than this are split into named pieces (issue 23).
MAX_FUNCTION_LINES = 150
FUNCTION_LAYERS = ["core", "collectives", "io", "hpo", "perf", "models", "launch"]


def blank_comments_and_literals(text):
    """`text` with comments, string and character literals and preprocessor lines blanked
    to spaces, newlines kept, so that only the code's own braces and parentheses remain."""
    out, i, n, line_start = [], 0, len(text), True
    while i < n:
        c = text[i]
        if line_start and c in " \t":
            out.append(c)
            i += 1
            continue
        if line_start and c == "#":  # a preprocessor line, with its continuations
            j = i
            while j < n and (text[j] != "\n" or text[j - 1] == "\\"):
                j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
            continue
        line_start = c == "\n"
        j = i + 1
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif text.startswith('R"', i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'R"([^()\\ ]{0,16})\(', text[i:])
            if m:
                end = text.find(")" + m.group(1) + '"', i)
                j = n if end < 0 else end + len(m.group(1)) + 2
        elif c == '"' or (c == "'" and not text[i - 1].isalnum()):  # not a digit separator (1'000)
            while j < n and text[j] not in (c, "\n"):
                j += 2 if text[j] == "\\" else 1
            j += 1
        if j > i + 1 or (j == i + 1 and c in "\"'"):
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
        else:
            out.append(c)
        i = j
    return "".join(out)


# Braces that open a scope whose members are scanned in turn (rather than a body).
SCOPE_HEADER = re.compile(r"^(?:inline\s+)?namespace\b|^extern\b|^(?:template\s*<.*>\s*)?(?:class|struct|union)\b[^(]*$",
                          re.S)
# "Type::Type(...) : a_(x), b_" before a '{': b_'s braced initializer, not the body.
MEMBER_INITIALIZER = re.compile(r"\)\s*(?:noexcept\s*)?:(?!:).*[\w>]\s*$", re.S)


def function_lengths(text):
    """(first line, lines, declaration) of every function defined at namespace or class
    scope in C++ source `text`, counted from the first line of its declaration to its
    closing brace. Lambdas and local classes count towards the function around them;
    braced initializers of variables are not functions."""
    code = blank_comments_and_literals(text)
    found, scopes, start, parens, i = [], 0, 0, 0, 0
    while i < len(code):
        c = code[i]
        if c == ";":
            start = i + 1
        elif c == "(":
            parens += 1
        elif c == ")":
            parens -= 1
        elif c == "}":
            scopes -= 1
            start = i + 1
        elif c == ":" and re.search(r"\b(?:public|private|protected)\s*$", code[start:i]):
            start = i + 1
        elif c == "{":
            header = code[start:i].strip()
            if parens == 0 and SCOPE_HEADER.match(header):
                scopes += 1
                start = i + 1
            else:
                depth, j = 1, i + 1
                while j < len(code) and depth:
                    depth += {"{": 1, "}": -1}.get(code[j], 0)
                    j += 1
                is_body = parens == 0 and "(" in header and not MEMBER_INITIALIZER.search(code[start:i]) \
                    and not re.match(r"^(?:\w+\s+)*enum\b", header)
                if is_body:
                    first = code.count("\n", 0, start + len(code[start:i]) - len(code[start:i].lstrip())) + 1
                    last = code.count("\n", 0, j - 1) + 1
                    found.append((first, last - first + 1, " ".join(header.split())))
                    start = j
                i = j
                continue
        i += 1
    return found


# Only these folders call MPI (every wait elsewhere goes through the Backend's deadlines).
# tests/ may: raw MPI is an independent check of what the Backend does.
MPI_FOLDERS = {"core", "collectives", "tests"}
MPI_CALL = re.compile(r"\b(MPI_[A-Z][A-Za-z_]*|PMPI_[A-Z][A-Za-z_]*|HPCML_MPI_CHECK)\s*\(")


def mpi_calls(text):
    """(line, name) of every MPI function call in C++ `text`, comments and strings ignored."""
    code = blank_comments_and_literals(text)
    return [(code.count("\n", 0, m.start()) + 1, m.group(1)) for m in MPI_CALL.finditer(code)]


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

    def test_the_inference_service_makes_no_mpi_call(self):
        # Issue 24: the service talks through the Backend's point-to-point API; only
        # core/ and collectives/ call MPI for it (core/mpi.hpp's hpcml helpers are fine).
        paths = sources(os.path.join("launch", "serve")) + sources(os.path.join("examples", "serve_client"))
        paths.append(os.path.join(SOURCE_DIR, "launch", "bench", "serve.cpp"))
        self.assertGreater(len(paths), 10)
        wrong = []
        for path in paths:
            with open(path) as f:
                text = f.read()
            name = os.path.relpath(path, SOURCE_DIR)
            if re.search(r"^\s*#\s*include\s*<mpi\.h>", text, re.M):
                wrong.append(f"{name} includes <mpi.h>")
            for symbol in sorted(set(re.findall(r"\bMPI_\w+", blank_comments_and_literals(text)))):
                wrong.append(f"{name} uses {symbol}")
        self.assertEqual(wrong, [])

    def test_only_core_and_collectives_call_mpi(self):
        calls = []
        for folder in sorted(os.listdir(SOURCE_DIR)):
            if folder in MPI_FOLDERS or folder.startswith(("build", ".")) or folder == "gpu-bundle":
                continue
            if not os.path.isdir(os.path.join(SOURCE_DIR, folder)):
                continue
            for path in sources(folder):
                with open(path) as f:
                    for line, name in mpi_calls(f.read()):
                        calls.append(f"{os.path.relpath(path, SOURCE_DIR)}:{line}: {name}")
        self.assertEqual(calls, [], "MPI is called outside core/ and collectives/: go through collectives::Backend")

    def test_the_mpi_scan_finds_calls_and_skips_the_rest(self):
        text = ('#include <mpi.h>\n'
                'MPI_Comm comm = MPI_COMM_NULL;  // MPI_Send(x) in a comment\n'
                'const char* s = "MPI_Recv(";\n'
                'HPCML_MPI_CHECK(MPI_Allreduce (a, b));\n'
                'int r = MPI_Comm_rank(comm, &x);\n')
        self.assertEqual(mpi_calls(text), [(4, "HPCML_MPI_CHECK"), (4, "MPI_Allreduce"), (5, "MPI_Comm_rank")])

    def test_no_function_over_150_lines(self):
        long = []
        for layer in FUNCTION_LAYERS:
            for path in sources(layer):
                if not path.endswith(".cpp"):
                    continue
                with open(path) as f:
                    for line, lines, declaration in function_lengths(f.read()):
                        if lines > MAX_FUNCTION_LINES:
                            long.append(f"{os.path.relpath(path, SOURCE_DIR)}:{line}: {lines} lines: {declaration[:80]}")
        self.assertEqual(long, [], f"functions over {MAX_FUNCTION_LINES} lines: split them into named pieces")

    def test_the_function_scan_measures_what_it_should(self):
        # The scan itself: a long function in a namespace, a member function, a
        # constructor with braced member initializers, a lambda, braces in strings and
        # comments, a braced table, a class and an enum.
        body = "\n".join(f"  x += {k};  // {{ not a brace" for k in range(200))
        text = (
            '#include "a.hpp"\n'                                  # 1
            "namespace hpcml::launch {\n"                         # 2
            "namespace {\n"                                       # 3
            "const int kTable[] = {1, 2,\n 3};\n"                 # 4-5
            "enum class E { kA, kB };\n"                          # 6
            "struct S {\n"                                        # 7
            "  S(int a) : a_{a}, b_(a) {}\n"                      # 8
            "  int get() const {\n    return a_;\n  }\n"          # 9-11
            " private:\n  int a_, b_;\n"                          # 12-13
            "};\n"                                                # 14
            "}  // namespace\n"                                   # 15
            "int train(Context& ctx,\n"                           # 16
            "          const TrainConfig& config) {\n"            # 17
            '  const char* s = "}}{";\n'                          # 18
            "  auto f = [&](int y) { return y; };\n"              # 19
            + body + "\n"                                         # 20-219
            "  return 0;\n"                                       # 220
            "}\n"                                                 # 221
            "}  // namespace hpcml::launch\n")
        got = [(line, lines, declaration.split("(")[0]) for line, lines, declaration in function_lengths(text)]
        self.assertEqual(got, [(8, 1, "S"), (9, 3, "int get"), (16, 206, "int train")])


if __name__ == "__main__":
    unittest.main()
