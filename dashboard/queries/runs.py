"""Queries of the Runs page: every run in the store as a table and its filters; also how a run
is named, found by a reference and paired with the run before it, which every run picker uses."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from dashboard.queries.shared import Source, cached, store_at, when
from sandbox.store import Store, StoreError

RUN_COLUMNS = [
    "run_id",
    "name",
    "tags",
    "started",
    "device",
    "torch",
    "graphs",
    "compile_s",
    "cache_hit_ratio",
    "failures",
    "isolated",
    "hostname",
    "started_at",
]


def runs_frame(store: Store, limit: int | None = None) -> pd.DataFrame:
    """One row per run, newest first, with the store's per-run summary."""
    rows = []
    for r in store.runs(limit=limit):
        s = r.get("summary") or {}
        rows.append(
            {
                "run_id": r["run_id"],
                "name": r.get("name") or "",
                "tags": ", ".join(r.get("tags") or []),
                "started": when(r.get("started_at")),
                "device": r.get("device") or "",
                "torch": r.get("torch") or "",
                "graphs": int(s.get("graphs", 0)),
                "compile_s": float(s.get("compile_s", 0.0)),
                "cache_hit_ratio": s.get("cache_hit_ratio"),
                "failures": int(s.get("failures", 0)),
                "isolated": int(s.get("isolated", 0)),
                "hostname": r.get("hostname") or "",
                "started_at": float(r.get("started_at") or 0.0),
            }
        )
    df = pd.DataFrame(rows, columns=RUN_COLUMNS)
    df["cache_hit_ratio"] = df["cache_hit_ratio"].astype(float)
    return df


def tag_list(tags: str) -> list[str]:
    return [t for t in (x.strip() for x in tags.split(",")) if t]


def filter_choices(runs: pd.DataFrame) -> dict[str, list[str]]:
    """The values each filter offers: names, tags, devices, torch versions present."""
    return {
        "name": sorted({n for n in runs["name"] if n}),
        "tag": sorted({t for tags in runs["tags"] for t in tag_list(tags)}),
        "device": sorted({d for d in runs["device"] if d}),
        "torch": sorted({v for v in runs["torch"] if v}),
    }


def filter_runs(
    runs: pd.DataFrame,
    names: Sequence[str] = (),
    tags: Sequence[str] = (),
    devices: Sequence[str] = (),
    torch_versions: Sequence[str] = (),
    since: dt.date | None = None,
    until: dt.date | None = None,
    failed_only: bool = False,
    text: str = "",
) -> pd.DataFrame:
    """Runs matching every given filter (a run matches a tag filter with any of the tags)."""
    keep = pd.Series(True, index=runs.index)
    if names:
        keep &= runs["name"].isin(list(names))
    if tags:
        wanted = set(tags)
        keep &= runs["tags"].map(lambda t: bool(wanted & set(tag_list(t))))
    if devices:
        keep &= runs["device"].isin(list(devices))
    if torch_versions:
        keep &= runs["torch"].isin(list(torch_versions))
    if since is not None:
        keep &= runs["started_at"] >= dt.datetime.combine(since, dt.time.min).timestamp()
    if until is not None:
        keep &= runs["started_at"] < dt.datetime.combine(until + dt.timedelta(days=1), dt.time.min).timestamp()
    if failed_only:
        keep &= runs["failures"] > 0
    if text.strip():
        needle = text.strip().lower()
        hay = runs["run_id"] + " " + runs["name"] + " " + runs["tags"] + " " + runs["hostname"]
        keep &= hay.str.lower().str.contains(needle, regex=False)
    return runs[keep].copy()


def run_label(run: Mapping[str, Any]) -> str:
    """``baseline · 2026-11-26 09:04 · acc8e59a4a88``"""
    started = when(run.get("started_at"))
    parts = [
        run.get("name") or "(unnamed)",
        started.strftime("%Y-%m-%d %H:%M:%S") if started else "-",
        str(run.get("run_id", ""))[:12],
    ]
    return " · ".join(parts)


def run_labels(runs: pd.DataFrame) -> dict[str, str]:
    return {
        r.run_id: run_label({"name": r.name, "started_at": r.started_at, "run_id": r.run_id}) for r in runs.itertuples()
    }


def resolve_run(store: Store, ref: str | None) -> dict[str, Any] | None:
    """A run by id, id prefix, name or ``latest``; None when there is none (or ``ref`` is empty)."""
    if not ref:
        return None
    try:
        return store.get_run(ref)
    except StoreError:
        return None


def previous_of(runs: pd.DataFrame, run_id: str) -> str | None:
    """The run to compare ``run_id`` with: the previous run of the same name, else the one before it."""
    if run_id not in set(runs["run_id"]):
        return None
    row = runs[runs["run_id"] == run_id].iloc[0]
    older = runs[runs["started_at"] < row["started_at"]].sort_values("started_at", ascending=False)
    same = older[older["name"] == row["name"]] if row["name"] else older.iloc[0:0]
    pick = same if len(same) else older
    return str(pick.iloc[0]["run_id"]) if len(pick) else None


# -- cached entry points -------------------------------------------------------------------------


@cached
def cached_runs(src: Source, limit: int | None = None) -> pd.DataFrame:
    return runs_frame(store_at(src.location), limit)


@cached
def cached_resolve(src: Source, ref: str) -> dict[str, Any] | None:
    return resolve_run(store_at(src.location), ref)
