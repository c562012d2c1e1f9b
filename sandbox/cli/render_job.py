"""Terminal rendering of ``sandbox job``: a job's ranks side by side, and the jobs in a store.

Pure functions, text out, with ``render.py``'s primitives; store text goes through the same
one-line printable form (:func:`sandbox.cli.safe_text.printable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sandbox.analysis.jobs import STRAGGLER_FACTOR, STRAGGLER_MIN_S, others_median
from sandbox.cli.render import change_label, seconds, short_id, shorten, signed, table, when
from sandbox.cli.safe_text import printable as text


def pct(a: float, b: float) -> str:
    return f", {(b - a) / a:+.0%}" if a else ""


def _ranks(ranks: Sequence[int]) -> str:
    return text(", ".join(str(r) for r in ranks) or "-")


def _finding_lines(g: Any) -> list[str]:
    """What diverges in one graph across ranks, in words."""
    out = []
    if "graph" in g.findings:
        groups = "; ".join(f"ranks {_ranks(rs)}" for rs in g.hash_groups)
        out.append(f"different graphs (graph hash): {groups}")
    if "missing" in g.findings:
        out.append(f"not compiled on ranks {_ranks(g.missing)}")
    if "cache" in g.findings:
        out.append(
            "cache outcomes: "
            + "; ".join(f"{text(label)} on ranks {_ranks(rs)}" for label, rs in g.cache_groups.items())
        )
    if "kernels" in g.findings:
        ref = g.ranks[0].rank
        parts = []
        for row in g.ranks:
            if row.rank in g.kernel_ranks and row.kernel_changes:
                c = row.kernel_changes
                parts.append(f"rank {row.rank} +{c['added']} -{c['removed']} ~{c['changed']}")
        out.append(f"kernels differ from rank {ref}'s: " + "; ".join(parts))
    if "straggler" in g.findings:
        durations = {row.rank: row.duration_s for row in g.ranks}
        out.append(
            "stragglers: "
            + "; ".join(
                f"rank {row.rank} {row.duration_s:.2f} s (the other ranks' median "
                f"{others_median(durations, row.rank):.2f} s)"
                for row in g.ranks
                if row.straggler
            )
        )
    return out


def sharing(g: Any) -> str | None:
    """Who compiled a graph that ranks shared, and who waited for it: None when nobody waited."""
    if not g.waited:
        return None
    waits = []
    for row in g.ranks:
        if row.shared != "waited":
            continue
        by = f"rank {row.compiled_by}" if row.compiled_by is not None else "a process of no rank of this job"
        host = f" on {text(row.compiled_by_host)}" if row.via == "redis" and row.compiled_by_host else ""
        waits.append(f"rank {row.rank} {seconds(row.waited_s)} s for {by}{host} ({text(row.via or '?')})")
    compiled = f"compiled on rank {_ranks(g.compiled_on)}" if g.compiled_on else "compiled on no rank of this job"
    return f"{compiled}; waited: " + "; ".join(waits)


def _shared_cell(row: Any) -> str:
    if row.shared == "waited":
        by = "another job's process" if row.compiled_by is None else f"rank {row.compiled_by}"
        return f"waited {seconds(row.waited_s)} s for {by}"
    if row.shared == "compiled":
        return f"compiled ({text(row.via or '?')})"
    return text(row.shared or "-")


def job(report: Any, all_graphs: bool = False) -> str:
    """``sandbox job``: a :class:`sandbox.analysis.jobs.JobReport` for the terminal."""
    hosts = sorted({r.hostname for r in report.runs if r.hostname})
    size = f"world size {report.world_size}" if report.world_size else "world size unknown"
    out = [
        text(f"job {report.job}: {len(report.runs)} ranks ({size}) on {len(hosts)} host(s): {', '.join(hosts) or '-'}")
    ]
    if report.missing_ranks:
        out.append(f"  ranks with no run in the store: {_ranks(report.missing_ranks)}")
    rows = []
    for r in report.runs:
        notes = []
        if r.straggler:
            notes.append("straggler")
        if r.restarts:
            notes.append(f"{r.restarts} earlier run(s): restarted")
        if r.waited_graphs:
            notes.append(f"waited for {r.waited_graphs} graph(s) compiled elsewhere, {r.flight_wait_s:.2f} s")
        if r.served_graphs:
            notes.append(f"compiled {r.served_graphs} graph(s) others waited for")
        rows.append(
            [
                str(r.rank),
                short_id(r.run_id),
                r.hostname or "-",
                str(r.pid or "-"),
                str(r.graphs),
                str(r.cache_hits),
                str(r.failures),
                seconds(r.compile_s),
                ", ".join(notes),
            ]
        )
    out.append("")
    out.append(
        table(
            ["rank", "run", "host", "pid", "graphs", "hits", "failed", "compile s", "note"], rows, right=(0, 4, 5, 6, 7)
        )
    )

    c = report.counts
    divergent = report.divergent
    shared = [g for g in report.graphs if g.waited]
    out.append("")
    out.append(
        f"compiles: {report.compiles} for {len(report.graphs)} graphs on {len(report.runs)} ranks; "
        f"{report.shared_graphs} graph(s) compiled once for several ranks"
        + ("" if report.shared_graphs else " (no rank waited for another's compile)")
    )
    for g in shared if not all_graphs else []:
        out.append(f"  {change_label(g)}: {sharing(g)}")
    out.append("")
    out.append(
        f"divergence: {len(divergent)} of {len(report.graphs)} graphs differ across ranks "
        f"(different graph {c['graph']}, missing {c['missing']}, cache {c['cache']}, kernels {c['kernels']}, "
        f"straggler {c['straggler']})"
    )
    out.append(
        f"  a straggler took more than {STRAGGLER_FACTOR:g}x the median of the other ranks, "
        f"and at least {STRAGGLER_MIN_S:g} s more"
    )
    for g in report.graphs if all_graphs else divergent:
        out.append("")
        out.append(f"{change_label(g)}: {text(', '.join(g.findings) or 'the same on every rank')}")
        for line in _finding_lines(g):
            out.append(f"  {line}")
        if sharing(g):
            out.append(f"  {sharing(g)}")
        rows = []
        for row in g.ranks:
            kern = (
                "-"
                if row.kernel_changes is None
                else f"+{row.kernel_changes['added']} -{row.kernel_changes['removed']} ~{row.kernel_changes['changed']}"
            )
            rows.append(
                [
                    str(row.rank),
                    row.compile_id or "?",
                    row.cache,
                    (row.graph_hash or "-")[:12],
                    seconds(row.duration_s),
                    str(row.kernels),
                    kern,
                    _shared_cell(row),
                    "straggler" if row.straggler else "",
                ]
            )
        rendered = table(
            ["rank", "compile id", "outcome: caches", "graph hash", "time s", "kernels", "vs ref", "shared", "note"],
            rows,
            right=(0, 4, 5),
        )
        out.extend("  " + line for line in rendered.splitlines())

    a = report.against
    if a is not None:
        out.append("")
        ta, tb = a.compile_s
        out.append(
            f"against earlier job {text(a.earlier)}: "
            f"slowest rank {ta:.2f} s -> {tb:.2f} s ({tb - ta:+.2f} s{pct(ta, tb)})"
        )
        if a.only_earlier or a.only_now:
            out.append(f"  ranks only then: {_ranks(a.only_earlier)}; only now: {_ranks(a.only_now)}")
        rows = []
        for r in a.ranks:
            g, k = r.graphs, r.kernels
            rows.append(
                [
                    str(r.rank),
                    short_id(r.earlier_run),
                    short_id(r.run),
                    seconds(r.compile_s[0]),
                    seconds(r.compile_s[1]),
                    f"{g['matched']} / +{g['added']} / -{g['removed']}",
                    f"+{k['added']} -{k['removed']} ~{k['changed']} ={k['unchanged']}",
                    shorten(", ".join(sorted(r.environment)) or "-", 50),
                ]
            )
        out.append(
            table(["rank", "then", "now", "then s", "now s", "graphs", "kernels", "environment"], rows, right=(0, 3, 4))
        )
        rows = []
        for g in a.graphs:
            delta = signed(g.now_s - g.earlier_s) if g.earlier_s is not None and g.now_s is not None else "-"
            rows.append(
                [
                    {"matched": " ", "added": "+", "removed": "-"}[g.status],
                    shorten(change_label(g), 48),
                    seconds(g.earlier_s),
                    seconds(g.now_s),
                    delta,
                    "graph changed" if g.hash_changed else "",
                ]
            )
        out.append("")
        out.append("graphs (median compile time across ranks):")
        out.append(table(["", "graph", "then s", "now s", "delta s", ""], rows, right=(2, 3, 4)))
    return "\n".join(out)


def jobs_table(jobs: Sequence[dict[str, Any]]) -> str:
    """``sandbox job`` without a job: the jobs in the store, newest first."""
    if not jobs:
        return "no run in this store belongs to a job (set SANDBOX_JOB, or run under torchrun)"
    rows = [
        [
            j["job"],
            when(j["started_at"]),
            str(j["ranks"]),
            str(j["world_size"] or "-"),
            str(j["runs"]),
            shorten(", ".join(j["names"]) or "-", 24),
            shorten(", ".join(j["hosts"]) or "-", 30),
            str(j["graphs"]),
            seconds(j["compile_s"], 1),
        ]
        for j in jobs
    ]
    return table(
        ["job", "started", "ranks", "world", "runs", "names", "hosts", "graphs", "compile s"],
        rows,
        right=(2, 3, 4, 7, 8),
    )
