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
_EXTERN = re.compile(r"\bextern_kernels\.(\w+)\(")
_FALLBACK = re.compile(r"\btorch\.ops\.(\w+)\.(\w+)\.(\w+)\(")
_LITERAL = re.compile(r"(?:r|R)?('''|\"\"\")")


def _kind(async_kind: str, name: str) -> str:
    if "tem_" in name or "template" in name:
        return "template"
    if async_kind.startswith("cpp"):
        return "cpp"
    if async_kind == "triton":
        return "triton"
    return async_kind


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
                source = source_code[lit.end():close]
        kernels.append(
            {
                "name": name,
                "kind": _kind(async_kind, name),
                "source_hash": source_hash(source),
                "source": source,
                "lines": source.count("\n") + 1 if source else 0,
                "calls": len(re.findall(rf"\b{re.escape(name)}(?:\.run)?\(", source_code[m.end():])),
            }
        )
    extern = Counter(f"extern_kernels.{n}" for n in _EXTERN.findall(source_code))
    extern.update(f"torch.ops.{a}.{b}.{c}" for a, b, c in _FALLBACK.findall(source_code) if a != "inductor")
    for name, calls in sorted(extern.items()):
        kernels.append({"name": name, "kind": "extern", "source_hash": None, "source": "", "lines": 0, "calls": calls})
    return kernels
