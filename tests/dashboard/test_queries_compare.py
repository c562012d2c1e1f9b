"""The Compare page's queries (``dashboard/queries/compare.py``), without Streamlit: on the real
store and on a synthetic GPU-like store (the real GPU store: ``test_dashboard_gpu.py``)."""

from __future__ import annotations

import pytest
import query_fixtures
from dashboard_stores import RealStore

from dashboard.queries import compare as q
from dashboard.queries.graph import code_language, launch_summary
from dashboard.queries.run import load_run

gpu, real, store = query_fixtures.gpu, query_fixtures.real, query_fixtures.store  # the fixtures used here


def test_compare_real_runs(store, real: RealStore) -> None:
    d = q.compare(store, real.run_ids["baseline"], real.run_ids["simd"])
    assert d.graphs == {"matched": 2, "added": 2, "removed": 0}
    _, simd = load_run(store, real.run_ids["simd"])
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
    ma = sum(gc.a["work_s"] for gc in d.graph_changes if gc.status == "matched")  # waits apart
    mb = sum(gc.b["work_s"] for gc in d.graph_changes if gc.status == "matched")
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
    assert code_language(kb) == "python"
    added = changes[changes["status"] == "added"]
    assert set(added["kernel B"]) == {"triton_tem_fused_mm_2", "triton_per_fused_sum_3", "triton_red_fused_sum_4"}
    _, reports = load_run(s, ids["gpu-autotune"])
    no_launchers = next(k for k in reports[1].kernels if k["name"] == "triton_red_fused_sum_4")
    assert launch_summary(no_launchers) == ""  # a kernel without launch metadata is shown without it

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


def test_change_words_prints_a_percentage_only_when_it_rounds_to_one_or_more() -> None:
    assert q._change_words(10.0, 10.096).startswith("B compiled 1% slower")  # 0.96%: printed as 1%
    assert q._change_words(10.0, 10.04).startswith("about the same")  # would print as 0%
    assert q._change_words(10.0, 8.0) == "B compiled 20% faster (10.00 s \u2192 8.00 s)"
    # from next to nothing (under 1 ms, or under 1% of B): no percentage in the thousands
    assert q._change_words(0.0, 1.0) == "B compiled for 1.00 s, A for next to no time (0.000 s \u2192 1.00 s)"
    assert q._change_words(0.0004, 4.5).startswith("B compiled for 4.50 s, A for next to no time")
    assert q._change_words(0.0, 0.0).startswith("about the same")
