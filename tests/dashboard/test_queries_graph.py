"""The Graph page's queries (``dashboard/queries/graph.py``), without Streamlit, on the real store
(the GPU store's autotuning: ``test_dashboard_gpu.py``)."""

from __future__ import annotations

import hashlib

import query_fixtures
from dashboard_stores import RealStore

from dashboard.queries import graph as q
from dashboard.queries.run import load_run

real, store = query_fixtures.real, query_fixtures.store  # the fixtures used here


def test_stage_tree(store, real: RealStore) -> None:
    _, reports = load_run(store, real.run_ids["baseline"])
    report = q.find_report(reports, "0")
    tree = q.stage_tree(report)
    assert len(tree) == len(report.stages)
    assert tree["name"][0] == "inductor_compile" and tree["depth"][0] == 0
    depth = dict(zip(tree["name"], tree["depth"]))
    assert depth["fx_codegen_and_compile"] == 1 and depth["wait_for_worker"] == 2 and depth["worker_compile"] == 3
    # depth first: each row's parent is the nearest row above it one level up
    for i in range(1, len(tree)):
        assert tree["depth"][i] <= tree["depth"][i - 1] + 1
    assert (tree["own s"] <= tree["duration s"] + 1e-9).all() and (tree["share"] <= 1 + 1e-6).all()
    assert tree["stage"][1].startswith("\u2003\u2514 ")


def test_caches_metrics_kernels(store, real: RealStore) -> None:
    _, reports = load_run(store, real.run_ids["baseline"])
    report = reports[0]
    caches = q.cache_rows(report).set_index("cache")
    assert caches.loc["fx_graph", "state"] == "miss" and "key=" in caches.loc["fx_graph", "details"]
    metrics = q.metric_rows(report)
    found = dict(zip(metrics["metric"], metrics["value"]))
    assert int(found["generated_kernel_count"]) == len([k for k in report.kernels if k["kind"] == "cpp"])
    assert int(found["nodes"]) == report.graph["nodes"] and "0" not in set(metrics["value"])
    kernels = q.with_sources(store, report)
    rows = q.kernel_rows(kernels)
    assert list(rows["kernel"]) == [k["name"] for k in report.kernels]
    cpp = [k for k in kernels if k["kind"] == "cpp"]
    assert cpp and all(hashlib.sha256(k["source"].encode()).hexdigest() == k["source_hash"] for k in cpp)
    assert all(q.code_language(k) == "cpp" for k in cpp)
    assert set(rows["launch"]) == {""}  # CPU kernels: no launch metadata
    assert "source" not in report.kernels[0] or not report.kernels[0]["source"]  # the cached report is not modified
