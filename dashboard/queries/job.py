"""Queries of the Job page: the ranks of one job side by side (``sandbox.analysis.jobs``):
graphs that diverge across ranks, stragglers, and an earlier job beside it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from dashboard.queries.shared import Source, cached, store_at, when
from sandbox.analysis import jobs, labels
from sandbox.store import Store

FINDING_WORDS = {
    "graph": "a different graph",
    "missing": "missing on some ranks",
    "cache": "different cache outcomes",
    "kernels": "different kernels",
    "straggler": "a straggler",
}


def jobs_frame(store: Store) -> pd.DataFrame:
    """Every job in the store, newest first (``sandbox.jobs.jobs``)."""
    rows = jobs.jobs(store.runs())
    frame = pd.DataFrame(
        rows, columns=["job", "ranks", "world_size", "runs", "names", "hosts", "started_at", "compile_s", "graphs"]
    )
    frame["started"] = [when(t) for t in frame["started_at"]]
    frame["names"] = [", ".join(n) for n in frame["names"]]
    frame["hosts"] = [", ".join(h) for h in frame["hosts"]]
    return frame


def job_label(row: Mapping[str, Any]) -> str:
    started = when(row.get("started_at"))
    names = f" {row['names']}" if row.get("names") else ""
    return f"{row['job']}{names} · {row['ranks']} ranks · {started:%Y-%m-%d %H:%M}" if started else str(row["job"])


def previous_job(frame: pd.DataFrame, job: str) -> str | None:
    """The job to compare with by default: the newest earlier job of the same run name, else the one before."""
    rows = [dict(r, names=[n for n in str(r["names"]).split(", ") if n]) for r in frame.to_dict("records")]
    return jobs.previous_job(job, rows)


def job_report(store: Store, job: str, against: str | None = None) -> jobs.JobReport:
    earlier = (against, store.runs(job=against)) if against else None
    return jobs.analyse_job(job, store.runs(job=job), store.reports, earlier=earlier)


def job_cards(report: jobs.JobReport) -> dict[str, Any]:
    slowest = max(report.runs, key=lambda r: r.compile_s)
    return {
        "ranks": len(report.runs),
        "world_size": report.world_size,
        "graphs": len(report.graphs),
        "divergent": len(report.divergent),
        "stragglers": sorted(
            {r for g in report.graphs for r in g.stragglers} | {r.rank for r in report.runs if r.straggler}
        ),
        "slowest_rank": slowest.rank,
        "slowest_s": slowest.compile_s,
        "median_s": report.median_compile_s,
    }


def job_rank_rows(report: jobs.JobReport) -> pd.DataFrame:
    rows = [
        {
            "rank": r.rank,
            "run_id": r.run_id,
            "host": r.hostname,
            "pid": r.pid,
            "started": when(r.started_at),
            "graphs": r.graphs,
            "compile s": r.compile_s,
            "cache hits": r.cache_hits,
            "failures": r.failures,
            "straggler": r.straggler,
            "restarts": r.restarts,
            "waited for": r.waited_graphs,
            "waited s": r.flight_wait_s,
            "served": r.served_graphs,
        }
        for r in report.runs
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "rank",
            "run_id",
            "host",
            "pid",
            "started",
            "graphs",
            "compile s",
            "cache hits",
            "failures",
            "straggler",
            "restarts",
            "waited for",
            "waited s",
            "served",
        ],
    )


def _ranks_text(ranks: Sequence[int]) -> str:
    return ", ".join(str(r) for r in ranks)


def job_graph_rows(report: jobs.JobReport) -> pd.DataFrame:
    """One row per graph: what diverges across the ranks."""
    rows = []
    for i, g in enumerate(report.graphs):
        rows.append(
            {
                "g": i,
                "graph": labels.code(g.co_name, g.filename, g.line) + (f" #{g.order}" if g.order else ""),
                "kind": g.graph_kind,
                "divergence": ", ".join(FINDING_WORDS[f] for f in g.findings),
                "ranks": len(g.ranks),
                "graph hashes": len(g.hash_groups),
                "cache outcomes": " | ".join(f"{label}: {_ranks_text(rs)}" for label, rs in g.cache_groups.items()),
                "kernels differ on": _ranks_text(g.kernel_ranks),
                "stragglers": _ranks_text(g.stragglers),
                "missing on": _ranks_text(g.missing),
                "compiled on": _ranks_text(g.compiled_on),
                "waited": "; ".join(f"{r.rank} ({r.waited_s or 0.0:.2f} s)" for r in g.ranks if r.shared == "waited"),
                "median s": g.median_s,
                "slowest s": max(r.duration_s for r in g.ranks),
                "diverges": bool(g.findings),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "g",
            "graph",
            "kind",
            "divergence",
            "ranks",
            "graph hashes",
            "cache outcomes",
            "kernels differ on",
            "stragglers",
            "missing on",
            "compiled on",
            "waited",
            "median s",
            "slowest s",
            "diverges",
        ],
    )


def job_graph_ranks(report: jobs.JobReport, g: int) -> pd.DataFrame:
    """One graph, a row per rank."""
    graph = report.graphs[g]
    run_ids = {r.rank: r.run_id for r in report.runs}
    rows = []
    for r in graph.ranks:
        c = r.kernel_changes
        rows.append(
            {
                "rank": r.rank,
                "compile id": r.compile_id,
                "outcome": r.outcome,
                "caches": r.cache,
                "graph hash": (r.graph_hash or "")[:16],
                "time s": r.duration_s,
                "kernels": r.kernels,
                "kernels vs lowest rank": ""
                if c is None
                else f"+{c['added']} -{c['removed']} ~{c['changed']} ={c['unchanged']}",
                "straggler": r.straggler,
                "shared": _shared(r),
                "run_id": run_ids.get(r.rank),
                "graph_index": r.graph_index,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "rank",
            "compile id",
            "outcome",
            "caches",
            "graph hash",
            "time s",
            "kernels",
            "kernels vs lowest rank",
            "straggler",
            "shared",
            "run_id",
            "graph_index",
        ],
    )


def _shared(r: jobs.RankGraph) -> str:
    """One rank's side of a shared compile, in words."""
    if r.shared == "waited":
        by = "a process of no rank of this job" if r.compiled_by is None else f"rank {r.compiled_by}"
        return f"waited {r.waited_s or 0.0:.2f} s for {by} ({r.via or '?'})"
    if r.shared == "compiled":
        return f"compiled ({r.via or '?'})"
    return r.shared or ""


def job_verdict(report: jobs.JobReport) -> list[str]:
    """What a reader should know first, in sentences."""
    cards = job_cards(report)
    lines = []
    if report.missing_ranks:
        lines.append(f"Ranks {_ranks_text(report.missing_ranks)} of {report.world_size} have no run in this store.")
    divergent = report.divergent
    if not divergent:
        lines.append(f"All {cards['ranks']} ranks compiled the same {cards['graphs']} graphs the same way.")
    else:
        counts = ", ".join(f"{n} with {FINDING_WORDS[f]}" for f, n in report.counts.items() if n)
        lines.append(f"{len(divergent)} of {cards['graphs']} graphs differ across ranks: {counts}.")
    if report.shared_graphs:
        longest = max((r.waited_s or 0.0 for g in report.graphs for r in g.ranks if r.shared == "waited"), default=0.0)
        compilers = sorted({r for g in report.graphs if g.waited for r in g.compiled_on})
        lines.append(
            f"{report.compiles} compiles for {cards['graphs']} graphs on {cards['ranks']} ranks: "
            f"{report.shared_graphs} graph(s) compiled once "
            + (f"(on rank {_ranks_text(compilers)}) " if compilers else "(on another host) ")
            + f"while the other ranks waited for them, at most {longest:.2f} s."
        )
    for g in divergent:
        where = labels.code(g.co_name, g.filename, g.line) + f" {g.graph_kind}"
        if "graph" in g.findings:
            groups = "; ".join(f"ranks {_ranks_text(rs)}" for rs in g.hash_groups)
            lines.append(f"{where}: the ranks traced different graphs (other shapes or guards): {groups}.")
        if "straggler" in g.findings:
            durations = {r.rank: r.duration_s for r in g.ranks}
            slow = ", ".join(
                f"rank {r.rank} took {r.duration_s:.2f} s against the other ranks' median of "
                f"{jobs.others_median(durations, r.rank):.2f} s"
                for r in g.ranks
                if r.straggler
            )
            lines.append(f"{where}: a straggler: {slow}.")
    slow_ranks = [r for r in report.runs if r.straggler]
    if slow_ranks:
        lines.append(
            "Slowest overall: "
            + ", ".join(f"rank {r.rank} ({r.compile_s:.2f} s)" for r in slow_ranks)
            + f", against a median of {report.median_compile_s:.2f} s per rank."
        )
    if report.against is not None:
        a = report.against
        before, now = a.compile_s
        lines.append(
            f"Against {a.earlier}: the slowest rank compiled {before:.2f} s then, {now:.2f} s now"
            f" ({now - before:+.2f} s)."
        )
        changed = [g for g in a.graphs if g.hash_changed or g.status != "matched"]
        if changed:
            lines.append(f"{len(changed)} graph(s) new, gone or traced differently since {a.earlier}.")
    return lines


def job_against_rows(report: jobs.JobReport) -> pd.DataFrame:
    a = report.against
    rows = (
        []
        if a is None
        else [
            {
                "rank": r.rank,
                "then s": r.compile_s[0],
                "now s": r.compile_s[1],
                "delta s": r.compile_s[1] - r.compile_s[0],
                "graphs matched": r.graphs["matched"],
                "graphs new": r.graphs["added"],
                "graphs gone": r.graphs["removed"],
                "kernels changed": r.kernels["changed"],
                "kernels new": r.kernels["added"],
                "kernels gone": r.kernels["removed"],
                "environment": ", ".join(sorted(r.environment)),
                "then": r.earlier_run,
                "now": r.run,
            }
            for r in a.ranks
        ]
    )
    return pd.DataFrame(
        rows,
        columns=[
            "rank",
            "then s",
            "now s",
            "delta s",
            "graphs matched",
            "graphs new",
            "graphs gone",
            "kernels changed",
            "kernels new",
            "kernels gone",
            "environment",
            "then",
            "now",
        ],
    )


def job_against_graph_rows(report: jobs.JobReport) -> pd.DataFrame:
    a = report.against
    rows = (
        []
        if a is None
        else [
            {
                "graph": labels.code(g.co_name, g.filename, g.line) + (f" #{g.order}" if g.order else ""),
                "kind": g.graph_kind,
                "status": {"matched": "in both", "added": "new", "removed": "gone"}[g.status],
                "then s (median)": g.earlier_s,
                "now s (median)": g.now_s,
                "graph changed": g.hash_changed,
            }
            for g in a.graphs
        ]
    )
    return pd.DataFrame(rows, columns=["graph", "kind", "status", "then s (median)", "now s (median)", "graph changed"])


# -- cached entry points -------------------------------------------------------------------------


@cached
def cached_jobs(src: Source) -> pd.DataFrame:
    return jobs_frame(store_at(src.location))


@cached
def cached_job(src: Source, job: str, against: str | None = None) -> jobs.JobReport:
    return job_report(store_at(src.location), job, against)
