"""Kernel runtimes on the Graph and Compare pages (Streamlit's ``AppTest``), their queries, and
``sandbox diff`` on the same store: the GPU-shaped store of ``runtime_stores.py``, whose B run has
one Triton kernel planted 1.8x slower with a different build (XBLOCK, registers, as max-autotune chose)."""

from __future__ import annotations

from pathlib import Path

import pytest
from apptest_pages import check, frame, open_page, plain, texts
from runtime_stores import A_US, B_US, PLANTED, A, B, planted_store

from dashboard.queries import runtime as qr
from sandbox.analysis.diff import compare_runs
from sandbox.cli.main import main
from sandbox.store import open_store

FIRST = (
    f"B's {PLANTED} runs 1.8x slower ({A_US:.0f} \u2192 {B_US:.0f} µs/call): XBLOCK 32 \u2192 4, registers 56 \u2192 24"
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = planted_store(tmp_path_factory.mktemp("runtime") / "runs.db")
    s = open_store(str(path), readonly=True)
    try:
        runs = {r["name"]: r for r in s.runs()}
        reports = {name: s.reports(r["run_id"]) for name, r in runs.items()}
    finally:
        s.close()
    return {"path": path, "runs": runs, "reports": reports}


def test_queries_kernel_table_and_deltas(store: dict) -> None:
    [forward] = [r for r in store["reports"][B] if r.graph_kind == "forward"]
    rows = qr.kernel_runtime_rows(forward)
    assert list(rows["total µs"].iloc[:-1]) == sorted(rows["total µs"].iloc[:-1], reverse=True)
    assert rows.iloc[-1]["kernel"].startswith("(other")  # the memset no kernel accounts for
    assert abs(rows["share"].sum() - 1.0) < 0.01
    assert rows.set_index("kernel").loc[PLANTED, "per call µs"] == B_US
    runs, reports = store["runs"], store["reports"]
    d = compare_runs(runs[A], reports[A], runs[B], reports[B])
    deltas = qr.runtime_delta_rows(d)
    top = deltas.iloc[0]
    assert top["kernel"] == PLANTED and top["B/A"] == pytest.approx(B_US / A_US, abs=0.01) and top["regression"]
    assert top["build differences"].startswith("XBLOCK 32 \u2192 4; registers 56 \u2192 24")
    assert not deltas.iloc[1:]["regression"].any()  # the other kernels took the same time


def test_graph_page_kernel_runtime_table(store: dict) -> None:
    [forward] = [r for r in store["reports"][B] if r.graph_kind == "forward"]
    at = open_page(store["path"], "graph", run=store["runs"][B]["run_id"], graph=str(forward.graph_index))
    table = frame(at, "per call µs")
    assert table.iloc[0]["total µs"] == table["total µs"].max()
    assert PLANTED in set(table["kernel"]) and "share" in table.columns
    assert "profiled call 3: device time" in plain(texts(at))


def test_compare_page_names_the_slower_kernel_first_and_shows_deltas(store: dict) -> None:
    at = open_page(store["path"], "compare", a=store["runs"][A]["run_id"], b=store["runs"][B]["run_id"])
    check(at)
    why = [plain(m.value) for m in at.markdown if "runs 1.8x slower" in plain(m.value)]
    assert why and why[0].lstrip("- ").startswith(FIRST), why
    deltas = frame(at, "B µs/call")
    assert deltas.iloc[0]["kernel"] == PLANTED


def test_sandbox_diff_names_it_first(store: dict, capsys: pytest.CaptureFixture[str]) -> None:
    path: Path = store["path"]
    assert main(["--store", str(path), "diff", store["runs"][A]["run_id"], store["runs"][B]["run_id"]]) == 0
    out = capsys.readouterr().out
    first = out.split("why:\n", 1)[1].splitlines()[0]
    assert first.startswith(f"  1. {FIRST}, source changed, ") and "(A: default)" in first, out
    assert "kernel runtime, largest changes" in out
