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

from conftest import HELPERS, SCRIPT_TIMEOUT_S, run_script, script_env

TRAINING = ["mlp", "convnet", "transformer", "graph_breaks", "dynamic", "inplace"]


def _compiled(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in reports if r["background"]]


@pytest.fixture(scope="module")
def zoo_run(module_cache_dir: Path) -> dict[str, Any]:
    return run_script("script_async.py", "zoo", *TRAINING, cache_dir=module_cache_dir, timeout=600)


@pytest.mark.parametrize("name", TRAINING)
def test_zoo_matches_eager_with_the_switch_at_every_step(zoo_run, name: str) -> None:
    """30 AdamW steps per replica; replica r switches its forward graphs at step r and its
    backward graphs a step later or earlier: every replica's losses and gradients match
    eager's within Inductor's tolerances."""
    result = zoo_run["results"][name]
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


def test_the_first_real_switch_happens_where_the_rule_says(zoo_run) -> None:
    """Replica 0 switches forward graphs at step 0 and backward graphs at step 1: the
    reports count the calls that ran eagerly before each switch."""
    reports = _compiled(zoo_run["results"]["mlp"]["reports"])
    by_kind = {r["graph_kind"]: r for r in reports}
    assert by_kind["forward"]["eager_calls"] == 0
    assert by_kind["backward"]["eager_calls"] == 1


def test_natural_switch_runs_eagerly_then_compiled(cache_dir: Path) -> None:
    out = run_script("script_async.py", "natural", cache_dir=cache_dir, env={"SANDBOX_ASYNC": "1"})
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


def test_dropout_results_do_not_depend_on_the_switch_step(cache_dir: Path) -> None:
    out = run_script("script_async.py", "dropout", cache_dir=cache_dir)
    assert out["other_seed_differs"], "dropout must really be on"
    assert len(out["switch_steps"]) >= 4
    assert out["problems"] == {str(s): [] for s in out["switch_steps"][:-1]}


def test_failed_background_compile_stays_eager_and_never_raises(cache_dir: Path) -> None:
    out = run_script("script_async.py", "failure", cache_dir=cache_dir)
    assert out["raised"] is None
    assert out["outputs"] and all(out["outputs"])
    failed = [r for r in out["reports"] if r["outcome"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["fallback"] == "eager" and failed[0]["failure"]["kind"] == "error"
    assert failed[0]["switched_at"] is None and failed[0]["eager_calls"] >= 1
    assert any("stays uncompiled (eager)" in w for w in out["warnings"])


def test_caches_hold_the_compiled_graph(tmp_path: Path, probe_seed: Path) -> None:
    """A second process on the same cache dir hits both caches and runs nothing eagerly."""
    from conftest import fresh_cache_dir

    cache = fresh_cache_dir(tmp_path, probe_seed)
    env = {"SANDBOX_ASYNC": "1"}
    first = run_script("script_async.py", "cached", cache_dir=cache, env={**env, "SWITCH": "1"})
    assert sorted(r["graph_kind"] for r in first["reports"] if r["switched_at"]) == ["backward", "forward"]
    second = run_script("script_async.py", "cached", cache_dir=cache, env=env)
    assert second["reports"], second
    for r in second["reports"]:
        assert r["outcome"] == "cache_hit", r
        assert r["background"] is None and r["eager_calls"] == 0
    assert second["reports"][0]["caches"]["aot_autograd"]["state"] == "hit"
    assert all(w["jobs"] == 0 for w in second["workers"])


def test_two_workers_compile_forward_and_backward_side_by_side(cache_dir: Path) -> None:
    """Blocking mode with 2 workers: the backward graph is handed over at the first
    forward, to the second worker; both compiles overlap, results match eager."""
    out = run_script("script_async.py", "parallel", cache_dir=cache_dir)
    assert out["problems"] == []
    by_kind = {r["graph_kind"]: r for r in out["reports"]}
    fw, bw = by_kind["forward"], by_kind["backward"]
    assert fw["background"] == bw["background"] == "wait"
    assert fw["worker_pid"] != bw["worker_pid"]
    stage = lambda r: next(s for s in r["stages"] if s["name"] == "compile_in_worker")  # noqa: E731
    assert stage(bw)["start"] < stage(fw)["end"] and stage(fw)["start"] < stage(bw)["end"], "compiles overlap"
    assert fw["eager_calls"] == bw["eager_calls"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_switch_at_the_same_step(tmp_path: Path, cache_dir: Path) -> None:
    """torchrun, 2 ranks, gloo on CPU: rank 1's worker is stopped for seconds, yet both
    ranks switch each graph at the same step."""
    out_dir = tmp_path / "ranks"
    out_dir.mkdir()
    env = script_env(cache_dir, {"ASYNC_RANKS_OUT": str(out_dir), "OMP_NUM_THREADS": "1"})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), str(HELPERS / "script_async_ranks.py")]
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
