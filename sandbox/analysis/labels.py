"""How a report is named in words: one spelling for the CLI, the demo and the dashboard.

Outcomes, cache states, graphs, code locations and stages each have one label here, so
``cache hit`` reads the same in ``sandbox show``, the demo's summary and the Run page.
"""

from __future__ import annotations

import os

from sandbox.record.report import CACHE_HIT, FAILED, IN_PROCESS, ISOLATED, CompileReport

__all__ = ["OUTCOMES", "STAGES", "caches", "code", "graph", "isolation", "outcome", "stage", "verdict"]

OUTCOMES = {ISOLATED: "isolated", CACHE_HIT: "cache hit", IN_PROCESS: "in-process", FAILED: "failed"}

# The caches that decide whether a graph compiles, as a report names them and in short.
_CACHES = (("fx_graph", "fx"), ("aot_autograd", "aot"))

# What a stage is, in words (stages not named here are shown by their own name).
STAGES = {
    "compile_file": "C++ compile",
    "async_compile.wait": "kernel compile",
    "wait_for_worker": "waiting for a worker",
    "serialize": "serializing the graph",
    "load": "loading the result",
    "transfer": "transfer from the worker",
    "cache_lookup": "cache lookup",
    "GraphLowering.run": "lowering",
    "Scheduler.codegen": "code generation",
    "Scheduler.__init__": "scheduling and fusion",
    "_recursive_post_grad_passes": "post-grad passes",
    "compile_in_process": "in-process compile",
}

_FALLBACKS = {"eager": "ran eagerly", "in_process": "compiled in-process"}


def outcome(r: CompileReport, fallback: bool = False) -> str:
    """``cache hit``, ``failed (crash)``; with ``fallback``, also what ran instead of a failed compile."""
    label = OUTCOMES.get(r.outcome, r.outcome)
    if r.failure is not None:
        label += f" ({r.failure.kind})"
        if fallback:
            label += f", {_FALLBACKS.get(r.fallback or '', 'raised')}"
    return label


def caches(r: CompileReport, async_compile: bool = False) -> str:
    """``fx hit, aot miss``: the state of each compile cache consulted (``-`` for none);
    with ``async_compile``, the async-compile cache's counts too."""
    parts = []
    for key, short in _CACHES:
        state = (r.caches.get(key) or {}).get("state")
        if state:
            parts.append(f"{short} {state}")
    counts = r.caches.get("async_compile") or {}
    if async_compile and counts:
        parts.append(f"async {counts.get('hit', 0)} hit/{counts.get('miss', 0)} miss")
    return ", ".join(parts) or "-"


def verdict(r: CompileReport) -> str:
    """The outcome with the cache states that decide it: ``isolated: fx miss, aot miss``."""
    states = caches(r)
    return f"{OUTCOMES.get(r.outcome, r.outcome)}: {states}" if states != "-" else OUTCOMES.get(r.outcome, r.outcome)


def isolation(r: CompileReport) -> str:
    """Where the graph compiled: which worker, in-process and why, a cache, or what failed."""
    if r.outcome == ISOLATED:
        return f"worker {r.worker_pid}" if r.worker_pid else "worker"
    if r.outcome == CACHE_HIT:
        return f"no compile ({r.reason})" if r.reason else "no compile"
    if r.outcome == IN_PROCESS:
        return f"in-process: {r.reason}" if r.reason else "in-process"
    if r.failure is not None:
        pid = r.failure.worker_pid or r.worker_pid
        ran = _FALLBACKS.get(r.fallback or "", "raised")
        return f"{r.failure.kind} in worker {pid}; {ran}" if pid else f"{r.failure.kind}; {ran}"
    return r.outcome


def graph(r: CompileReport, index: bool = False) -> str:
    """``forward 0/0``, or ``#2 forward 0/0`` with the graph's place in its run."""
    label = f"{r.graph_kind} {r.compile_id or '?'}"
    return f"#{r.graph_index} {label}" if index else label


def code(co_name: str | None, filename: str | None, line: int | None) -> str:
    """``forward (model.py:32)``: the function dynamo compiled and where it is."""
    where = f"{os.path.basename(filename)}:{line}" if filename else "?"
    return f"{co_name or '?'} ({where})"


def stage(name: str) -> str:
    return STAGES.get(name, name)
