"""Kernel runtimes as measured on a GPU, read without one: ``tests/data/gpu_runtime_store.sqlite``
(made by ``tests/gpu/run.py --only store`` on an H100) holds a transformer block's training step
three times, each graph's call 3 profiled: default, max-autotune, and default with a batch 2048
times as large (``gpu-wide``), whose matrix multiplies run slower past the verdict's noise floor.
No time here is planted: the verdict, the Compare page and ``sandbox diff`` work from what the
profiler measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apptest_pages import check, frame, open_page, plain
from dashboard_stores import copied_store

from sandbox.cli.main import main

DATA = Path(__file__).resolve().parents[1] / "data" / "gpu_runtime_store.sqlite"
A, WIDE = "gpu-default", "gpu-wide"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("measured") / "runs.db"
    runs, reports = copied_store(DATA, path)
    return {"path": path, "runs": runs, "reports": reports}


def test_every_kernel_ran_as_often_as_its_call_sites(store: dict) -> None:
    """Each kernel's launches in the profiled call equal the generated code's call sites (the count
    no longer includes a Triton source's own ``def``), and the kernels add up to the call's device time."""
    assert set(store["runs"]) == {A, "gpu-max-autotune", WIDE}
    for name, reports in store["reports"].items():
        assert reports, name
        for r in reports:
            assert r.runtime and r.runtime["profiled_calls"] == [3] and r.runtime["device"] == "cuda", (name, r.runtime)
            for k in r.kernels:
                assert k["runtime"]["calls"] == k["calls"] >= 1, (name, r.graph_kind, k["name"], k["runtime"])
                assert k["runtime"]["per_call_us"] > 0
            total = sum(k["runtime"]["total_us"] for k in r.kernels)
            assert 0.9 * r.runtime["graph_us"] <= total <= 1.001 * r.runtime["graph_us"], (name, r.graph_kind)


def test_the_verdict_names_a_measured_slowdown_first(store: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """``sandbox diff --json``: the wider run's first cause is a kernel that ran slower, with its
    per-call times; the text form says the same first."""
    a, b = store["runs"][A]["run_id"], store["runs"][WIDE]["run_id"]
    assert main(["--store", str(store["path"]), "diff", a, b, "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)["verdict"]
    first = verdict[0]
    assert first["cause"] == "runtime_change", [v["text"] for v in verdict[:3]]
    assert first["text"].startswith("B's ") and " runs " in first["text"] and "x slower (" in first["text"], first
    assert main(["--store", str(store["path"]), "diff", a, b]) == 0
    out = capsys.readouterr().out
    assert out.split("why:\n", 1)[1].splitlines()[0].startswith(f"  1. {first['text']}"), out[-3000:]


def test_compare_page_leads_with_it(store: dict) -> None:
    a, b = store["runs"][A]["run_id"], store["runs"][WIDE]["run_id"]
    at = open_page(store["path"], "compare", a=a, b=b)
    check(at)
    why = [plain(m.value) for m in at.markdown if "x slower (" in plain(m.value)]
    assert why and why[0].lstrip("- ").startswith("B's "), why
    deltas = frame(at, "B µs/call")
    assert deltas.iloc[0]["B/A"] > 1.0 and deltas.iloc[0]["regression"], deltas.head(3)
