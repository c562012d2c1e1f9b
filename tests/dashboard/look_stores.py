"""A synthetic store for the tests of how the dashboard reads to a newcomer
(``test_dashboard_links.py``, ``test_dashboard_look.py``): links that miss, counts, empty cells,
changes from next to nothing, stage colours, failed runs.

Runs, oldest first:

- ``broken`` A and B: every graph failed to compile in the worker (no kernels on either side);
- ``staged`` P: one forward graph that took next to no time (0.9 ms) through seven of the
  sandbox's stages (``cache_lookup`` ... ``load``), one kernel, no generated kernel counted;
- ``staged`` Q: the same graph taking 0.8 s through four stages only (no ``serialize``, ``send``
  or ``transfer``), in another order of recording, with three kernels counted: on a chart coloured
  by position, ``wait_for_worker`` would take another colour here than in P.

P and Q are ranks 0 and 1 of the job ``nightly-1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cause_stores import kernel

from sandbox.record.report import CompileReport, Failure, Run, Stage
from sandbox.store import open_store

T0 = 1_780_000_000.0
CODE = "/x/train.py"
JOB = "nightly-1"
P_STAGES = ("cache_lookup", "serialize", "wait_for_worker", "send", "compile_in_worker", "transfer", "load")
Q_STAGES = ("load", "wait_for_worker", "cache_lookup", "compile_in_worker")  # recorded out of order


def _stages(start: float, names: tuple[str, ...], each_s: float) -> list[Stage]:
    """``names`` one after another from ``start`` (in the order of a compile), recorded in the given order."""
    order = sorted(names, key=P_STAGES.index)
    at = {name: start + i * each_s for i, name in enumerate(order)}
    stages = [Stage(name, at[name], at[name] + each_s) for name in names]
    if "compile_in_worker" in at:  # the worker's own stage inside it
        worker = at["compile_in_worker"]
        stages.append(Stage("worker_compile", worker, worker + each_s / 2, "worker", "compile_in_worker"))
    return stages


def _report(run: Run, index: int, **fields: Any) -> CompileReport:
    values: dict[str, Any] = dict(
        run_id=run.run_id,
        compile_id=f"{index}/0",
        graph_kind="forward",
        outcome="isolated",
        graph_index=index,
        co_name="step",
        filename=CODE,
        line=10 + index,
        worker_pid=4242,
        started_at=run.started_at + 1 + index,
        caches={"fx_graph": {"state": "miss"}, "aot_autograd": {"state": "miss"}},
        graph={"nodes": 10, "ops": 5, "inputs": 2, "hash": f"g{index}"},
    )
    values.update(fields)
    return CompileReport(**values)


def make_look_store(path: Path) -> dict[str, str]:
    """The runs above in a SQLite store at ``path``; returns label (A, B, P, Q) -> run id."""
    runs = {
        "A": Run(name="broken", started_at=T0, torch="2.13.0"),
        "B": Run(name="broken", started_at=T0 + 600, torch="2.13.0"),
        "P": Run(name="staged", started_at=T0 + 1200, torch="2.13.0", job=JOB, rank=0, world_size=2),
        "Q": Run(name="staged", started_at=T0 + 1800, torch="2.13.0", job=JOB, rank=1, world_size=2),
    }
    reports: dict[str, list[CompileReport]] = {}
    for name in ("A", "B"):
        run = runs[name]
        reports[name] = [
            _report(
                run,
                i,
                outcome="failed",
                fallback="eager",
                duration_s=0.5,
                failure=Failure("error", f"injected failure {i}", worker_pid=4242),
                stages=_stages(run.started_at + 1 + i, ("cache_lookup", "serialize", "wait_for_worker"), 0.1),
            )
            for i in range(2)
        ]
    p, q = runs["P"], runs["Q"]
    reports["P"] = [
        _report(
            p,
            0,
            duration_s=0.0009,
            stages=_stages(p.started_at + 1, P_STAGES, 0.0001),
            metrics={"generated_kernel_count": 0},
            kernels=[kernel("cpp_fused_add_0", ["add"])],
        )
    ]
    reports["Q"] = [
        _report(
            q,
            0,
            duration_s=0.8,
            stages=_stages(q.started_at + 1, Q_STAGES, 0.2),
            metrics={"generated_kernel_count": 3},
            kernels=[kernel("cpp_fused_add_0", ["add"])],
        )
    ]
    store = open_store(str(path))
    try:
        for name, run in runs.items():
            store.put_run(run)
            store.put_reports(reports[name])
    finally:
        store.close()
    return {name: run.run_id for name, run in runs.items()}
