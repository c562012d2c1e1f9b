"""The dashboard as a user sees it: every page through Streamlit's ``AppTest``, on a store
filled by real sandbox compiles (``dashboard_stores.real_store``: ``baseline``, ``simd``,
``rerun``) and on a synthetic GPU-like store; assertions on the rendered values."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from apptest_pages import check, frame, metrics, numbers, open_page, plain, texts
from dashboard_stores import ROOT, RealStore, make_gpu_store, make_real_store, store_files
from streamlit.testing.v1 import AppTest

from sandbox.store import open_store


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory, probe_seed: Path) -> RealStore:
    return make_real_store(tmp_path_factory, probe_seed)


@pytest.fixture(scope="module")
def gpu(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("gpu-store") / "runs.db"
    return path, make_gpu_store(path)


def styles(at: AppTest, containing: str) -> str:
    for df in at.dataframe:
        if containing in df.value.columns:
            return df.proto.arrow_data.styler.styles
    raise AssertionError(containing)


def charts(at: AppTest) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Each Vega-Lite chart's spec and data, as the browser receives them."""
    out = []
    for c in at.get("vega_lite_chart"):
        spec = json.loads(c.proto.spec)
        data = [pa.ipc.open_stream(io.BytesIO(d.data.data)).read_pandas() for d in c.proto.datasets]
        out.append((spec, data[0] if data else pd.DataFrame()))
    return out


# -- runs ----------------------------------------------------------------------------------------


def test_runs_page_lists_runs_with_their_summaries(real: RealStore) -> None:
    at = open_page(real.path)
    assert at.title[0].value == "Runs" and "3 of 3 runs" in texts(at)
    runs = frame(at, "cache_hit_ratio")
    assert list(runs["name"]) == ["rerun", "simd", "baseline"]
    by = runs.set_index("name")
    assert by.loc["baseline", "tags"] == "ci, cpu" and by.loc["simd", "tags"] == "ci, experiment"
    assert list(by.loc[["baseline", "simd", "rerun"], "graphs"]) == [2, 4, 3]
    assert list(by.loc[["baseline", "simd", "rerun"], "failures"]) == [0, 0, 1]
    assert by.loc["rerun", "cache_hit_ratio"] == pytest.approx(2 / 3)
    assert by.loc["baseline", "open"] == f"run?run={real.run_ids['baseline']}"
    assert by.loc["baseline", "torch"].startswith("2.") and by.loc["baseline", "device"]
    assert by.loc["simd", "started"] > by.loc["baseline", "started"]
    [(spec, data)] = charts(at)
    line, points = spec["layer"]  # a line through all runs, a point per run coloured by name
    assert line["encoding"]["y"]["field"] == "compile_s" and line["encoding"]["x"]["type"] == "temporal"
    assert points["encoding"]["color"]["field"] == "name"
    assert sorted(data["name"]) == ["baseline", "rerun", "simd"]
    assert data.set_index("name")["compile_s"].to_dict() == pytest.approx(by["compile_s"].to_dict())


def test_runs_page_filters(real: RealStore) -> None:
    at = open_page(real.path)
    at.multiselect(key="runs:name").set_value(["simd"]).run()
    check(at)
    assert list(frame(at, "cache_hit_ratio")["name"]) == ["simd"] and "1 of 3 runs" in texts(at)
    at.multiselect(key="runs:name").set_value([]).run()
    at.multiselect(key="runs:tag").set_value(["cpu"]).run()
    assert list(frame(at, "cache_hit_ratio")["name"]) == ["baseline"]
    at.multiselect(key="runs:tag").set_value([]).run()
    at.checkbox(key="runs:failed").check().run()
    assert list(frame(at, "cache_hit_ratio")["name"]) == ["rerun"]
    at.checkbox(key="runs:failed").uncheck().run()
    at.text_input(key="runs:text").input("no-such-thing").run()
    assert frame(at, "cache_hit_ratio").empty and "No run matches the filters." in texts(at)


# -- run -----------------------------------------------------------------------------------------


def test_run_page_cards_timeline_and_graphs(real: RealStore) -> None:
    at = open_page(real.path, "run", run=real.run_ids["baseline"])
    assert at.title[0].value == "Run baseline"
    m = metrics(at)
    assert m["Graphs"] == "2" and m["Isolated"] == "2" and m["Failures"] == "0" and m["Cache hits"] == "0 (0%)"
    assert float(m["Total compile time"].removesuffix(" s")) > 0 and int(m["Kernels"]) > 0
    graphs = frame(at, "isolation")
    assert list(graphs["kind"]) == ["forward", "backward"] and list(graphs["outcome"]) == ["isolated"] * 2
    assert list(graphs["caches"]) == ["fx miss, aot miss"] * 2 and graphs["isolation"][0].startswith("worker ")
    assert graphs["open"][1] == f"graph?run={real.run_ids['baseline']}&graph=1"
    [(spec, bars)] = charts(at)
    assert spec["encoding"]["x2"]["field"] == "end" and spec["encoding"]["color"]["field"] == "stage"
    assert list(bars[bars["graph"] == "#1 backward 0/0"]["stage"]) == [
        "cache_lookup",
        "serialize",
        "wait_for_worker",
        "send",
        "compile_in_worker",
        "transfer",
        "load",
    ]
    assert set(bars["outcome"]) == {"isolated"} and set(bars["caches"]) == {"fx miss, aot miss"}
    assert "Failures (0)" in texts(at) and "No graph failed to compile." in texts(at)
    assert "Why it compiled like this" in texts(at) and "2 graphs missed the FX graph cache" in texts(at)
    assert at.query_params["run"] == real.run_ids["baseline"]


def test_run_page_failures_and_cache_hits(real: RealStore) -> None:
    at = open_page(real.path, "run", run="rerun")  # a run name works as a link too
    m = metrics(at)
    assert m["Graphs"] == "3" and m["Cache hits"] == "2 (67%)" and m["Failures"] == "1" and m["Isolated"] == "0"
    graphs = frame(at, "isolation")
    assert list(graphs["outcome"]) == ["cache hit", "cache hit", "failed (error)"]
    assert graphs["isolation"][0] == "no compile (aot_autograd_cache)"
    [(_, bars)] = charts(at)
    assert list(bars[bars["graph"] == "#0 forward 0/0"]["stage"]) == ["cache hit"]
    [err] = at.error
    assert "**error**" in err.value and "injected compile error" in err.value and "ran eagerly instead" in err.value
    assert "fails_in_worker (make_run.py:" in plain(err.value)
    assert at.query_params["run"] == real.run_ids["rerun"]  # the URL names the run it resolved


def test_run_page_selectbox_switches_run(real: RealStore) -> None:
    at = open_page(real.path, "run", run=real.run_ids["baseline"])
    at.selectbox(key="pick:run").select(real.run_ids["simd"]).run()
    check(at)
    assert at.title[0].value == "Run simd" and metrics(at)["Graphs"] == "4"
    assert at.query_params["run"] == real.run_ids["simd"]


# -- graph ---------------------------------------------------------------------------------------


def test_graph_page_stages_caches_metrics_kernels_and_code(real: RealStore) -> None:
    store = open_store(str(real.path), readonly=True)
    reports = store.reports(real.run_ids["baseline"], with_sources=True)
    store.close()
    report = reports[1]
    at = open_page(real.path, "graph", run=real.run_ids["baseline"], graph="1")
    assert plain(at.title[0].value) == "Backward graph 0/0"
    m = metrics(at)
    assert m["Outcome"] == "isolated" and m["Worker"] == str(report.worker_pid)
    assert f"Where it compiled: worker {report.worker_pid} · caches: fx miss, aot miss" in plain(texts(at))
    assert m["Kernels"] == str(len(report.kernels)) and m["Compile time"] == f"{report.duration_s:.2f} s"
    tree = frame(at, "own s")
    assert tree["name"][0] == "inductor_compile" and len(tree) == len(report.stages)
    assert {"wait_for_worker", "compile_in_worker", "worker_compile", "load"} <= set(tree["name"])
    caches = frame(at, "cache").set_index("cache")
    assert caches.loc["fx_graph", "state"] == "miss" and caches.loc["aot_autograd", "state"] == "miss"
    found = frame(at, "metric").set_index("metric")["value"]
    assert found["generated_kernel_count"] == str(report.metrics["generated_kernel_count"])
    kernels = frame(at, "kernel")
    assert list(kernels["kernel"]) == [k["name"] for k in report.kernels]
    first_cpp = next(k for k in report.kernels if k["kind"] == "cpp")
    [code] = at.code
    assert code.language == "cpp" and code.value == first_cpp["source"].strip()  # st.code trims the ends
    other = [k for k in report.kernels if k["kind"] == "cpp"][1]
    at.selectbox(key="graph:kernel").select(other["name"]).run()
    check(at)
    assert at.code[0].value == other["source"].strip()
    [(_, gantt)] = charts(at)
    assert len(gantt) == len(report.stages)


def test_graph_page_of_a_cache_hit(real: RealStore) -> None:
    at = open_page(real.path, "graph", run=real.run_ids["rerun"], graph="0")
    assert metrics(at)["Outcome"] == "cache hit" and metrics(at)["Kernels"] == "0"
    assert "No stages: a cache served this graph whole" in texts(at)
    assert "No kernel inventory" in texts(at) and not at.code


def test_graph_page_of_a_failure(real: RealStore) -> None:
    at = open_page(real.path, "graph", run=real.run_ids["rerun"], graph="2")
    assert plain(metrics(at)["Outcome"]) == "failed (error)"
    assert "injected compile error" in at.error[0].value


# -- compare ---------------------------------------------------------------------------------------


def test_compare_page_real_runs(real: RealStore) -> None:
    at = open_page(real.path, "compare", a=real.run_ids["baseline"], b=real.run_ids["simd"])
    m = metrics(at)
    assert m["Graphs matched"] == "2" and m["Graphs only in B / A"] == "2 / 0"
    assert int(m["Kernels changed"]) >= 2 and m["Kernels removed"] == "0" and int(m["Kernels added"]) > 0
    # the causes first, largest first: the inplace model's graphs only B compiled, then cpp.simdlen
    # (linked to its row of the settings); the numbers after
    assert plain(at.markdown[0].value).startswith("- B compiled 2 graphs of forward at zoo.py:")
    config = next(m.value for m in at.markdown if plain(m.value).startswith("- B compiles with another Inductor"))
    assert plain(config).startswith("- B compiles with another Inductor config, cpp.simdlen=1 (A: default)")
    assert "[setting inductor\\_config\\.cpp\\.simdlen](#differences)" in config
    assert frame(at, "setting").set_index("setting").loc["inductor_config.cpp.simdlen", "cause"] == "2"
    verdict = numbers(at)
    assert "inductor_config.cpp.simdlen None → 1" in verdict and f"{m['Kernels changed']} changed" in verdict
    graphs = frame(at, "kernels ~")
    assert list(graphs["status"]) == ["matched", "matched", "added", "added"]
    changes = frame(at, "what changed")
    assert (changes["status"] == "changed").sum() == int(m["Kernels changed"])
    assert (changes["status"] == "added").sum() == int(m["Kernels added"])
    # the first kernel in the list is a changed one: its side-by-side diff and unified diff
    side = frame(at, "line B")
    assert {"replace"} <= set(side["op"]) and side["A"].str.contains("Vectorized").any()
    assert not side["B"].str.contains("Vectorized").any()
    diff = next(c for c in at.code if c.language == "diff")
    assert diff.value.startswith("--- A/") and "\n-" in diff.value and "\n+" in diff.value
    assert "No launch metadata" in texts(at)
    stages = frame(at, "delta s")
    assert "stage" in stages.columns or "graph" in stages.columns
    assert at.query_params["a"] == real.run_ids["baseline"] and at.query_params["b"] == real.run_ids["simd"]


def test_compare_page_defaults_to_the_newest_run_and_its_predecessor(real: RealStore) -> None:
    at = open_page(real.path, "compare")
    assert at.query_params["b"] == real.run_ids["rerun"] and at.query_params["a"] == real.run_ids["simd"]
    assert "Kernels not compared for" in numbers(at)


def test_compare_page_gpu_launch_configs_and_regressions(gpu: tuple[Path, dict[str, str]]) -> None:
    path, ids = gpu
    at = open_page(path, "compare", a=ids["gpu-default"], b=ids["gpu-autotune"])
    m = metrics(at)
    assert (m["Kernels added"], m["Kernels removed"], m["Kernels changed"], m["Kernels unchanged"]) == (
        "3",
        "0",
        "1",
        "2",
    )
    verdict = numbers(at)
    assert (
        "backward graph #1 of forward (model.py:10) compiled 50% slower (+1.00 s): kernel compile +0.70 s; "
        "3 new triton kernels."
    ) in verdict
    assert "Register spills grew in 1 kernel: triton_poi_fused_mul_0 (0 → 2)." in verdict
    changes = frame(at, "what changed").set_index("kernel B")
    assert changes.loc["triton_poi_fused_mul_0", "registers"] == "24 → 40"
    assert changes.loc["triton_poi_fused_mul_0", "spills"] == "0 → 2"
    launch = frame(at, "field").set_index("field")
    assert launch.loc["registers", "delta"] == 16 and launch.loc["shared memory", "B"] == "16384"
    assert launch.loc["warps", "A"] == "4" and launch.loc["warps", "B"] == "8"
    graphs = frame(at, "kernels ~")
    assert list(graphs["regression"]) == [False, True]
    assert "background-color: rgba(255, 75, 75" in styles(at, "kernels ~")  # the slower graph is highlighted
    assert next(c for c in at.code if c.language == "diff").value.count("evict_last") == 1
    # an added kernel shows its source alone, with its launch config
    at.selectbox(key="compare:kernel").select(
        next(i for i in range(len(changes)) if changes.index[i] == "triton_tem_fused_mm_2")
    ).run()
    check(at)
    assert "Only in B:" in texts(at) and at.code[0].language == "python"
    assert "triton_tem_fused_mm_2" in at.code[0].value


# -- trends ---------------------------------------------------------------------------------------


def test_trends_page(real: RealStore) -> None:
    at = open_page(real.path, "trends")
    t = frame(at, "p50 s")
    assert list(t["name"]) == ["baseline", "simd", "rerun"]
    assert t.set_index("name").loc["rerun", "cache hit ratio"] == pytest.approx(2 / 3)
    assert metrics(at)["Runs"] == "3" and metrics(at)["Cache hit ratio (latest run)"] == "67%"
    latency, ratio = charts(at)
    assert set(latency[1]["percentile"]) == {"p50 s", "p90 s", "p99 s"} and len(latency[1]) == 9
    assert ratio[0]["layer"][1]["encoding"]["y"]["field"] == "cache hit ratio"
    assert sorted(ratio[1]["cache hit ratio"]) == pytest.approx([0, 0, 2 / 3])
    at.multiselect(key="trends:name").set_value(["simd"]).run()
    assert list(frame(at, "p50 s")["name"]) == ["simd"] and metrics(at)["Runs"] == "1"


# -- opening the right store, safely ------------------------------------------------------------------

PAGES = ("runs", "run", "graph", "compare", "trends")


@pytest.mark.parametrize("page", PAGES)
def test_missing_store_shows_how_to_make_a_first_run(tmp_path: Path, page: str) -> None:
    missing = tmp_path / "nowhere" / "runs.db"
    at = open_page(missing, None if page == "runs" else page)
    assert at.title[0].value == "No runs yet"
    assert "no store at" in at.warning[0].value
    assert f"SANDBOX_STORE={missing} sandbox demo" in at.code[0].value
    assert not missing.parent.exists()  # nothing created


def test_empty_store_shows_how_to_make_a_first_run(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    open_store(str(path)).close()
    before = store_files(path)
    for page in PAGES:
        at = open_page(path, None if page == "runs" else page)
        assert at.title[0].value == "No runs yet" and "has no runs yet" in at.info[0].value
        assert "sandbox demo" in at.code[0].value
    assert store_files(path) == before


def test_store_chosen_in_the_sidebar(
    real: RealStore, gpu: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["dashboard/app.py", "--allow-store-picker"])  # the picker is opt-in
    at = open_page(real.path)
    assert at.sidebar.text_input[0].value == str(real.path)
    at.sidebar.text_input[0].input(str(gpu[0])).run()
    check(at)
    assert list(frame(at, "cache_hit_ratio")["name"]) == ["gpu-autotune", "gpu-default"]
    assert "2 runs, 4 graphs" in at.sidebar.caption[0].value


def test_every_page_reads_only_and_never_unpickles(real: RealStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages render from the store without writing a byte (no journal, no WAL either) and
    without calling pickle at all (the caches keep objects, never pickled copies)."""
    calls = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[:1])
        raise AssertionError("the dashboard unpickled something")

    class Refused(pickle.Unpickler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            refuse(*args)

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", Refused)
    for page, params in [
        ("runs", {}),
        ("run", {"run": "rerun"}),
        ("graph", {"run": "baseline", "graph": "0"}),
        ("compare", {"a": "baseline", "b": "simd"}),
        ("trends", {}),
    ]:
        at = open_page(real.path, None if page == "runs" else page, **params)
        assert at.title[0].value != "No runs yet"
    assert not calls
    assert store_files(real.path) == real.files


def test_pages_on_a_postgresql_store(real: RealStore, postgres: Any) -> None:
    """The team store: the same runs copied into PostgreSQL, read through a read-only session."""
    url = postgres.new_database()
    source, target = open_store(str(real.path), readonly=True), open_store(url)
    for run in reversed(source.runs()):
        run.pop("summary")
        target.put_run(run)
        target.put_reports(source.reports(run["run_id"], with_sources=True))
    source.close()
    target.close()

    at = open_page(url)
    assert list(frame(at, "cache_hit_ratio")["name"]) == ["rerun", "simd", "baseline"]
    at = open_page(url, "compare", a="baseline", b="simd")
    assert "inductor_config.cpp.simdlen None → 1" in numbers(at)
    assert {"replace"} <= set(frame(at, "line B")["op"])
    at = open_page(url, "graph", run="baseline", graph="0")
    assert at.code[0].language == "cpp" and 'extern "C"' in at.code[0].value
    at = open_page(url, "trends")
    assert frame(at, "p50 s").set_index("name").loc["rerun", "cache hit ratio"] == pytest.approx(2 / 3)


def test_graph_page_switching_graphs_keeps_a_valid_kernel(real: RealStore) -> None:
    at = open_page(real.path, "graph", run=real.run_ids["simd"], graph="0")
    first = at.selectbox(key="graph:kernel").options
    at.selectbox(key="graph:kernel").select(first[-1]).run()
    at.selectbox(key="pick:graph").select(2).run()  # the inplace model's forward: other kernels
    check(at)
    assert at.query_params["graph"] == "2"
    names = at.selectbox(key="graph:kernel").options
    assert set(names).isdisjoint(first) and at.selectbox(key="graph:kernel").value == names[0]


def test_dashboard_scale_bench_runs_quick() -> None:
    """The scale benchmark works (its full run: 1,000 runs, 100,000 kernels, see the README)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "dashboard_scale.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "50 runs, 500 graphs, 5,000 kernel entries" in proc.stdout
    for page in ("Runs", "Run", "Graph", "Compare", "Trends"):
        assert any(
            line.split()[:1] == [page] and line.rstrip().endswith("PASS (target < 2 s)")
            for line in proc.stdout.splitlines()
        ), proc.stdout


def test_a_store_with_one_run_and_no_graphs(tmp_path: Path) -> None:
    from sandbox.record.report import Run

    path = tmp_path / "runs.db"
    store = open_store(str(path))
    store.put_run(Run(name="idle", tags=["x"]))
    store.close()
    at = open_page(path)
    assert list(frame(at, "cache_hit_ratio")["graphs"]) == [0]
    at = open_page(path, "run", run="idle")
    assert metrics(at)["Graphs"] == "0" and "This run compiled no graph." in texts(at)
    at = open_page(path, "graph", run="idle")
    assert "This run compiled no graph." in texts(at)
    at = open_page(path, "compare")
    assert "The store has one run" in texts(at)
    at = open_page(path, "trends")
    assert "No run with compiled graphs matches." in texts(at)
