"""The kernel inventory of a generated Inductor module, read from its source text.

Kernels are ``name = async_compile.<kind>(...)`` assignments (``cpp_pybinding`` on
CPU, ``triton`` on GPU) whose source is the first string literal; calls into
``extern_kernels.*`` and ATen fallbacks are listed as extern entries. Each entry
names the ATen ops it fuses (``ops``): from the ``Original ATen: [...]`` comment
Inductor writes above a kernel's definition (Triton), else from the kernel's name.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from typing import Any

# No leading \b or ^ in these (checked in Python instead): a pattern that starts with a
# literal is found by a fast prefix scan, and the whole report must stay cheap per graph
# (docs/decisions/kernel-inventory-regex.md). A definition is ``<name> = async_compile.<kind>(``
# at the start of a line; its name is read back from the line.
_DEF = re.compile(r" = async_compile\.(\w+)\(")
_NAME = re.compile(r"\w+")
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


_ORIGINAL_ATEN = "Original ATen: ["


def _name_ops(name: str) -> list[str]:
    """The words of a kernel's name between ``fused_`` and its trailing ``_<n>``: Inductor names a
    kernel after its ops, so a multi-word op comes out split (``native_layer_norm`` -> native, layer, norm)."""
    start = name.find("fused_")
    if start < 0:
        return []
    body = name[start + len("fused_") :]
    head, _, tail = body.rpartition("_")
    if tail.isdigit():
        body = head  # "cpp_fused_0": a kernel named after no op
    return [w for w in body.split("_") if w]


def kernel_ops(name: str, text: str = "", start: int = 0, end: int = 0) -> list[str]:
    """The ATen ops a kernel fuses: the ``Original ATen: [aten.x, ...]`` list of a comment line in
    ``text[start:end]`` (the lines above its definition, after the previous kernel's), namespace
    ``aten.`` dropped; else the words of its name (``_name_ops``)."""
    at = text.rfind(_ORIGINAL_ATEN, start, end) if end > start else -1
    if at >= 0 and text[(text.rfind("\n", start, at) + 1) or start : at].lstrip().startswith("#"):
        close = text.find("]", at)
        if close >= 0:
            listed = text[at + len(_ORIGINAL_ATEN) : close].split(",")
            return [op.strip().removeprefix("aten.") for op in listed if op.strip()]
    return _name_ops(name)


def source_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def inventory(source_code: str | None) -> list[dict[str, Any]]:
    """One entry per kernel: name, kind (cpp/triton/template/extern), source hash and text."""
    if not source_code:
        return []
    kernels: list[dict[str, Any]] = []
    previous_end = 0  # where the previous kernel's definition ended: this one's comment lines come after
    for m in _DEF.finditer(source_code):
        line_start = source_code.rfind("\n", 0, m.start()) + 1
        name, async_kind = source_code[line_start : m.start()], m.group(1)
        if not _NAME.fullmatch(name):
            continue
        lit = _LITERAL.search(source_code, m.end())
        source = ""
        ops = kernel_ops(name, source_code, previous_end, line_start)
        calls_from = m.end()  # call sites come after the kernel's source: a Triton source defines ``def name(``
        if lit:
            close = source_code.find(lit.group(1), lit.end())
            if close != -1:
                source = source_code[lit.end() : close]
                previous_end = calls_from = close
        kernels.append(
            {
                "name": name,
                "kind": _kind(async_kind, name),
                "source_hash": source_hash(source),
                "source": source,
                "lines": source.count("\n") + 1 if source else 0,
                "calls": _call_sites(source_code, name, calls_from),
                "ops": ops,
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
        # extern_kernels.<op> and torch.ops.<namespace>.<op>.<overload>: the op is its own
        op = name.split(".")[1 if name.startswith("extern_kernels.") else 3]
        kernels.append(
            {"name": name, "kind": "extern", "source_hash": None, "source": "", "lines": 0, "calls": calls, "ops": [op]}
        )
    return kernels
