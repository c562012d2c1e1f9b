"""Queries of kernel runtimes (option ``profile_steps``) for the Graph and Compare pages: one graph's
kernels by time with their share of the graph's time, and the runtime deltas of matched kernels
beside their build differences (``sandbox.analysis.runtime``, as ``sandbox show`` and ``diff``)."""

from __future__ import annotations

import pandas as pd

from sandbox.analysis import runtime
from sandbox.analysis.diff import RunDiff
from sandbox.record.report import CompileReport

KERNEL_COLUMNS = ["kernel", "kind", "calls", "per call µs", "total µs", "share", "device kernels"]
DELTA_COLUMNS = [
    "graph",
    "kernel",
    "kind",
    "A µs/call",
    "B µs/call",
    "B/A",
    "A share",
    "B share",
    "build differences",
    "regression",
]


def has_runtime(report: CompileReport) -> bool:
    return runtime.has_runtime(report)


def summary(report: CompileReport) -> str:
    """``profiled call 3: time 1.8 ms per call, kernels 94%``; or why a chosen call was skipped."""
    return runtime.summary(report)


def kernel_runtime_rows(report: CompileReport) -> pd.DataFrame:
    """The graph's kernels by total time (the largest first), then the time no kernel accounts for."""
    rows = [
        {
            "kernel": row["kernel"],
            "kind": row["kind"],
            "calls": row["calls"],
            "per call µs": row["per_call_us"],
            "total µs": row["total_us"],
            "share": row["share"],
            "device kernels": row["device_kernels"],
        }
        for row in runtime.kernel_rows(report)
    ]
    frame = pd.DataFrame(rows, columns=KERNEL_COLUMNS)
    return frame.astype({"calls": "Int64", "per call µs": float, "total µs": float, "share": float})


def runtime_delta_rows(d: RunDiff, label: object = None) -> pd.DataFrame:
    """Per matched kernel with runtimes in both runs, the largest change of the profiled call's time
    first; ``regression``: a change the verdict would name (``runtime.significant``) that is slower."""
    rows = []
    for gc in d.graph_changes:
        for row in gc.runtime:
            name = row["kernel_b"] if row["kernel_a"] == row["kernel_b"] else f"{row['kernel_a']} → {row['kernel_b']}"
            rows.append(
                {
                    "graph": label(gc) if callable(label) else f"{gc.co_name} {gc.graph_kind}",
                    "kernel": name,
                    "kind": row["kind"],
                    "A µs/call": row["a_per_call_us"],
                    "B µs/call": row["b_per_call_us"],
                    "B/A": row["ratio"],
                    "A share": row["a_share"],
                    "B share": row["b_share"],
                    "build differences": "; ".join(row["build"]) or "same build",
                    "regression": runtime.significant(row) and (row["ratio"] or 0) > 1,
                    "_delta": abs(row["step_delta_us"]),
                }
            )
    rows.sort(key=lambda r: -r["_delta"])
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "_delta"} for r in rows], columns=DELTA_COLUMNS)
    return frame.astype({"A µs/call": float, "B µs/call": float, "B/A": float, "A share": float, "B share": float})
