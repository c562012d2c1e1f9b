"""Opening the store (``dashboard/queries/shared.py``): read-only, fingerprinted, refused when
missing or foreign; and no query ever writes to it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import query_fixtures
from dashboard_stores import RealStore, store_files

from dashboard.queries import shared as q
from dashboard.queries.compare import compare
from dashboard.queries.graph import stage_tree, with_sources
from dashboard.queries.run import load_run
from dashboard.queries.runs import runs_frame
from dashboard.queries.trends import report_durations, trends
from sandbox.record.report import Run
from sandbox.store import StoreError, open_store

gpu, real, store = query_fixtures.gpu, query_fixtures.real, query_fixtures.store  # the fixtures used here


def test_fingerprint_follows_new_runs(gpu, tmp_path: Path) -> None:
    s, _ = gpu
    path = tmp_path / "copy.db"
    shutil.copy(s.path, path)
    reader = q.open_readonly(str(path))
    before = q.fingerprint(reader)
    writer = open_store(str(path))
    writer.put_run(Run(name="later"))
    writer.close()
    assert q.fingerprint(reader) == (before[0] + 1, before[1], before[2])
    reader.close()


def test_missing_and_foreign_stores_are_refused_untouched(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="sandbox demo"):
        q.open_readonly(str(tmp_path / "nothing.db"))
    assert not (tmp_path / "nothing.db").exists()
    assert q.initial_location({"SANDBOX_STORE": "/x/y.db"}) == "/x/y.db"


def test_queries_never_write(real: RealStore, store) -> None:
    runs = runs_frame(store)
    for run_id in runs["run_id"]:
        _, reports = load_run(store, run_id)
        for r in reports:
            stage_tree(r), with_sources(store, r)
    compare(store, runs["run_id"][0], runs["run_id"][1])
    trends(runs, report_durations(store))
    assert store_files(real.path) == real.files
