"""The Run page's queries (``dashboard/queries/run.py``), without Streamlit, on the real store."""

from __future__ import annotations

import pytest
import query_fixtures
from dashboard_stores import RealStore

from dashboard.queries import run as q
from sandbox import zoo

real, store = query_fixtures.real, query_fixtures.store  # the fixtures used here


def test_run_cards_rows_and_waterfall(store, real: RealStore) -> None:
    run, reports = q.load_run(store, real.run_ids["baseline"])
    cards = q.run_cards(run, reports)
    assert cards["graphs"] == 2 and cards["isolated"] == 2 and cards["cache_hits"] == 0 and cards["failures"] == 0
    assert cards["kernels"] == sum(len(r.kernels) for r in reports) > 0 and cards["workers"] == 1
    assert cards["compile_s"] == pytest.approx(sum(r.duration_s for r in reports))

    rows = q.graph_rows(run, reports)
    assert list(rows["kind"]) == ["forward", "backward"] and list(rows["outcome"]) == ["isolated", "isolated"]
    assert list(rows["caches"]) == ["fx miss, aot miss"] * 2
    assert list(rows["isolation"]) == [f"worker {reports[0].worker_pid}"] * 2
    line = zoo.MLP.forward.__code__.co_firstlineno  # dynamo names the frame's def line
    assert rows["code"][0] == f"forward (zoo.py:{line})" and rows["start s"].is_monotonic_increasing

    bars = q.waterfall(run, reports)
    for graph in ("#0 forward 0/0", "#1 backward 0/0"):
        stages = list(bars[bars["graph"] == graph]["stage"])
        assert stages == [
            "cache_lookup",
            "serialize",
            "wait_for_worker",
            "send",
            "compile_in_worker",
            "transfer",
            "load",
        ]
    assert (bars["end"] >= bars["start"]).all() and (bars["start"] >= 0).all()
    assert set(bars["isolation"]) == {f"worker {reports[0].worker_pid}"}


def test_cache_hits_and_failures(store, real: RealStore) -> None:
    run, reports = q.load_run(store, real.run_ids["rerun"])
    rows = q.graph_rows(run, reports)
    assert list(rows["outcome"]) == ["cache hit", "cache hit", "failed (error)"]
    assert rows["isolation"][0] == "no compile (aot_autograd_cache)"
    assert rows["isolation"][2].startswith("error in worker ") and rows["isolation"][2].endswith("; ran eagerly")
    bars = q.waterfall(run, reports)
    assert list(bars[bars["graph"] == "#0 forward 0/0"]["stage"]) == ["cache hit"]  # one bar: nothing compiled
    assert "wait_for_worker" in set(bars[bars["graph"].str.startswith("#2")]["stage"])
    [f] = q.failures(reports)
    assert f["kind"] == "error" and "injected compile error" in f["message"]
    assert f["fallback"] == "ran eagerly instead" and f["worker_pid"] and f["code"].startswith("fails_in_worker (")
    facts = dict(q.run_facts(run).values.tolist())
    assert facts["name"] == "rerun" and facts["run id"] == real.run_ids["rerun"] and facts["torch"].startswith("2.")
