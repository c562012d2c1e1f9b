"""Why one run compiled what it did: its graph breaks, recompiles, cache misses (with why,
against earlier reports of the same graphs that hit) and failures, largest first; and, where both
it and the earlier run of its name profiled calls (profile_steps), the kernels that run slower or
faster than there, first.

The same ``Cause`` records and wording as the comparison of two runs (``causes.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sandbox.analysis import labels
from sandbox.analysis.causes import (
    Cause,
    _breaks,
    _differing,
    _evidence,
    _function,
    _graph,
    _guard,
    _hit,
    _plural,
    _recompiles,
    _short,
    _state,
    _where,
    _work,
    runtime_causes,
    work_s,
)
from sandbox.record.report import FAILED, CompileReport

__all__ = ["explain_run"]


def explain_run(
    run: Mapping[str, Any], reports: Sequence[CompileReport], earlier: Sequence[CompileReport] = ()
) -> list[Cause]:
    """One run's graph breaks, recompiles, cache misses (with why, against ``earlier`` reports of the
    same graphs that hit) and failures, largest first."""
    out: list[Cause] = []
    for (file, line, _fn), r in _breaks(reports).items():
        fn = _function(r)
        after = [x for x in reports if (x.co_name or "").startswith(f"torch_dynamo_resume_in_{fn}_at_")]
        out.append(
            Cause(
                "graph_break_added",
                f"graph break at {file}:{line} ({_short(r.compile_reason.get('reason'))}): "
                f"{_plural(len(after), 'graph')} after it, {_work(after):.1f} s",
                _work(after),
                [_graph(x) for x in after],
                [_evidence("run", r)],
            )
        )
    for _where_key, rs in _recompiles(reports).items():
        first = min(rs, key=lambda r: r.graph_index)
        out.append(
            Cause(
                "recompile",
                f"recompiled {first.co_name or '?'} at {_where(first.filename, first.line)} "
                f"({_plural(len(rs), 'more compile')}): {_guard(first.recompile.get('reason'))}, {_work(rs):.1f} s",
                _work(rs),
                [_graph(r) for r in rs],
                [_evidence("run", first)],
            )
        )
    hits = {}
    for r in earlier:
        if _hit(r) and r.graph.get("hash"):
            hits.setdefault(r.graph["hash"], r)
    misses: dict[str, list[CompileReport]] = {}
    for r in reports:
        if _state(r, "fx_graph") != "miss" or r.outcome == FAILED:
            continue
        before = hits.get(r.graph.get("hash"))
        if before is None:
            why = "no earlier run in the store hit the cache for these graphs"
        else:
            parts = _differing(before, r, "fx_graph")
            why = (
                f"their cache key differs from an earlier hit in {', '.join(parts[:3])}"
                if parts
                else ("the same key as an earlier hit: another cache directory, or the entry was removed")
            )
        misses.setdefault(why, []).append(r)
    for why, rs in misses.items():
        out.append(
            Cause(
                "cache_miss",
                f"{_plural(len(rs), 'graph')} missed the FX graph cache ({why}), {_work(rs):.1f} s",
                _work(rs),
                [_graph(r) for r in rs],
                [_evidence("run", r) for r in rs[:3]],
            )
        )
    for r in reports:
        if r.outcome == FAILED and r.failure is not None:
            out.append(
                Cause(
                    "compile_failure",
                    f"{_graph(r)} failed to compile ({labels.outcome(r, fallback=True)}): "
                    f"{(r.failure.message or '').splitlines()[0][:100] if r.failure.message else 'no message'}",
                    work_s(r),
                    [_graph(r)],
                    [_evidence("run", r)],
                )
            )
    # Kernels that run slower or faster than in the earlier run of its name (both profiled) come first.
    out += runtime_causes(earlier, reports, subject="", against=" than in the earlier run", side="run")
    order = {"runtime_change": 0, "runtime_noise": 2}
    return sorted(out, key=lambda c: (order.get(c.cause, 1), -abs(c.seconds)))
