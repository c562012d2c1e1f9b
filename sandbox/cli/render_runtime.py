"""Terminal rendering of kernel runtimes (option ``profile_steps``): pure functions, text out.

``sandbox show`` gets a table per profiled graph (its kernels by time, calls, per-call time and
share of the graph's time); ``sandbox diff`` a table of runtime deltas per matched kernel beside
the build differences that may explain them. Store text goes through ``render.text`` /
``render.shorten`` (the terminal boundary), as everywhere in the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sandbox.analysis import runtime
from sandbox.cli.render import change_label, code_label, shorten, table, text
from sandbox.record.report import CompileReport

# ``sandbox diff`` lists this many runtime deltas (the largest changes of the profiled call's time).
MAX_DELTAS = 15


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def kernel_runtimes(reports: Sequence[CompileReport]) -> str:
    """``sandbox show``: each profiled graph's kernels by time; "" when no graph was profiled."""
    out: list[str] = []
    for r in reports:
        line = runtime.summary(r)
        if not line:
            continue
        out.append("")
        out.append(text(f"#{r.graph_index} {r.graph_kind} at {code_label(r)}: {line}"))
        rows = [
            [
                shorten(row["kernel"], 60),
                text(row["kind"] or ""),
                "-" if row["calls"] is None else str(row["calls"]),
                runtime.us(row["per_call_us"]),
                runtime.us(row["total_us"]),
                _share(row["share"]),
                shorten(row["device_kernels"] or "", 40),
            ]
            for row in runtime.kernel_rows(r)
        ]
        if rows:
            header = ["kernel", "kind", "calls", "per call", "total", "share", "device kernels"]
            out.append("\n".join("  " + line for line in table(header, rows, right=(2, 3, 4, 5)).splitlines()))
    if not out:
        return ""
    return "kernel runtime (profiled calls of each compiled graph; share of the graph's time):" + "\n".join(out)


def runtime_deltas(d: Any, limit: int = MAX_DELTAS) -> str:
    """``sandbox diff``: per matched kernel with runtimes on both sides, A and B per call, B/A and
    the build differences; "" when no matched graph was profiled in both runs."""
    found = [(gd, row) for gd in d.graph_changes for row in getattr(gd, "runtime", None) or []]
    if not found:
        return ""
    found.sort(key=lambda pair: -abs(pair[1]["step_delta_us"]))
    rows = []
    for gd, row in found[:limit]:
        name = row["kernel_b"] if row["kernel_a"] == row["kernel_b"] else f"{row['kernel_a']} -> {row['kernel_b']}"
        rows.append(
            [
                shorten(change_label(gd), 40),
                shorten(name, 56),
                runtime.us(row["a_per_call_us"]),
                runtime.us(row["b_per_call_us"]),
                "-" if row["ratio"] is None else f"{row['ratio']:.2f}x",
                f"{_share(row['a_share'])} -> {_share(row['b_share'])}",
                shorten("; ".join(row["build"]) or "same build", 70),
            ]
        )
    header = ["graph", "kernel", "A per call", "B per call", "B/A", "share", "build differences"]
    more = f"\n  ... and {len(found) - limit} more (sandbox diff --json lists them all)" if len(found) > limit else ""
    return "kernel runtime, largest changes (profiled calls, per call):\n" + table(header, rows, right=(2, 3, 4)) + more
