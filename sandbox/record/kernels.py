"""The kernel inventory of a generated Inductor module, read from its source text.

Kernels are ``name = async_compile.<kind>(...)`` assignments (``cpp_pybinding`` on
CPU, ``triton`` on GPU) whose source is the first string literal; calls into
``extern_kernels.*`` and ATen fallbacks are listed as extern entries.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Any

_DEF = re.compile(r"^(\w+) = async_compile\.(\w+)\(", re.M)
# No leading \b in these (checked by _word_start instead): a pattern that starts with a
# literal is found by a fast prefix scan, and the whole report must stay cheap per graph
# (docs/decisions/kernel-inventory-regex.md).
_EXTERN = re.compile(r"extern_kernels\.(\w+)\(")
_FALLBACK = re.compile(r"torch\.ops\.(\w+)\.(\w+)\.(\w+)\(")
_LITERAL = re.compile(r"(?:r|R)?('''|\"\"\")")


def _kind(async_kind: str, name: str) -> str:
    if "tem_" in name or "template" in name:
        return "template"
    if async_kind.startswith("cpp"):
        return "cpp"
    if async_kind == "triton":
        return "triton"
    return async_kind


def _word_start(text: str, i: int) -> bool:
    return i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")


def _call_sites(text: str, name: str, start: int) -> int:
    """Occurrences of ``\\bname(`` or ``\\bname.run(`` from ``start`` on (no regex per name)."""
    n, i = 0, text.find(name, start)
    while i != -1:
        j = i + len(name)
        suffix = "(" if text.startswith("(", j) else ".run(" if text.startswith(".run(", j) else None
        if suffix and _word_start(text, i):
            n += 1
            i = text.find(name, j + len(suffix))
        else:
            i = text.find(name, i + 1)
    return n


def source_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def inventory(source_code: str | None) -> list[dict[str, Any]]:
    """One entry per kernel: name, kind (cpp/triton/template/extern), source hash and text."""
    if not source_code:
        return []
    kernels: list[dict[str, Any]] = []
    for m in _DEF.finditer(source_code):
        name, async_kind = m.group(1), m.group(2)
        lit = _LITERAL.search(source_code, m.end())
        source = ""
        if lit:
            close = source_code.find(lit.group(1), lit.end())
            if close != -1:
                source = source_code[lit.end() : close]
        kernels.append(
            {
                "name": name,
                "kind": _kind(async_kind, name),
                "source_hash": source_hash(source),
                "source": source,
                "lines": source.count("\n") + 1 if source else 0,
                "calls": _call_sites(source_code, name, m.end()),
            }
        )
    extern = Counter(
        f"extern_kernels.{m.group(1)}" for m in _EXTERN.finditer(source_code) if _word_start(source_code, m.start())
    )
    extern.update(
        f"torch.ops.{a}.{b}.{c}"
        for m in _FALLBACK.finditer(source_code)
        if _word_start(source_code, m.start())
        for a, b, c in [m.groups()]
        if a != "inductor"
    )
    for name, calls in sorted(extern.items()):
        kernels.append({"name": name, "kind": "extern", "source_hash": None, "source": "", "lines": 0, "calls": calls})
    return kernels
