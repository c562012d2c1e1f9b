"""Kernel runtimes in the record (option ``profile_steps``), through the public entry points: real
CPU compiles through ``backend="sandbox"`` (``helpers/script_profile.py``) into one store, then
``sandbox show``, ``diff`` and ``explain`` on it.

``on`` profiles call 3 of each graph, then runs a model without the option under the user's own
profiler and one with the option at a call the user's profiler records; ``simd`` profiles the
first model with scalar C++ kernels (``cpp.simdlen=1``, the planted reason its kernels run
slower); ``on`` runs again on its warm cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import fresh_cache_dir, run_script

from sandbox.cli.main import main
from sandbox.store import open_store


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, probe_seed: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("profiled")
    store = root / "runs.db"
    out: dict[str, Any] = {"store": store}
    env = {"SANDBOX_STORE": str(store)}
    caches = {}
    for case in ("on", "simd"):
        caches[case] = fresh_cache_dir(root / case, probe_seed)
        out[case] = dict(run_script("script_profile.py", case, cache_dir=caches[case], env=env))
    # ``on`` again on its warm cache: every graph comes from the caches.
    out["warm"] = dict(run_script("script_profile.py", "on", cache_dir=caches["on"], env=env))
    return out


def cli(capsys: pytest.CaptureFixture[str], store: Path, *argv: str) -> str:
    assert main(["--store", str(store), *argv]) == 0
    return capsys.readouterr().out


def test_profiled_call_gets_runtimes_for_its_kernels(runs: dict[str, Any]) -> None:
    on = runs["on"]
    assert [r["graph_kind"] for r in on["reports"]] == ["forward", "backward"] * 3
    step3_us = on["times"][2] * 1e6
    for r in on["reports"][:2]:
        rt = r["runtime"]
        assert rt["device"] == "cpu" and rt["profiled_calls"] == [3] and not rt.get("skipped")
        kinds = {k["kind"] for k in r["kernels"]}
        assert {"cpp", "extern"} <= kinds
        for k in r["kernels"]:
            # Every kernel ran in the profiled call, as often as the generated code calls it.
            assert k["runtime"]["calls"] == k["calls"] and k["runtime"]["per_call_us"] > 0, k
        total = sum(k["runtime"]["total_us"] for k in r["kernels"])
        assert 0.5 * rt["graph_us"] <= total <= rt["graph_us"] * 1.001, (total, rt)
        assert rt["graph_us"] <= step3_us  # one graph's call within the step that ran it
        assert abs(sum(k["runtime"]["share"] for k in r["kernels"]) - total / rt["graph_us"]) < 0.01
    store = open_store(str(runs["store"]), readonly=True)
    try:
        stored = store.reports(on["run_id"])
    finally:
        store.close()
    assert [r.runtime["profiled_calls"] for r in stored[:2]] == [[3], [3]]  # the store has the update
    assert all(k["runtime"]["calls"] for r in stored[:2] for k in r.kernels)


def test_graphs_from_the_caches_are_profiled_too(runs: dict[str, Any]) -> None:
    """With profile_steps the AOTAutograd cache is passed by: the FX graph cache serves each graph
    with its code, so its kernels are known and timed."""
    warm = runs["warm"]["reports"][:2]
    assert [(r["outcome"], r["reason"]) for r in warm] == [("cache_hit", "fx_graph_cache")] * 2
    assert all(r["runtime"]["profiled_calls"] == [3] and r["kernels"] for r in warm)
    assert all(k["runtime"]["calls"] == k["calls"] for r in warm for k in r["kernels"])


def test_profiling_off_changes_nothing(runs: dict[str, Any]) -> None:
    off = runs["on"]
    plain = off["reports"][2:4]  # the second model's: compiled without the option
    assert [r["runtime"] for r in plain] == [None, None]
    assert not any("runtime" in k for r in plain for k in r["kernels"])
    seen = off["user_profiler_saw"]
    cpp = {k["name"] for r in plain for k in r["kernels"] if k["kind"] == "cpp"}
    assert seen and not [n for n in seen if n.startswith("sandbox.profile") or n in cpp]
    # With the option, a chosen call that the user's own profiler records is skipped, and said so.
    other = off["reports"][4:]
    assert len(other) == 2 and all(r["runtime"]["skipped"][0]["call"] == 2 for r in other)
    assert all(not r["runtime"].get("steps") for r in other)


def test_show_lists_kernels_by_time(runs: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    out = cli(capsys, runs["store"], "show", runs["on"]["run_id"])
    section = out.split("kernel runtime (profiled calls", 1)[1]
    assert "profiled call 3:" in section and "share" in section
    names = [k["name"] for k in runs["on"]["reports"][0]["kernels"]]
    assert all(n in section for n in names)


def test_diff_and_explain_name_the_slower_kernels_first(
    runs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = runs["on"]["run_id"], runs["simd"]["run_id"]
    out = cli(capsys, runs["store"], "diff", a, b)
    first = out.split("why:\n", 1)[1].splitlines()[0]
    assert first.startswith("  1. B's cpp_fused_") and "x slower (" in first and "cpp.simdlen=1" in first, out
    assert "source changed" in first
    assert "kernel runtime, largest changes" in out
    verdict = json.loads(cli(capsys, runs["store"], "diff", a, b, "--json"))["verdict"]
    assert verdict[0]["cause"] == "runtime_change" and verdict[0]["evidence"][0]["runtime"]["ratio"] > 1.25
    explained = cli(capsys, runs["store"], "explain", b)  # judged against the earlier run of its name: A
    first = explained.split("largest first:\n", 1)[1].splitlines()[0]
    assert "cpp_fused_" in first and "slower than in the earlier run" in first, explained
