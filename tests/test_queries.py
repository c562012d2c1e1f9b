"""The dashboard's queries (``dashboard/queries.py``), without Streamlit running: on a store
filled by real sandbox compiles (``dashboard_stores.real_store``) and on a synthetic
GPU-like store (launch configs, registers, spills, shared memory)."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from dashboard_stores import RealStore, make_gpu_store, make_real_store, store_files

from dashboard import queries as q
from sandbox.store import StoreError, open_store
from sandbox.telemetry.report import Run


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory, probe_seed: Path) -> RealStore:
    return make_real_store(tmp_path_factory, probe_seed)


@pytest.fixture(scope="module")
def store(real: RealStore):
    s = q.open_readonly(str(real.path))
    yield s
    s.close()


@pytest.fixture(scope="module")
def gpu(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("gpu-store") / "runs.db"
    ids = make_gpu_store(path)
    s = q.open_readonly(str(path))
    yield s, ids
    s.close()


# -- runs ------------------------------------------------------------------------------------------


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
    today = dt.date.today()
    assert len(q.filter_runs(runs, since=today, until=today)) == 3
    assert q.filter_runs(runs, until=today - dt.timedelta(days=2)).empty


def test_previous_run_and_resolution(store, real: RealStore) -> None:
    runs = q.runs_frame(store)
    assert q.previous_of(runs, real.run_ids["simd"]) == real.run_ids["baseline"]
    assert q.previous_of(runs, real.run_ids["rerun"]) == real.run_ids["simd"]  # no earlier "rerun": the one before
    assert q.previous_of(runs, real.run_ids["baseline"]) is None
    assert q.resolve_run(store, "simd")["run_id"] == real.run_ids["simd"]
    assert q.resolve_run(store, real.run_ids["rerun"][:8])["run_id"] == real.run_ids["rerun"]
    assert q.resolve_run(store, "latest")["run_id"] == real.run_ids["rerun"]
    assert q.resolve_run(store, "no-such-run") is None and q.resolve_run(store, "") is None


# -- one run --------------------------------------------------------------------------------------


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
    assert rows["code"][0] == "forward (zoo.py:25)" and rows["start s"].is_monotonic_increasing

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


# -- one graph -------------------------------------------------------------------------------------


def test_stage_tree(store, real: RealStore) -> None:
    _, reports = q.load_run(store, real.run_ids["baseline"])
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
    _, reports = q.load_run(store, real.run_ids["baseline"])
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


# -- compare ------------------------------------------------------------------------------------------


def test_compare_real_runs(store, real: RealStore) -> None:
    d = q.compare(store, real.run_ids["baseline"], real.run_ids["simd"])
    assert d.graphs == {"matched": 2, "added": 2, "removed": 0}
    _, simd = q.load_run(store, real.run_ids["simd"])
    inplace_kernels = sum(len(r.kernels) for r in simd[2:])
    assert d.kernels["added"] == inplace_kernels and d.kernels["removed"] == 0
    assert d.kernels["changed"] >= 2  # every vectorized C++ kernel is now scalar

    graphs = q.graph_change_rows(d)
    assert list(graphs["status"]) == ["matched", "matched", "added", "added"]
    assert graphs["change"][0] == pytest.approx((graphs["B s"][0] - graphs["A s"][0]) / graphs["A s"][0])

    changes = q.kernel_change_rows(d)
    changed = changes[changes["status"] == "changed"]
    assert len(changed) == d.kernels["changed"] and set(changed["what changed"]) == {"source"}
    assert changed["similarity"].between(0, 1, inclusive="neither").all()
    row = changed.iloc[0]
    ka, kb = q.kernel_pair(store, d, int(row["g"]), int(row["k"]))
    assert ka["name"] == row["kernel A"] and kb["name"] == row["kernel B"]
    assert "Vectorized" in ka["source"] and "Vectorized" not in kb["source"]  # simdlen=1: scalar code
    side = q.side_by_side(ka["source"], kb["source"])
    assert "\n".join(side[side["line A"].notna()]["A"]) == "\n".join(ka["source"].splitlines())
    assert "\n".join(side[side["line B"].notna()]["B"]) == "\n".join(kb["source"].splitlines())
    assert {"replace", "equal"} <= set(side["op"])
    diff = q.unified_diff(ka["source"], kb["source"])
    assert diff.startswith("--- A\n+++ B\n") and "\n-" in diff and "\n+" in diff
    assert q.launch_rows(ka, kb).empty

    text = " ".join(q.verdict(d))
    assert "inductor_config.cpp.simdlen None → 1" in text
    assert f"Kernels: {d.kernels['added']} added, 0 removed, {d.kernels['changed']} changed" in text
    assert "Graphs: 2 matched, 2 only in B, 0 only in A" in text
    ma = sum(gc.a["duration_s"] for gc in d.graph_changes if gc.status == "matched")
    mb = sum(gc.b["duration_s"] for gc in d.graph_changes if gc.status == "matched")
    pct = round(abs(mb - ma) / ma * 100)  # compile times are real: the two runs may land within 1%
    assert (
        f"On the 2 graphs both runs compiled: B compiled {pct}%"
        if pct >= 1
        else "On the 2 graphs both runs compiled: about the same compile time"
    ) in text
    assert f"({ma:.2f} s \u2192 {mb:.2f} s)" in text
    assert q.environment_rows(d).set_index("setting").loc["inductor_config.cpp.simdlen", "B"] == "1"
    stages = q.stage_delta_rows(d)
    assert set(stages["regression"]) <= {True, False} and (stages["delta s"] == stages["B s"] - stages["A s"]).all()
    metrics = q.metric_delta_rows(d).set_index("metric")
    assert (
        metrics.loc["metrics.generated_cpp_vec_kernel_count", "B"]
        < metrics.loc["metrics.generated_cpp_vec_kernel_count", "A"]
    )


def test_compare_with_cache_hits_says_kernels_were_not_compared(store, real: RealStore) -> None:
    d = q.compare(store, real.run_ids["baseline"], real.run_ids["rerun"])
    text = " ".join(q.verdict(d))
    assert "Kernels not compared for 3 graphs" in text  # 2 cache hits, 1 failed
    assert "In all: B compiled" in text and "(2 graphs in A, 3 in B)" in text
    assert "On the 2 graphs both runs compiled: B compiled" in text


def test_compare_gpu_launch_configs(gpu) -> None:
    s, ids = gpu
    d = q.compare(s, ids["gpu-default"], ids["gpu-autotune"])
    assert d.kernels == {"added": 3, "removed": 0, "changed": 1, "unchanged": 2}
    changes = q.kernel_change_rows(d)
    mul = changes[(changes["status"] == "changed")].iloc[0]
    assert mul["kernel B"] == "triton_poi_fused_mul_0" and mul["kind"] == "triton"
    assert mul["registers"] == "24 → 40" and mul["spills"] == "0 → 2" and mul["shared"] == "0 → 16384"
    assert mul["what changed"] == "source, warps, stages, registers, spills, shared memory"
    ka, kb = q.kernel_pair(s, d, int(mul["g"]), int(mul["k"]))
    launch = q.launch_rows(ka, kb).set_index("field")
    assert launch.loc["registers", "A"] == "24" and launch.loc["registers", "B"] == "40"
    assert launch.loc["registers", "delta"] == 16 and launch.loc["spills", "delta"] == 2
    assert launch.loc["shared memory", "delta"] == 16384 and bool(launch.loc["config", "changed"])
    assert launch.loc["config", "B"] == "{'XBLOCK': 2048}" and pd_isna(launch.loc["config", "delta"])
    assert q.code_language(kb) == "python"
    added = changes[changes["status"] == "added"]
    assert set(added["kernel B"]) == {"triton_tem_fused_mm_2", "triton_per_fused_sum_3", "triton_red_fused_sum_4"}
    _, reports = q.load_run(s, ids["gpu-autotune"])
    no_launchers = next(k for k in reports[1].kernels if k["name"] == "triton_red_fused_sum_4")
    assert q.launch_summary(no_launchers) == ""  # a kernel without launch metadata is shown without it

    lines = q.verdict(d)
    assert lines[0] == (
        "backward graph #1 of forward (model.py:10) compiled 50% slower (+1.00 s): "
        "kernel compile +0.70 s; 3 new triton kernels."
    )
    assert "Register spills grew in 1 kernel: triton_poi_fused_mul_0 (0 → 2)." in lines
    graphs = q.graph_change_rows(d)
    assert list(graphs["regression"]) == [False, True]  # forward +5%: below the threshold
    assert graphs["change"][1] == pytest.approx(0.5)


def pd_isna(x: object) -> bool:
    import pandas as pd

    return bool(pd.isna(x))


def test_regression_threshold() -> None:
    assert q.is_regression(1.0, 1.2) and not q.is_regression(1.0, 1.05)
    assert not q.is_regression(0.1, 0.14)  # +40% but only 0.04 s
    assert not q.is_regression(None, 1.0) and not q.is_regression(2.0, 1.0)


# -- trends --------------------------------------------------------------------------------------------


def test_trends(store, real: RealStore) -> None:
    runs = q.runs_frame(store)
    durations = q.report_durations(store)
    assert len(durations) == 9 and set(durations["outcome"]) == {"isolated", "cache_hit", "failed"}
    t = q.trends(runs, durations)
    assert list(t["name"]) == ["baseline", "simd", "rerun"]  # oldest first
    for name in ("baseline", "simd", "rerun"):
        _, reports = q.load_run(store, real.run_ids[name])
        got = t[t["name"] == name].iloc[0]
        values = [r.duration_s for r in reports]
        assert got["p50 s"] == pytest.approx(np.percentile(values, 50))
        assert got["p90 s"] == pytest.approx(np.percentile(values, 90))
        assert got["max s"] == pytest.approx(max(values))
    assert t.set_index("name").loc["rerun", "cache hit ratio"] == pytest.approx(2 / 3)
    only = q.report_durations(store, [real.run_ids["baseline"]])
    assert len(only) == 2 and set(only["run_id"]) == {real.run_ids["baseline"]}


# -- opening -------------------------------------------------------------------------------------------


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
    runs = q.runs_frame(store)
    for run_id in runs["run_id"]:
        _, reports = q.load_run(store, run_id)
        for r in reports:
            q.stage_tree(r), q.with_sources(store, r)
    q.compare(store, runs["run_id"][0], runs["run_id"][1])
    q.trends(runs, q.report_durations(store))
    assert store_files(real.path) == real.files


def test_change_words_prints_a_percentage_only_when_it_rounds_to_one_or_more() -> None:
    assert q._change_words(10.0, 10.096).startswith("B compiled 1% slower")  # 0.96%: printed as 1%
    assert q._change_words(10.0, 10.04).startswith("about the same")  # would print as 0%
    assert q._change_words(10.0, 8.0) == "B compiled 20% faster (10.00 s \u2192 8.00 s)"
    assert q._change_words(0.0, 1.0).startswith("about the same")
