"""The shape of the code: one-way imports, declared settings, modules that fit one reading.

The layers themselves are import-linter contracts (pyproject.toml, `lint-imports` in
`make lint`); these tests check what the contracts cannot: no import cycle at all, a reason
beside every deferred import, every `SANDBOX_*` variable declared once, the configuration
page in step with that registry, and no module too long to read in one sitting.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import grimp
from support import ROOT

from sandbox.env import VARIABLES
from sandbox.options import SPECS, VARIABLE_OF, variables_table

PACKAGES = ("sandbox", "dashboard")
MAX_LINES = 600


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_no_import_cycle() -> None:
    """No module reaches itself through imports, function-level ones included."""
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    ours = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in graph.find_modules_directly_imported_by(v) & ours:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(ours):
        if module not in order:
            visit(module)
    assert not cycles, f"modules that import each other in a cycle: {cycles}"


def test_deferred_imports_say_why() -> None:
    """An import inside a function defers an optional dependency or a heavy torch import, and
    says so in a comment on its line or the line above. The torch adapter imports each private
    module where it touches it (its package docstring says why), so it is exempt."""
    missing = []
    for path in _sources(*PACKAGES):
        if "torch_adapter" in path.parts:
            continue
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    line, above = lines[node.lineno - 1], node.lineno - 2
                    while above > 0 and lines[above].strip().startswith(("import ", "from ")):
                        above -= 1  # one comment may stand above a group of imports
                    if "#" not in line and not lines[above].strip().startswith("#"):
                        missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {line.strip()}")
    assert not missing, "function-level imports without a reason:\n" + "\n".join(missing)


_VARIABLE = re.compile(r"SANDBOX_[A-Z0-9_]+")


def _variables_named(path: Path) -> set[str]:
    """``SANDBOX_*`` names used as strings or keyword names in a module's code (not its prose)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _VARIABLE.fullmatch(node.value):
            found.add(node.value)
        elif isinstance(node, ast.keyword) and node.arg and _VARIABLE.fullmatch(node.arg):
            found.add(node.arg)
    return found


def test_every_sandbox_variable_is_declared() -> None:
    """Every SANDBOX_* variable that the code, the benches or the tests name is declared once,
    with its default and meaning, in sandbox/env.py."""
    undeclared = {}
    for path in _sources("sandbox", "dashboard", "bench", "tests"):
        if path == Path(__file__).resolve():
            continue  # its probe names undeclared variables on purpose
        for name in _variables_named(path) - set(VARIABLES):
            undeclared.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not undeclared, f"SANDBOX_* variables not declared in sandbox/env.py: {undeclared}"


def test_the_registry_catches_an_undeclared_variable(tmp_path: Path) -> None:
    """The scan above sees the ways code names a variable."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os\n"
        'a = os.environ.get("SANDBOX_NOT_DECLARED_A")\n'
        "b = dict(os.environ, SANDBOX_NOT_DECLARED_B='1')\n"
        '"""SANDBOX_IN_PROSE is prose"""\n'
    )
    assert _variables_named(probe) == {"SANDBOX_NOT_DECLARED_A", "SANDBOX_NOT_DECLARED_B"}


def test_every_option_has_one_variable() -> None:
    assert set(VARIABLE_OF) == set(SPECS)
    assert all(VARIABLES[name].option == option for option, name in VARIABLE_OF.items())


def test_configuration_page_lists_the_registry() -> None:
    page = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    table = page.split("<!-- variables:start -->\n", 1)[1].split("<!-- variables:end -->", 1)[0]
    assert table == variables_table(), (
        "docs/CONFIGURATION.md is out of date: render it with "
        "python -c 'from sandbox.options import variables_table; print(variables_table())'"
    )


def test_modules_fit_one_reading() -> None:
    long = {
        str(p.relative_to(ROOT)): n for p in _sources(*PACKAGES) if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


_MEASUREMENT = re.compile(r"\b(H100|H200|A100)\b|\b\d+(\.\d+)?x\b(?! *\d)")


def test_no_measurements_in_comments() -> None:
    """Numbers from benches and named machines live in docs/decisions/, not in the code's prose."""
    found = []
    for path in _sources(*PACKAGES):
        text = path.read_text()
        prose = [(n, line.split("#", 1)[1]) for n, line in enumerate(text.splitlines(), 1) if "#" in line]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    prose.append((node.body[0].lineno, doc))
        for n, t in prose:
            hit = _MEASUREMENT.search(t)
            if hit:
                found.append(f"{path.relative_to(ROOT)}:{n}: {hit.group(0)}")
    assert not found, "measurements in comments or docstrings (move them to docs/decisions/):\n" + "\n".join(found)
