"""The Runs page's queries (``dashboard/queries/runs.py``), without Streamlit, on the real store."""

from __future__ import annotations

import datetime as dt

import pytest
import query_fixtures
from dashboard_stores import RealStore

from dashboard.queries import runs as q

real, store = query_fixtures.real, query_fixtures.store  # the fixtures used here


def test_real_runs_were_made_as_planned(real: RealStore) -> None:
    assert real.outcomes["baseline"] == [["forward", "isolated"], ["backward", "isolated"]]
    assert real.outcomes["simd"] == [["forward", "isolated"], ["backward", "isolated"]] * 2
    assert real.outcomes["rerun"] == [["forward", "cache_hit"], ["backward", "cache_hit"], ["inference", "failed"]]


def test_runs_frame_summarises_each_run(store, real: RealStore) -> None:
    runs = q.runs_frame(store)
    assert list(runs["name"]) == ["rerun", "simd", "baseline"]  # newest first
    by = runs.set_index("name")
    assert by.loc["baseline", "tags"] == "ci, cpu" and by.loc["simd", "tags"] == "ci, experiment"
    assert by.loc["baseline", "run_id"] == real.run_ids["baseline"]
    assert list(by.loc[["baseline", "simd", "rerun"], "graphs"]) == [2, 4, 3]
    assert list(by.loc[["baseline", "simd", "rerun"], "failures"]) == [0, 0, 1]
    assert by.loc["rerun", "cache_hit_ratio"] == pytest.approx(2 / 3)
    assert by.loc["baseline", "cache_hit_ratio"] == 0.0
    assert all(by["torch"].str.startswith("2.")) and all(by["device"] != "")
    assert all(by["compile_s"] > 0) and isinstance(by.loc["simd", "started"], dt.datetime)


def test_filters(store) -> None:
    runs = q.runs_frame(store)
    assert q.filter_choices(runs) == {
        "name": ["baseline", "rerun", "simd"],
        "tag": ["ci", "cpu", "experiment"],
        "device": sorted(set(runs["device"])),
        "torch": sorted(set(runs["torch"])),
    }
    assert list(q.filter_runs(runs, names=["simd"])["name"]) == ["simd"]
    assert list(q.filter_runs(runs, tags=["cpu", "experiment"])["name"]) == ["simd", "baseline"]
    assert list(q.filter_runs(runs, failed_only=True)["name"]) == ["rerun"]
    assert list(q.filter_runs(runs, text="EXPERIMENT")["name"]) == ["simd"]
    baseline = runs[runs["name"] == "baseline"].iloc[0]
    assert list(q.filter_runs(runs, text=baseline["run_id"][:10])["name"]) == ["baseline"]
    # The days the runs started on (local time, as the filter reads them): a suite that runs
    # across midnight made them on another day than today.
    days = [dt.datetime.fromtimestamp(t).date() for t in runs["started_at"]]
    first, last = min(days), max(days)
    assert len(q.filter_runs(runs, since=first, until=last)) == 3
    assert q.filter_runs(runs, until=first - dt.timedelta(days=1)).empty
    assert q.filter_runs(runs, since=last + dt.timedelta(days=1)).empty


def test_previous_run_and_resolution(store, real: RealStore) -> None:
    runs = q.runs_frame(store)
    assert q.previous_of(runs, real.run_ids["simd"]) == real.run_ids["baseline"]
    assert q.previous_of(runs, real.run_ids["rerun"]) == real.run_ids["simd"]  # no earlier "rerun": the one before
    assert q.previous_of(runs, real.run_ids["baseline"]) is None
    assert q.resolve_run(store, "simd")["run_id"] == real.run_ids["simd"]
    assert q.resolve_run(store, real.run_ids["rerun"][:8])["run_id"] == real.run_ids["rerun"]
    assert q.resolve_run(store, "latest")["run_id"] == real.run_ids["rerun"]
    assert q.resolve_run(store, "no-such-run") is None and q.resolve_run(store, "") is None
