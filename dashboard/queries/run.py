"""Queries of the Run page: one run's summary cards, its environment, a row per graph, the
compile timeline (waterfall) and the failures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from dashboard.queries.shared import Source, as_counts, cached, store_at, when
from sandbox.analysis import labels
from sandbox.record import stages
from sandbox.record.report import CompileReport, Stage
from sandbox.store import Store

# The sandbox's own stages: what the run page's waterfall draws for every graph.
WATERFALL_STAGES = (*stages.OWN, stages.SWITCH)

# The bar of a graph that ran as is while it compiled in the background (async mode).
EAGER_BAR = "running eagerly"


def load_run(store: Store, run_id: str) -> tuple[dict[str, Any], list[CompileReport]]:
    return store.get_run(run_id), store.reports(run_id)


def run_start(run: Mapping[str, Any], reports: Sequence[CompileReport]) -> float:
    """Time zero of a run's timeline: its start, or its first compile if that came earlier."""
    starts = [r.started_at for r in reports] + [s.start for r in reports for s in r.stages]
    return min([float(run.get("started_at") or 0.0) or min(starts, default=0.0)] + starts)


def run_cards(run: Mapping[str, Any], reports: Sequence[CompileReport]) -> dict[str, Any]:
    """The numbers at the top of the run page."""
    counts = {k: 0 for k in ("isolated", "cache_hit", "in_process", "failed")}
    for r in reports:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    t0 = run_start(run, reports)
    end = max((r.started_at + r.duration_s for r in reports), default=t0)
    return {
        "graphs": len(reports),
        "compile_s": sum(r.duration_s for r in reports),
        "span_s": end - t0 if reports else 0.0,
        "isolated": counts["isolated"],
        "cache_hits": counts["cache_hit"],
        "cache_hit_ratio": counts["cache_hit"] / len(reports) if reports else None,
        "in_process": counts["in_process"],
        "failures": counts["failed"],
        "kernels": sum(len(r.kernels) for r in reports),
        "workers": len({r.worker_pid for r in reports if r.worker_pid}),
    }


def run_facts(run: Mapping[str, Any]) -> pd.DataFrame:
    """The run's environment, one row per fact that is set."""
    rows = [
        ("run id", run.get("run_id")),
        ("name", run.get("name")),
        ("tags", ", ".join(run.get("tags") or [])),
        ("started", when(run.get("started_at")).strftime("%Y-%m-%d %H:%M:%S") if run.get("started_at") else None),
        ("host", run.get("hostname")),
        ("pid", run.get("pid")),
        ("device", run.get("device")),
        ("torch", run.get("torch")),
        ("triton", run.get("triton")),
        ("cuda", run.get("cuda")),
        ("python", run.get("python")),
        ("sandbox", run.get("sandbox")),
        ("git revision", run.get("git_revision")),
        ("job", run.get("job")),
        ("rank", run.get("rank")),
        ("world size", run.get("world_size")),
        ("command", " ".join(run.get("argv") or []) or None),
    ]
    for key, value in sorted((run.get("inductor_config") or {}).items()):
        rows.append((f"inductor config: {key}", repr(value)))
    return pd.DataFrame([(k, str(v)) for k, v in rows if v not in (None, "")], columns=["", "value"])


def graph_rows(run: Mapping[str, Any], reports: Sequence[CompileReport]) -> pd.DataFrame:
    """One row per compiled graph: what, where, outcome, caches, isolation, when, how long."""
    t0 = run_start(run, reports)
    rows = []
    for r in reports:
        rows.append(
            {
                "graph": r.graph_index,
                "kind": r.graph_kind,
                "compile id": r.compile_id or "",
                "code": labels.code(r.co_name, r.filename, r.line),
                "outcome": labels.outcome(r),
                "caches": labels.caches(r, async_compile=True),
                "isolation": labels.isolation(r),
                "start s": r.started_at - t0,
                "compile s": r.duration_s,
                "kernels": len(r.kernels),
                "eager calls": r.eager_calls if r.background else None,
                "switch s": r.switched_at - t0 if r.switched_at else None,
            }
        )
    frame = pd.DataFrame(
        rows,
        columns=[
            "graph",
            "kind",
            "compile id",
            "code",
            "outcome",
            "caches",
            "isolation",
            "start s",
            "compile s",
            "kernels",
            "eager calls",
            "switch s",
        ],
    ).astype({"switch s": float})
    return as_counts(frame, "graph", "kernels", "eager calls")


def waterfall(run: Mapping[str, Any], reports: Sequence[CompileReport]) -> pd.DataFrame:
    """Bars of the run's timeline: per graph, the sandbox's own stages (or the whole
    compile when it has none, e.g. an AOTAutograd cache hit), seconds from the run's start."""
    t0 = run_start(run, reports)
    rows = []
    for r in reports:
        common = {
            "graph": labels.graph(r, index=True),
            "order": r.graph_index,
            "outcome": labels.outcome(r),
            "caches": labels.caches(r, async_compile=True),
            "isolation": labels.isolation(r),
        }
        bars = [s for s in r.stages if s.name in WATERFALL_STAGES and s.parent != "compile_in_worker"]
        if not bars:
            bars = [Stage(labels.outcome(r), r.started_at, r.started_at + r.duration_s)]
        if r.background == "async":
            # From the end of the compile call to the switch (or the last thing known).
            until = r.switched_at or r.ready_at or max([s.end for s in r.stages] + [r.started_at + r.duration_s])
            bars.append(Stage(EAGER_BAR, r.started_at + r.duration_s, until))
        for s in sorted(bars, key=lambda s: s.start):
            rows.append(
                dict(common, stage=s.name, origin=s.origin, start=s.start - t0, end=s.end - t0, seconds=s.duration_s)
            )
    return pd.DataFrame(
        rows, columns=["graph", "order", "stage", "origin", "start", "end", "seconds", "outcome", "caches", "isolation"]
    )


def failures(reports: Sequence[CompileReport]) -> list[dict[str, Any]]:
    out = []
    for r in reports:
        f = r.failure
        if f is None:
            continue
        out.append(
            {
                "graph": labels.graph(r, index=True),
                "code": labels.code(r.co_name, r.filename, r.line),
                "kind": f.kind,
                "message": (f.message or "").strip() or "(no message)",
                "signal": f.signal,
                "exit_code": f.exit_code,
                "worker_pid": f.worker_pid or r.worker_pid,
                "fallback": {"eager": "ran eagerly instead", "in_process": "compiled in-process instead"}.get(
                    r.fallback or "", "the error was raised"
                ),
                "log_tail": list(f.log_tail),
                "traceback": f.traceback,
            }
        )
    return out


# -- cached entry points -------------------------------------------------------------------------


@cached
def cached_run(src: Source, run_id: str) -> tuple[dict[str, Any], list[CompileReport]]:
    return load_run(store_at(src.location), run_id)
