"""Queries of the causes the Compare and Run pages name first (``sandbox.analysis.causes``): why
run B compiled differently from run A, and why one run compiled what it did; each cause with the
places its evidence points at (a graph, a kernel, a setting, a stage) and as one line of markdown
whose store text is escaped."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dashboard.queries.compare import environment_rows
from dashboard.queries.run import cached_run
from dashboard.queries.runs import cached_runs
from dashboard.queries.shared import Source, cached, escape_markdown
from sandbox.analysis.causes import Cause, explain
from sandbox.analysis.diff import RunDiff
from sandbox.analysis.run_causes import explain_run

# The Compare page shows this many causes at once; the rest are one click away.
SHOWN = 5
NO_CAUSE = "Nothing explains a difference: the same graphs, caches, config and versions."
NOTHING_TO_EXPLAIN = "Nothing to explain: no graph break, recompile, FX graph cache miss or failure."

# Anchors of the Compare page's sections that evidence points at.
DIFFERENCES = "differences"
KERNELS = "kernels"
STAGES = "stage-time"


@dataclass(frozen=True)
class Link:
    """Where a piece of evidence is: a page (a title of ``dashboard.ui.PAGES``) with query
    parameters, or, with ``page`` None, a section of the page the cause is on."""

    label: str
    page: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    anchor: str | None = None


# -- which run is which --------------------------------------------------------------------------------


def earlier_of(runs: pd.DataFrame, run_id: str) -> str | None:
    """The newest run of the same name that started before ``run_id``: what its cache misses are
    judged against. None for an unnamed run or the first of its name."""
    row = runs[runs["run_id"] == run_id]
    if row.empty or not row.iloc[0]["name"]:
        return None
    older = runs[(runs["name"] == row.iloc[0]["name"]) & (runs["started_at"] < row.iloc[0]["started_at"])]
    return str(older.sort_values("started_at", ascending=False).iloc[0]["run_id"]) if len(older) else None


# -- evidence ------------------------------------------------------------------------------------------


def setting_row(key: str, environment: Mapping[str, Any]) -> str | None:
    """The row of the Compare page's settings table that a ``{"config": key}`` names: a Run field
    (``torch``) or an Inductor setting (``inductor_config.<key>``)."""
    for row in (key, f"inductor_config.{key}"):
        if row in environment:
            return row
    return None


def compare_links(c: Cause, run_a: str, run_b: str, environment: Mapping[str, Any]) -> list[Link]:
    """The places a cause of a comparison points at: each graph on the Graph page of its run, a
    kernel selected in this page's kernel comparison, a setting's row, the stage-time table."""
    runs = {"A": run_a, "B": run_b}
    graphs_b = [e["graph"] for e in c.evidence if "graph" in e and "kernel" not in e and e.get("run") == "B"]
    out: list[Link] = []
    kernels: set[str] = set()
    for e in c.evidence:
        if "kernel" in e:  # a kernel names its graph too: the kernel is the finer link
            if e["kernel"] not in kernels:
                kernels.add(e["kernel"])
                params = {"a": run_a, "b": run_b, "kernel": e["kernel"], "side": e.get("run") or "B"}
                graph = e.get("graph") if e.get("run") == "B" and "graph" in e else (graphs_b[0] if graphs_b else None)
                if graph is not None:
                    params["kernel_graph"] = graph
                out.append(Link(f"kernel {e['kernel']} ({e.get('run') or 'B'})", "Compare", params, KERNELS))
        elif "graph" in e and e.get("run") in runs:
            out.append(
                Link(f"graph #{e['graph']} of {e['run']}", "Graph", {"run": runs[e["run"]], "graph": e["graph"]})
            )
        elif "config" in e:
            row = setting_row(e["config"], environment)
            if row is not None:
                out.append(Link(f"setting {row}", anchor=DIFFERENCES))
        elif "stage" in e:
            out.append(Link(f"stage {e['stage']}", anchor=STAGES))
    return out


def run_links(c: Cause, run_id: str) -> list[Link]:
    """The graphs one run's cause points at, on the Graph page."""
    return [
        Link(f"graph #{e['graph']}", "Graph", {"run": run_id, "graph": e["graph"]})
        for e in c.evidence
        if "graph" in e and "kernel" not in e
    ]


def markdown_line(text: str, links: Iterable[tuple[str, str]]) -> str:
    """A cause as one markdown list item: its sentence (escaped: store text stays text), then its
    evidence as ``(label, url)`` links."""
    parts = [f"[{escape_markdown(label)}]({url})" for label, url in links]
    return f"- {escape_markdown(text)}" + (f"  \n  {' · '.join(parts)}" if parts else "")


def settings_rows(d: RunDiff, found: Sequence[Cause]) -> pd.DataFrame:
    """The Compare page's table of what differs between the runs, with the causes (by number, as
    the page lists them) that name each row."""
    env = environment_rows(d)
    named: dict[str, list[str]] = {}
    for i, c in enumerate(found, 1):
        for e in c.evidence:
            row = setting_row(e["config"], d.environment) if "config" in e else None
            if row is not None:
                named.setdefault(row, []).append(str(i))
    env["cause"] = [", ".join(named.get(s, [])) for s in env["setting"]]
    return env


def kernel_row(d: RunDiff, changes: pd.DataFrame, name: str, side: str = "B", graph_b: int | None = None) -> int | None:
    """The row of the Compare page's kernel changes that a ``{"kernel": name, "run": side}`` names;
    of several, the one in B's graph ``graph_b``."""
    column = "kernel A" if side == "A" else "kernel B"
    rows = [i for i in range(len(changes)) if changes.iloc[i][column] == name]
    in_graph = [i for i in rows if ((d.graph_changes[int(changes.iloc[i]["g"])].b or {}).get("graph_index")) == graph_b]
    return (in_graph or rows or [None])[0]


# -- cached entry points -------------------------------------------------------------------------------


@cached
def cached_compare_causes(src: Source, run_a: str, run_b: str) -> list[Cause]:
    (ra, reports_a), (rb, reports_b) = cached_run(src, run_a), cached_run(src, run_b)
    return explain(ra, reports_a, rb, reports_b)


@cached
def cached_run_causes(src: Source, run_id: str) -> tuple[str | None, list[Cause]]:
    """One run's causes, largest first, and the earlier run of its name they were judged against."""
    earlier = earlier_of(cached_runs(src), run_id)
    run, reports = cached_run(src, run_id)
    return earlier, explain_run(run, reports, earlier=cached_run(src, earlier)[1] if earlier else ())
