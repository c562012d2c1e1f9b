"""Async mode: a new graph runs eagerly while a worker compiles it.

Scenario scripts (``helpers/script_async.py``, ``helpers/script_async_ranks.py``) run
``torch.compile(..., backend="sandbox", options={"async": True})`` (or
``SANDBOX_ASYNC=1``) in fresh processes against real workers. Where a test must force
the switch at a chosen step, the script installs the stand-in's switch rule
(``sandbox.isolation.deferred.set_switch_rule``): it is the one test hook, and it only
decides *when* each call runs compiled; the compile, the switch and the caches are the
real ones.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import HELPERS, SCRIPT_TIMEOUT_S, load_bench, run_script, script_env

TRAINING = ["mlp", "convnet", "transformer", "graph_breaks", "dynamic", "inplace"]


def _compiled(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in reports if r["background"]]


@pytest.fixture(scope="module")
def main_run(module_cache_dir: Path) -> dict[str, Any]:
    """The scenarios of one process (``SANDBOX_ASYNC=1`` in its environment)."""
    return run_script(
        "script_async.py",
        "natural",
        "paired",
        "failure",
        "dropout",
        "parallel",
        "zoo",
        cache_dir=module_cache_dir,
        env={"SANDBOX_ASYNC": "1"},
        timeout=600,
    )


@pytest.mark.parametrize("name", TRAINING)
def test_zoo_matches_eager_with_the_switch_at_every_step(main_run, name: str) -> None:
    """30 AdamW steps per replica; replica r switches its forward graphs at step r and its
    backward graphs a step later or earlier: every replica's losses and gradients match
    eager's within Inductor's tolerances."""
    result = main_run["zoo"]["results"][name]
    assert result["raised"] is None, result["raised"]
    assert result["problems"] == []
    background = _compiled(result["reports"])
    kinds = {r["graph_kind"] for r in background}
    assert {"forward", "backward"} <= kinds, result["reports"]
    for r in background:
        assert r["outcome"] == "isolated", r
        assert r["switched_at"] is not None and r["ready_at"] is not None
        assert r["switched_at"] >= r["ready_at"] >= r["started_at"]
        assert r["background_s"] > 0
        assert any(s["name"] == "switch" for s in r["stages"])
        assert any(s["name"] == "compile_in_worker" for s in r["stages"])
        assert r["kernels"], "the report describes the compiled graph that took over"


def test_the_first_real_switch_happens_where_the_rule_says(main_run) -> None:
    """Replica 0 switches forward graphs at step 0 and backward graphs at step 1: the
    reports count the calls that ran eagerly before each switch."""
    reports = _compiled(main_run["zoo"]["results"]["mlp"]["reports"])
    by_kind = {r["graph_kind"]: r for r in reports}
    assert by_kind["forward"]["eager_calls"] == 0
    assert by_kind["backward"]["eager_calls"] == 1


def test_natural_switch_runs_eagerly_then_compiled(main_run) -> None:
    out = main_run["natural"]
    assert out["problems"] == []
    background = _compiled(out["reports"])
    assert sorted(r["graph_kind"] for r in background) == ["backward", "forward"]
    forward = next(r for r in background if r["graph_kind"] == "forward")
    # The first step did not wait for the compile: it ran eagerly.
    assert forward["eager_calls"] >= 1
    assert forward["duration_s"] < forward["background_s"]
    for r in background:
        assert r["background"] == "async" and r["outcome"] == "isolated"
        assert r["switched_at"] >= r["ready_at"]
    # The stand-in lowers the thread count only inside its own call: no recompile.
    assert out["threads_after"] == out["threads_outside"]
    assert out["frame_count"] == 1


def test_spans_say_how_many_calls_ran_eagerly_and_when_the_switch_happened(main_run) -> None:
    out = main_run["natural"]
    reports = {r["graph_kind"]: r for r in _compiled(out["reports"])}
    spans = {sp["name"].split()[1]: sp for sp in out["spans"]}
    for kind in ("forward", "backward"):
        span, r = spans[kind], reports[kind]
        attrs = span["attributes"]
        assert attrs["sandbox.background"] == "async"
        assert attrs["sandbox.eager_calls"] == r["eager_calls"]
        assert attrs["sandbox.switched_at"] == pytest.approx(r["switched_at"])
        assert attrs["sandbox.background_s"] == pytest.approx(r["background_s"])
        assert "sandbox.switch" in span["events"]
        assert span["end"] >= r["switched_at"] - 1e-3, "the span covers the background compile and the switch"


def test_with_cudagraphs_forward_and_backward_switch_in_the_same_step(main_run) -> None:
    """Without cudagraphs each graph switches as soon as its own compile is back; with them
    the forward waits for its backward, and both switch in one step."""
    out = main_run["paired"]
    assert out["problems"] == []
    by_kind = {r["graph_kind"]: r for r in _compiled(out["reports"])}
    fw, bw = by_kind["forward"], by_kind["backward"]
    assert fw["switched_at"] and bw["switched_at"]
    assert fw["eager_calls"] == bw["eager_calls"] >= 1
    assert fw["switched_at"] <= bw["switched_at"]
    assert fw["ready_at"] <= fw["switched_at"] and bw["ready_at"] <= fw["switched_at"], (
        "the forward waited for its backward"
    )


def test_dropout_results_do_not_depend_on_the_switch_step(main_run) -> None:
    out = main_run["dropout"]
    assert out["other_seed_differs"], "dropout must really be on"
    assert len(out["switch_steps"]) >= 4
    assert out["problems"] == {str(s): [] for s in out["switch_steps"][:-1]}


def test_failed_background_compile_stays_eager_and_never_raises(main_run) -> None:
    out = main_run["failure"]
    assert out["raised"] is None
    assert out["outputs"] and all(out["outputs"])
    failed = [r for r in out["reports"] if r["outcome"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["fallback"] == "eager" and failed[0]["failure"]["kind"] == "error"
    assert failed[0]["switched_at"] is None and failed[0]["eager_calls"] >= 1
    assert any("stays uncompiled (eager)" in w for w in out["warnings"])


def test_two_workers_compile_forward_and_backward_side_by_side(main_run) -> None:
    """Blocking mode with 2 workers: the backward graph is handed over at the first
    forward, to the second worker; both compiles overlap, results match eager."""
    out = main_run["parallel"]
    assert out["problems"] == []
    by_kind = {r["graph_kind"]: r for r in out["reports"]}
    fw, bw = by_kind["forward"], by_kind["backward"]
    assert fw["background"] == bw["background"] == "wait"
    assert fw["worker_pid"] != bw["worker_pid"]
    stage = lambda r: next(s for s in r["stages"] if s["name"] == "compile_in_worker")  # noqa: E731
    assert stage(bw)["start"] < stage(fw)["end"] and stage(fw)["start"] < stage(bw)["end"], "compiles overlap"
    assert fw["eager_calls"] == bw["eager_calls"] == 0


def test_caches_hold_the_compiled_graph(main_run, module_cache_dir: Path) -> None:
    """A second process on the same cache dir hits both caches and runs nothing eagerly."""
    assert sorted(r["graph_kind"] for r in main_run["natural"]["reports"] if r["switched_at"]) == [
        "backward",
        "forward",
    ]
    second = run_script("script_async.py", "cached", cache_dir=module_cache_dir, env={"SANDBOX_ASYNC": "1"})
    reports = second["cached"]["reports"]
    assert reports
    for r in reports:
        assert r["outcome"] == "cache_hit", r
        assert r["background"] is None and r["eager_calls"] == 0
    assert reports[0]["caches"]["aot_autograd"]["state"] == "hit"
    assert all(w["jobs"] == 0 for w in second["cached"]["workers"])


def test_run_timeline_shows_the_eager_calls_and_the_switch(main_run, module_cache_dir: Path) -> None:
    """The run store holds the new fields; the dashboard's Run page (AppTest) shows them."""
    from streamlit.testing.v1 import AppTest

    from dashboard.queries import run as q
    from sandbox.analysis import labels
    from sandbox.store import open_store

    store_path = module_cache_dir.parent / f"{module_cache_dir.name}-runs.db"
    store = open_store(str(store_path), readonly=True)
    loaded = [q.load_run(store, r["run_id"]) for r in store.runs()]
    run, reports = next((run, reps) for run, reps in loaded if run.get("pid") == main_run["pid"])
    forward = next(r for r in reports if r.background == "async" and r.switched_at and r.graph_kind == "forward")
    bars = q.waterfall(run, reports)
    mine = bars[bars["graph"] == labels.graph(forward, index=True)]
    eager = mine[mine["stage"] == q.EAGER_BAR].iloc[0]
    switch = mine[mine["stage"] == "switch"].iloc[0]
    assert eager["end"] == pytest.approx(switch["end"], abs=0.05) and eager["start"] < switch["start"]
    rows = q.graph_rows(run, reports)
    row = rows[rows["graph"] == forward.graph_index].iloc[0]
    assert row["eager calls"] == forward.eager_calls

    os.environ["SANDBOX_STORE"] = str(store_path)
    try:
        at = AppTest.from_file(str(Path(q.__file__).parent.parent / "app.py"), default_timeout=60)
        at.run()
        at.query_params = {"run": run["run_id"]}
        at.switch_page("pages/run.py").run()
        assert not at.exception, [e.value for e in at.exception]
        table = next(d.value for d in at.dataframe if "eager calls" in d.value.columns)
        shown = table[table["graph"] == forward.graph_index].iloc[0]
        assert shown["eager calls"] == forward.eager_calls
    finally:
        os.environ.pop("SANDBOX_STORE", None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_switch_at_the_same_step(tmp_path: Path, cache_dir: Path) -> None:
    """torchrun, 2 ranks, gloo on CPU: rank 1's worker is stopped for seconds, yet both
    ranks switch each graph at the same step."""
    out_dir = tmp_path / "ranks"
    out_dir.mkdir()
    # Each rank with workers of its own (no compile service shared by the host's ranks): rank 1
    # stops its own worker, and its compile must finish well after rank 0's.
    env = script_env(cache_dir, {"ASYNC_RANKS_OUT": str(out_dir), "OMP_NUM_THREADS": "1", "SANDBOX_SERVICE": "off"})
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        str(HELPERS / "script_async_ranks.py"),
    ]
    proc = subprocess.run(cmd, cwd=str(HELPERS), env=env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ranks = [json.loads((out_dir / f"rank{i}.json").read_text()) for i in range(2)]
    assert ranks[1]["stopped"], "rank 1 stopped its worker"
    assert ranks[0]["steps"] == ranks[1]["steps"]
    switch = [{r["graph_kind"]: r["eager_calls"] for r in _compiled(rk["reports"])} for rk in ranks]
    assert set(switch[0]) == {"forward", "backward"}
    assert switch[0] == switch[1]
    # Rank 0's own compile was back long before rank 1's: it waited for rank 1.
    fw = [next(r for r in rk["reports"] if r["graph_kind"] == "forward") for rk in ranks]
    assert fw[0]["ready_at"] < fw[1]["ready_at"]
    assert ranks[0]["losses"] == pytest.approx(ranks[1]["losses"], rel=1e-5)


def test_bench_takes_compiled_speed_from_the_swap() -> None:
    """``bench/time_to_first_step.py``'s measurement (a pure function): "compiled speed" is the
    last swap its reports record, never a guess from step times; the compiled step time is
    that of the steps after it; with a graph still as is at the end, or a failed compile, it
    is not reached."""
    bench = load_bench("time_to_first_step")  # a script, not a module of the package
    steps = [5.0] + [0.05] * 40 + [0.01] * 259
    ends, t = [], 0.0
    for s in steps:
        t += s
        ends.append(t)
    graphs = [
        {"graph_kind": "forward", "outcome": "isolated", "background": "async", "switched_s": 6.0},
        {"graph_kind": "backward", "outcome": "isolated", "background": "async", "switched_s": 6.51},
    ]
    res = {"ends": ends, "pending_at_end": 0, "reports": graphs}
    m = bench.measurements("sandbox_async", res)
    assert m["first step"] == pytest.approx(5.0)
    assert m["compiled speed"] == pytest.approx(6.51), "the last swap, though steps got fast at 7.0 s"
    assert m["300 steps"] == pytest.approx(ends[-1])
    assert m["step ms (compiled)"] == pytest.approx(10.0)
    assert bench.measurements("sandbox_async", dict(res, pending_at_end=1))["compiled speed"] is None
    failed = [graphs[0], dict(graphs[1], outcome="failed", switched_s=None)]
    assert bench.measurements("sandbox_async", dict(res, reports=failed))["compiled speed"] is None
    # Blocking: every graph ran compiled from its first call.
    assert bench.measurements("inductor", {"ends": ends})["compiled speed"] == pytest.approx(5.0)
    assert bench.measurements("stock_async", {"ends": ends, "pending_at_end": 0, "swaps_s": [7.2, 6.0]})[
        "compiled speed"
    ] == pytest.approx(7.2)
