"""A synthetic store with planted causes, for the tests of the causes the Compare and Run pages
name first (``test_dashboard_causes.py``). The cause model has its own tests
(``tests/analysis/test_causes.py``); these reports only need to carry what it reads.

Runs, oldest first (all named ``model``, except ``fused``):

- ``A``: ``forward`` at model.py:20, a forward and a backward graph;
- ``B``: the same code with a ``torch._dynamo.graph_break()`` at model.py:32: its forward graph
  records the break, and two more graphs (``torch_dynamo_resume_in_forward_at_32``) follow it;
- ``fused``: A's graphs again, with ``max_autotune`` set and another forward graph: of its two
  kernels, the second fuses another op (a kernel change, a mode change); the first only reads
  differently, so the kernel the cause names is not the first in the Compare page's list.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sandbox.record.report import CompileReport, Run
from sandbox.store import open_store

T0 = 1_780_000_000.0
MODEL = "/x/model.py"
BREAK = {
    "graph_break": True,
    "reason": "Call to `torch._dynamo.graph_break()`",
    "frames": [{"file": MODEL, "line": 32, "function": "forward"}],
}
RESUME = "torch_dynamo_resume_in_forward_at_32"
MUL, ADD = "triton_poi_fused_mul_0", "triton_poi_fused_add_1"  # the forward graph's kernels


def kernel(name: str, ops: list[str], note: str = "") -> dict[str, Any]:
    source = f"def {name}():\n    # {', '.join(ops)}{note}\n    pass\n"
    return {
        "name": name,
        "kind": "triton",
        "ops": ops,
        "source": source,
        "source_hash": hashlib.sha256(source.encode()).hexdigest(),
        "lines": source.count("\n"),
        "calls": 1,
    }


def report(run: Run, index: int, co_name: str, line: int, kind: str, graph_hash: str, **fields: Any) -> CompileReport:
    values: dict[str, Any] = dict(
        run_id=run.run_id,
        compile_id=f"{index}/0",
        graph_kind=kind,
        outcome="isolated",
        graph_index=index,
        co_name=co_name,
        filename=MODEL,
        line=line,
        worker_pid=4242,
        started_at=run.started_at + index,
        duration_s=1.0,
        caches={"fx_graph": {"state": "miss"}, "aot_autograd": {"state": "miss"}},
        graph={"nodes": 10, "ops": 5, "inputs": 2, "hash": graph_hash},
        kernels=[kernel(f"triton_poi_fused_add_{index}", ["add"])],
    )
    values.update(fields)
    return CompileReport(**values)


def make_cause_store(path: Path) -> dict[str, str]:
    """The runs above in a SQLite store at ``path``; returns run label -> run id."""
    runs = {
        "A": Run(name="model", started_at=T0, torch="2.13.0"),
        "B": Run(name="model", started_at=T0 + 3600, torch="2.13.0"),
        "fused": Run(name="fused", started_at=T0 + 7200, torch="2.13.0", inductor_config={"max_autotune": True}),
    }
    a, b, fused = runs["A"], runs["B"], runs["fused"]
    reports = {
        "A": [
            report(a, 0, "forward", 20, "forward", "f", kernels=[kernel(MUL, ["mul"]), kernel(ADD, ["add"])]),
            report(a, 1, "forward", 20, "backward", "b"),
        ],
        "B": [
            report(b, 0, "forward", 20, "forward", "f-before-break", compile_reason=BREAK),
            report(b, 1, "forward", 20, "backward", "b-before-break"),
            report(b, 2, RESUME, 32, "forward", "f-after-break"),
            report(b, 3, RESUME, 32, "backward", "b-after-break"),
        ],
        "fused": [
            report(
                fused,
                0,
                "forward",
                20,
                "forward",
                "f2",
                kernels=[kernel(MUL, ["mul"], " "), kernel(ADD, ["add", "relu"])],
            ),
            report(fused, 1, "forward", 20, "backward", "b"),
        ],
    }
    store = open_store(str(path))
    try:
        for name, run in runs.items():
            store.put_run(run)
            store.put_reports(reports[name])
    finally:
        store.close()
    return {name: run.run_id for name, run in runs.items()}
