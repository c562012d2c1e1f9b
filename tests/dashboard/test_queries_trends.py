"""The Trends page's queries (``dashboard/queries/trends.py``), without Streamlit, on the real store."""

from __future__ import annotations

import numpy as np
import pytest
import query_fixtures
from dashboard_stores import RealStore

from dashboard.queries import trends as q
from dashboard.queries.run import load_run
from dashboard.queries.runs import runs_frame

real, store = query_fixtures.real, query_fixtures.store  # the fixtures used here


def test_trends(store, real: RealStore) -> None:
    runs = runs_frame(store)
    durations = q.report_durations(store)
    assert len(durations) == 9 and set(durations["outcome"]) == {"isolated", "cache_hit", "failed"}
    t = q.trends(runs, durations)
    assert list(t["name"]) == ["baseline", "simd", "rerun"]  # oldest first
    for name in ("baseline", "simd", "rerun"):
        _, reports = load_run(store, real.run_ids[name])
        got = t[t["name"] == name].iloc[0]
        values = [r.duration_s for r in reports]
        assert got["p50 s"] == pytest.approx(np.percentile(values, 50))
        assert got["p90 s"] == pytest.approx(np.percentile(values, 90))
        assert got["max s"] == pytest.approx(max(values))
    assert t.set_index("name").loc["rerun", "cache hit ratio"] == pytest.approx(2 / 3)
    only = q.report_durations(store, [real.run_ids["baseline"]])
    assert len(only) == 2 and set(only["run_id"]) == {real.run_ids["baseline"]}
