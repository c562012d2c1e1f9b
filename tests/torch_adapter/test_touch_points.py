"""The torch adapter's two rules, checked on the source (nothing is compiled), written
against torch 2.13.0:

* every public function of ``sandbox/torch_adapter/<topic>.py`` is called by name
  (``<topic>.<name>(``) in ``tests/torch_adapter/test_<topic>.py``: a new touch point of a
  private PyTorch API comes with its test, in the file of its topic;
* no module of ``sandbox/`` or ``dashboard/`` outside ``sandbox/torch_adapter/`` touches a
  private PyTorch API (imports a ``torch._*`` module, or reaches an attribute whose name
  starts with ``_`` from ``torch``), apart from the calls of ``PUBLIC_BY_DOCUMENTATION``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ADAPTER = ROOT / "sandbox" / "torch_adapter"
# The recording several topics share (``recorded``): a function it calls counts as tested
# for a topic whose test file reads the ``recorded`` fixture.
SHARED_RECORDING = (HERE / "recording.py", HERE / "conftest.py")

# Private by name, public by documentation: user code calls these (``sandbox/zoo.py``, the
# example models, does).
PUBLIC_BY_DOCUMENTATION = frozenset({"torch._dynamo.graph_break", "torch._dynamo.mark_dynamic"})


def _public_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_")
    ]


def _reads_recorded(tree: ast.Module) -> bool:
    return any(
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test_")
        and any(a.arg == "recorded" for a in node.args.args + node.args.kwonlyargs)
        for node in ast.walk(tree)
    )


def test_every_touch_point_has_a_test_in_its_topic_file() -> None:
    """Every public function of each ``sandbox/torch_adapter/<topic>.py`` appears as
    ``<topic>.<name>(`` in ``tests/torch_adapter/test_<topic>.py``."""
    shared = "".join(p.read_text() for p in SHARED_RECORDING)
    topics = sorted(p for p in ADAPTER.glob("*.py") if p.stem != "__init__")
    assert topics, f"no topic modules in {ADAPTER}"
    untested = []
    for module in topics:
        topic = module.stem
        test_file = HERE / f"test_{topic}.py"
        if not test_file.exists():
            untested.append(f"{topic}: no {test_file.relative_to(ROOT)}")
            continue
        source = test_file.read_text()
        via_recording = _reads_recorded(ast.parse(source))
        for name in _public_functions(module):
            call = f"{topic}.{name}("
            if call in source or (via_recording and call in shared):
                continue
            untested.append(f"{topic}.{name} (not called in {test_file.relative_to(ROOT)})")
    assert not untested, "torch adapter functions without a test in their topic's file:\n" + "\n".join(untested)


def _dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; None for a chain that does not start at a name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _private(parts: list[str]) -> bool:
    """A path below ``torch`` with a segment that starts with ``_`` (dunders such as
    ``__version__`` are public)."""
    return any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in parts[1:])


def _offences(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    torch_names = {"torch"}  # and what `import torch as th` binds
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "torch" and alias.asname:
                    torch_names.add(alias.asname)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "torch" and _private(parts):
                    yield node.lineno, f"import {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "torch":
                continue
            if _private(parts):
                yield node.lineno, f"from {node.module} import {', '.join(a.name for a in node.names)}"
            else:
                for alias in node.names:
                    if _private([*parts, alias.name]):
                        yield node.lineno, f"from {node.module} import {alias.name}"
        elif isinstance(node, ast.Attribute):
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute) and parent.value is node:
                continue  # only the whole chain: torch._dynamo.config.x once, not its prefixes too
            parts = _dotted(node)
            if not parts or parts[0] not in torch_names:
                continue
            chain = ".".join(["torch", *parts[1:]])
            if _private(parts) and chain not in PUBLIC_BY_DOCUMENTATION:
                yield node.lineno, chain


def test_no_private_torch_api_outside_the_adapter() -> None:
    """No module of ``sandbox/`` or ``dashboard/`` outside ``sandbox/torch_adapter/`` imports
    a private torch module or reaches a private torch attribute (every such touch belongs in
    the adapter, where a test names it)."""
    files = sorted(
        p for folder in (ROOT / "sandbox", ROOT / "dashboard") for p in folder.rglob("*.py") if ADAPTER not in p.parents
    )
    assert files, "no source files found"
    found = [f"{path.relative_to(ROOT)}:{line}: {what}" for path in files for line, what in _offences(path)]
    for offence in found:
        print(offence)
    assert not found, f"{len(found)} touches of a private torch API outside sandbox/torch_adapter/:\n" + "\n".join(
        found
    )
