"""Terminal rendering of runs, reports and run comparisons: pure functions, text out.

Nothing here reads a store or writes to a stream; ``sandbox/cli/main.py`` does both. Store text is
untrusted: each value is put on one line of printable text (:func:`sandbox.cli.safe_text.printable`:
table cells, :func:`shorten`, :func:`text`) before it is laid out, and main's stream escapes any
control character that is left.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sandbox.analysis import labels
from sandbox.cli.safe_text import printable as text
from sandbox.record.report import CompileReport
from sandbox.record.stages import self_times

# -- primitives ---------------------------------------------------------------------------


def shorten(value: Any, n: int = 60) -> str:
    """On one printable line, cut to ``n`` characters."""
    s = text(value)
    return s if len(s) <= n else s[: max(n - 3, 0)] + "..."


def table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Iterable[int] = ()) -> str:
    """Columns two spaces apart, padded to the widest cell; ``right``: column indices to right-align."""
    rows = [[text(c) for c in r] for r in rows]
    right = set(right)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def when(ts: float | None) -> str:
    """A unix time as local ``YYYY-MM-DD HH:MM:SS``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def seconds(s: float | None, digits: int = 2) -> str:
    return "-" if s is None else f"{s:.{digits}f}"


def signed(x: float | int | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and digits == 0):
        return f"{int(x):+d}"
    return f"{x:+.{digits}f}"


def short_id(run_id: str | None) -> str:
    return text(run_id or "-")[:12]


def code_label(report: CompileReport) -> str:
    return text(labels.code(report.co_name, report.filename, report.line))


# -- stages -------------------------------------------------------------------------------


def top_stages(report: CompileReport, n: int = 3) -> list[tuple[str, float]]:
    """The ``n`` stages where the graph spent the most of its own time."""
    ranked = sorted(self_times(report.stages), key=lambda p: -p[1])
    return [(s.name, t) for s, t in ranked[:n] if t > 0]


# -- runs ---------------------------------------------------------------------------------


def runs_table(runs: Sequence[dict[str, Any]]) -> str:
    if not runs:
        return "no runs match"
    rows = []
    for r in runs:
        s = r.get("summary") or {}
        ratio = s.get("cache_hit_ratio")
        rows.append(
            [
                short_id(r["run_id"]),
                when(r.get("started_at")),
                shorten(r.get("name") or "-", 24),
                shorten(",".join(r.get("tags") or []) or "-", 24),
                str(s.get("graphs", 0)),
                str(s.get("isolated", 0)),
                "-" if ratio is None else f"{ratio:.0%}",
                str(s.get("failures", 0)),
                seconds(s.get("compile_s", 0.0), 1),
                shorten(r.get("torch") or "-", 24),
                shorten(r.get("device") or "-", 24),
                shorten(r.get("hostname") or "-", 24),
            ]
        )
    header = [
        "run",
        "started",
        "name",
        "tags",
        "graphs",
        "isolated",
        "hits",
        "failed",
        "compile s",
        "torch",
        "device",
        "host",
    ]
    return table(header, rows, right=range(4, 9))


def run_header(run: dict[str, Any], reports: Sequence[CompileReport]) -> str:
    name = f"  {run['name']!r}" if run.get("name") else ""
    tags = f"  tags: {text(', '.join(run['tags']))}" if run.get("tags") else ""
    lines = [f"run {text(run['run_id'])}{name}{tags}"]
    lines.append(
        f"  started {when(run.get('started_at'))} on {text(run.get('hostname') or '?')}, "
        f"pid {text(run.get('pid') or '?')}"
    )
    versions = ", ".join(f"{k} {text(run.get(k) or '-')}" for k in ("torch", "triton", "python", "cuda"))
    lines.append(f"  {versions}; device {text(run.get('device') or '-')}")
    extras = []
    if run.get("git_revision"):
        extras.append(f"git {text(run['git_revision'])[:12]}")
    if run.get("job") or run.get("rank") is not None:
        extras.append(text(f"job {run.get('job') or '-'} rank {run.get('rank')}/{run.get('world_size')}"))
    if run.get("argv"):
        extras.append("argv " + shorten(" ".join(run["argv"]), 60))
    if extras:
        lines.append("  " + "; ".join(extras))
    if run.get("inductor_config"):
        config = ", ".join(f"{k}={v!r}" for k, v in sorted(run["inductor_config"].items()))
        lines.append("  inductor config: " + shorten(config, 200))
    counts = dict.fromkeys(labels.OUTCOMES, 0)
    for r in reports:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    total = sum(r.duration_s for r in reports)
    lines.append(
        f"  {len(reports)} graphs: {counts['isolated']} isolated, {counts['cache_hit']} cache hits, "
        f"{counts['in_process']} in-process, {counts['failed']} failed; {total:.2f} s compiling"
    )
    return "\n".join(lines)


def show(run: dict[str, Any], reports: Sequence[CompileReport]) -> str:
    """``sandbox show``: the run, a row per graph, then every failure."""
    out = [run_header(run, reports), ""]
    if not reports:
        out.append("no graphs were compiled in this run")
        return "\n".join(out)
    rows = []
    for r in reports:
        top = ", ".join(f"{name} {t:.2f}" for name, t in top_stages(r))
        rows.append(
            [
                str(r.graph_index),
                labels.graph(r),
                shorten(code_label(r), 40),
                labels.outcome(r),
                str(r.worker_pid) if r.worker_pid else "-",
                seconds(r.duration_s),
                shorten(top or "-", 80),
                labels.caches(r),
                str(len(r.kernels)),
            ]
        )
    header = ["#", "graph", "code", "outcome", "worker pid", "time s", "top stages (own s)", "caches", "kernels"]
    out.append(table(header, rows, right=(0, 4, 5, 8)))
    notes = [r for r in reports if r.reason and r.outcome == "in_process"]
    for r in notes:
        out.append(text(f"  #{r.graph_index} ran in-process: {r.reason}"))
    failed = [r for r in reports if r.failure is not None]
    if failed:
        out.append("")
        out.append(f"{len(failed)} failure(s):")
        for r in failed:
            out.extend(failure(r))
    return "\n".join(out)


def failure(r: CompileReport) -> list[str]:
    f = r.failure
    assert f is not None
    how = [x for x in (f.signal, f"exit code {f.exit_code}" if f.exit_code is not None else None) if x]
    pid = f.worker_pid or r.worker_pid
    if pid:
        how.append(f"worker {pid}")
    fallback = {"eager": "ran eagerly instead", "in_process": "compiled in-process instead"}.get(
        r.fallback or "", "raised"
    )
    lines = [
        text(
            f"  #{r.graph_index} {labels.graph(r)} at {code_label(r)}: {f.kind}"
            + (f" ({', '.join(how)})" if how else "")
        )
    ]
    message = (f.message or "").strip().splitlines()
    lines.append(f"      {shorten(message[0], 160) if message else '(no message)'}; {fallback}")
    for line in f.log_tail[-3:]:
        lines.append(f"      | {shorten(line, 150)}")
    return lines


# -- causes ---------------------------------------------------------------------------------

# ``sandbox diff`` names this many causes; ``--json`` has them all.
MAX_CAUSES = 5
NO_CAUSE = "nothing explains a difference: the same graphs, caches, config and versions"
NOTHING_TO_EXPLAIN = "nothing to explain: no graph break, recompile, FX graph cache miss or failure"


def cause_lines(found: Sequence[Any], limit: int | None = None, more: str = "") -> list[str]:
    """One numbered line per cause (a :class:`sandbox.analysis.causes.Cause`), at most ``limit``,
    then how many were left out."""
    shown = list(found if limit is None else found[:limit])
    lines = [f"  {i}. {text(c.text)}" for i, c in enumerate(shown, 1)]
    if len(found) > len(shown):
        lines.append(f"  ... and {len(found) - len(shown)} more{more}")
    return lines


def explain(
    run: dict[str, Any], reports: Sequence[CompileReport], earlier: dict[str, Any] | None, found: Sequence[Any]
) -> str:
    """``sandbox explain``: one run's causes, largest first."""
    name = f" {run['name']!r}" if run.get("name") else ""
    total = sum(r.duration_s for r in reports)
    out = [
        f"run {short_id(run['run_id'])}{name}  {when(run.get('started_at'))}  ({len(reports)} graphs, {total:.2f} s)"
    ]
    if earlier is not None:
        out.append(
            f"  cache misses judged against the earlier run {short_id(earlier['run_id'])} "
            f"({when(earlier.get('started_at'))})"
        )
    elif run.get("name"):
        out.append(f"  no earlier run named {run['name']!r} to judge cache misses against")
    out.append("")
    if not found:
        out.append(NOTHING_TO_EXPLAIN)
        return "\n".join(out)
    out.append("why it compiled like this, largest first:")
    out.extend(cause_lines(found))
    return "\n".join(out)


# -- comparisons ----------------------------------------------------------------------------


def _run_line(label: str, side: dict[str, Any]) -> str:
    name = f" {side['name']!r}" if side.get("name") else ""
    return (
        f"{label}  {short_id(side['run_id'])}{name}  {when(side.get('started_at'))}  "
        f"torch {text(side.get('torch') or '-')}"
        f"  ({side['graphs']} graphs, {side['compile_s']:.2f} s)"
    )


def _pct(a: float, b: float) -> str:
    return f", {(b - a) / a:+.0%}" if a else ""


def diff(d: Any, found: Sequence[Any] | None = None, stages: int = 10, metrics: int = 15) -> str:
    """``sandbox diff``: a :class:`sandbox.analysis.diff.RunDiff` for the terminal, its causes
    (``found``: :class:`sandbox.analysis.causes.Cause`, ranked) first."""
    out = [_run_line("A", d.a), _run_line("B", d.b)]
    if found is not None:
        out.append("")
        if found:
            out.append("why:")
            out.extend(cause_lines(found, MAX_CAUSES, " (sandbox diff --json lists them all)"))
        else:
            out.append(f"why: {NO_CAUSE}")
        if d.environment:
            out.append("")
            out.append("what differs:")
    for key, (va, vb) in sorted(d.environment.items()):
        out.append(f"  {text(key)}: {va!r} -> {vb!r}")
    g, k = d.graphs, d.kernels
    out.append("")
    out.append(f"graphs:  {g['matched']} matched, {g['added']} added, {g['removed']} removed")
    out.append(
        f"kernels: {k['added']} added, {k['removed']} removed, {k['changed']} changed, {k['unchanged']} unchanged"
    )
    ta, tb = d.a["compile_s"], d.b["compile_s"]
    out.append(f"compile time: {ta:.2f} s -> {tb:.2f} s ({tb - ta:+.2f} s{_pct(ta, tb)})")
    wa, wb = d.a.get("wait_s", 0.0), d.b.get("wait_s", 0.0)
    if wa or wb:  # kept apart from compile work: a wait says how busy the workers were, not the compile
        out.append(f"waiting for a worker: {wa:.2f} s -> {wb:.2f} s ({wb - wa:+.2f} s)")

    rows = []
    for gd in d.graph_changes:
        ra, rb = gd.a or {}, gd.b or {}
        if gd.status == "matched":
            oc = ra["outcome"] if ra["outcome"] == rb["outcome"] else f"{ra['outcome']} -> {rb['outcome']}"
        else:
            oc = (rb or ra)["outcome"]
        counts = gd.kernel_counts()
        kern = (
            f"+{counts['added']} -{counts['removed']} ~{counts['changed']}"
            if gd.kernels_compared
            else "n/a (no inventory)"
        )
        rows.append(
            [
                {"matched": " ", "added": "+", "removed": "-"}[gd.status],
                shorten(change_label(gd), 48),
                oc.replace("_", "-"),
                seconds(ra.get("work_s", ra.get("duration_s"))),
                seconds(rb.get("work_s", rb.get("duration_s"))),
                signed(gd.duration_delta_s) if gd.status == "matched" else "-",
                kern,
            ]
        )
    if rows:
        out.append("")
        out.append(table(["", "graph", "outcome", "A work s", "B work s", "delta s", "kernels"], rows, right=(3, 4, 5)))

    changes = [(gd, kc) for gd in d.graph_changes for kc in gd.kernels if kc.status != "unchanged"]
    if changes:
        out.append("")
        out.append("kernel changes:")
        current = None
        for gd, kc in changes:
            if gd is not current:
                current = gd
                out.append(f"  {change_label(gd)}")
            out.append("    " + kernel_change(kc))

    if d.stage_deltas and stages:
        out.append("")
        out.append("stage time, largest changes (own seconds, less nested stages; all graphs):")
        rows = [
            [
                s["stage"] + (" [worker]" if s["origin"] == "worker" else ""),
                seconds(s["a_s"]),
                seconds(s["b_s"]),
                signed(s["delta_s"]),
            ]
            for s in d.stage_deltas[:stages]
        ]
        out.append(table(["stage", "A", "B", "delta"], rows, right=(1, 2, 3)))
    if d.metric_deltas and metrics:
        out.append("")
        out.append("metrics that changed (all graphs):")
        rows = [
            [m["metric"], _num(m["a"]), _num(m["b"]), _num(m["delta"], sign=True)] for m in d.metric_deltas[:metrics]
        ]
        out.append(table(["metric", "A", "B", "delta"], rows, right=(1, 2, 3)))
    return "\n".join(out)


def change_label(gd: Any) -> str:
    """``forward (model.py:20) backward``; ``#1`` and up for later graphs of the same code."""
    where = f"{os.path.basename(gd.filename)}:{gd.line}" if gd.filename else "?"
    return text(f"{gd.co_name or '?'} ({where}) {gd.graph_kind}" + (f" #{gd.order}" if gd.order else ""))


def _num(x: float | int, sign: bool = False) -> str:
    if isinstance(x, float) and not x.is_integer():
        return f"{x:+.3g}" if sign else f"{x:.3g}"
    return f"{int(x):+d}" if sign else str(int(x))


def kernel_change(kc: Any) -> str:
    mark = {"added": "+", "removed": "-", "changed": "~", "unchanged": "="}[kc.status]
    if kc.status == "added":
        return text(f"{mark} {kc.name_b} ({kc.kind}, {kc.lines_b} lines)")
    if kc.status == "removed":
        return text(f"{mark} {kc.name_a} ({kc.kind}, {kc.lines_a} lines)")
    name = kc.name_a if kc.name_a == kc.name_b else f"{kc.name_a} -> {kc.name_b}"
    what = []
    if kc.source_changed:
        what.append("source" + (f" {kc.similarity:.0%} similar" if kc.similarity is not None else " changed"))
    if kc.lines_a != kc.lines_b:
        what.append(f"lines {kc.lines_a} -> {kc.lines_b}")
    for field, (va, vb) in sorted(kc.fields.items()):
        what.append(f"{field} {va!r} -> {vb!r}")
    return text(f"{mark} {name} ({'; '.join(what) or kc.kind})")


def gc(deleted: Sequence[str], left: int, location: str) -> str:
    location = text(location)
    if not deleted:
        return f"nothing to delete; {left} runs in {location}"
    ids = ", ".join(short_id(r) for r in deleted[:5]) + (", ..." if len(deleted) > 5 else "")
    return f"deleted {len(deleted)} run(s) ({ids}); {left} left in {location}"
