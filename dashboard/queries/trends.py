"""Queries of the Trends page: per run, the graphs' compile latency percentiles and the
cache hit ratio, oldest first."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from dashboard.queries.runs import cached_runs
from dashboard.queries.shared import Source, cached, store_at
from sandbox.store import Store


def report_durations(store: Store, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """``run_id, duration_s, outcome`` of every report (of ``run_ids``): indexed columns only,
    no report JSON parsed. The Store API has no such query; its own SQL helper reads them."""
    sql = "SELECT run_id, duration_s, outcome FROM reports"
    rows: list[tuple] = []
    if run_ids is None:
        rows = store._query(sql)
    else:
        ids = list(run_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows += store._query(sql + f" WHERE run_id IN ({','.join('?' * len(chunk))})", chunk)
    return pd.DataFrame(rows, columns=["run_id", "duration_s", "outcome"]).astype({"duration_s": float})


def trends(runs: pd.DataFrame, durations: pd.DataFrame) -> pd.DataFrame:
    """Per run, oldest first: graph compile latency percentiles (p50, p90, p99, max; all
    graphs, cache hits included) and the cache hit ratio."""
    cols = [
        "run_id",
        "name",
        "started",
        "started_at",
        "graphs",
        "p50 s",
        "p90 s",
        "p99 s",
        "max s",
        "compile s",
        "cache hit ratio",
        "failures",
    ]
    if runs.empty:
        return pd.DataFrame(columns=cols)
    d = durations[durations["run_id"].isin(set(runs["run_id"]))]
    grouped = d.groupby("run_id")["duration_s"]
    stats = pd.DataFrame(
        {
            "p50 s": grouped.quantile(0.5),
            "p90 s": grouped.quantile(0.9),
            "p99 s": grouped.quantile(0.99),
            "max s": grouped.max(),
        }
    )
    out = (
        runs.set_index("run_id")[
            ["name", "started", "started_at", "graphs", "compile_s", "cache_hit_ratio", "failures"]
        ]
        .join(stats, how="left")
        .reset_index()
    )
    out = out.rename(columns={"compile_s": "compile s", "cache_hit_ratio": "cache hit ratio"})
    out = out[out["graphs"] > 0].sort_values("started_at")
    return out[cols].reset_index(drop=True)


# -- cached entry points -------------------------------------------------------------------------


@cached
def cached_trends(src: Source, limit: int | None = None) -> pd.DataFrame:
    runs = cached_runs(src, limit)
    ids = None if limit is None else list(runs["run_id"])
    return trends(runs, report_durations(store_at(src.location), ids))
