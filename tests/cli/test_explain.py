"""``sandbox diff`` names the cause first, and ``sandbox explain`` says why one run compiled what it
did, on a store with a planted graph break: synthetic reports (the cause model has its own tests,
``tests/analysis/test_causes.py``) put into a real SQLite store.

Runs, oldest first, all named ``model``: ``A`` compiles ``forward`` (model.py:20) as a forward and
a backward graph; ``B`` has a ``torch._dynamo.graph_break()`` at model.py:32, so its forward graph
records the break and two more graphs (``torch_dynamo_resume_in_forward_at_32``) follow it; ``C``
is B again, its FX graph cache warm (every graph a hit)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sandbox.analysis.causes import Cause
from sandbox.cli import render
from sandbox.cli.main import build_parser, main
from sandbox.record.report import CompileReport, Run
from sandbox.store import open_store

T0 = 1_780_000_000.0
MODEL = "/x/model.py"
BREAK = {
    "graph_break": True,
    "reason": "Call to `torch._dynamo.graph_break()`",
    "frames": [{"file": MODEL, "line": 32, "function": "forward"}],
}
RESUME = "torch_dynamo_resume_in_forward_at_32"
FIRST = "B has a new graph break at model.py:32 (call to torch._dynamo.graph_break): 2 more graphs, +2.0 s"


def report(run: Run, index: int, co_name: str, line: int, kind: str, fx: str = "miss", **fields: Any) -> CompileReport:
    return CompileReport(
        run_id=run.run_id,
        compile_id=f"{index}/0",
        graph_kind=kind,
        outcome="isolated" if fx == "miss" else "cache_hit",
        graph_index=index,
        co_name=co_name,
        filename=MODEL,
        line=line,
        started_at=run.started_at + index,
        duration_s=1.0 if fx == "miss" else 0.1,
        caches={"fx_graph": {"state": fx}},
        graph={"nodes": 10, "hash": f"{co_name}-{kind}-{line}"},
        kernels=[{"name": f"triton_poi_fused_add_{index}", "kind": "triton", "ops": ["add"]}],
        **fields,
    )


def with_break(run: Run, fx: str = "miss") -> list[CompileReport]:
    return [
        report(run, 0, "forward", 20, "forward", fx, compile_reason=BREAK),
        report(run, 1, "forward", 20, "backward", fx),
        report(run, 2, RESUME, 32, "forward", fx),
        report(run, 3, RESUME, 32, "backward", fx),
    ]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("explain") / "runs.db"
    runs = {k: Run(name="model", started_at=T0 + 3600 * i, torch="2.13.0") for i, k in enumerate("ABC")}
    store = open_store(str(path))
    store.put_run(runs["A"])
    store.put_reports([report(runs["A"], 0, "forward", 20, "forward"), report(runs["A"], 1, "forward", 20, "backward")])
    store.put_run(runs["B"])
    store.put_reports(with_break(runs["B"]))
    store.put_run(runs["C"])
    store.put_reports(with_break(runs["C"], fx="hit"))
    store.close()
    return path, {k: r.run_id for k, r in runs.items()}


def cli(capsys: pytest.CaptureFixture[str], path: Path, *argv: str) -> tuple[int, str]:
    rc = main(["--store", str(path), *argv])
    out, err = capsys.readouterr()
    assert err == ""
    return rc, out


# -- sandbox diff --------------------------------------------------------------------------------------


def test_diff_names_the_new_graph_break_first_before_the_tables(
    planted: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, ids = planted
    rc, out = cli(capsys, path, "diff", ids["A"], ids["B"])
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"A  {ids['A'][:12]} 'model'") and lines[1].startswith(f"B  {ids['B'][:12]} 'model'")
    assert lines[2:5] == ["", "why:", f"  1. {FIRST}"]
    assert out.index(FIRST) < out.index("graphs:  2 matched, 2 added, 0 removed") < out.index("  graph ")


def test_diff_json_has_the_verdict(planted: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    path, ids = planted
    rc, out = cli(capsys, path, "diff", ids["A"], ids["B"], "--json")
    d = json.loads(out)
    assert rc == 0 and d["graphs"] == {"matched": 2, "added": 2, "removed": 0}
    first = d["verdict"][0]
    assert set(first) == {"cause", "text", "graphs", "seconds", "evidence"}
    assert (first["cause"], first["text"], first["seconds"]) == ("graph_break_added", FIRST, pytest.approx(2.0))
    assert first["graphs"] == [
        "forward graph of forward at model.py:20",
        "backward graph of forward at model.py:20",
        f"forward graph of {RESUME} at model.py:32",
        f"backward graph of {RESUME} at model.py:32",
    ]
    assert first["evidence"] == [{"graph": 0, "run": "B", "report_id": first["evidence"][0]["report_id"]}]


def test_diff_without_a_cause_says_so(planted: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    path, ids = planted
    rc, out = cli(capsys, path, "diff", ids["B"], ids["B"])
    assert rc == 0 and out.splitlines()[2:4] == ["", f"why: {render.NO_CAUSE}"]
    assert json.loads(cli(capsys, path, "diff", ids["B"], ids["B"], "--json")[1])["verdict"] == []


def test_diff_shows_five_causes_and_counts_the_rest() -> None:
    found = [Cause("recompile", f"cause {i}") for i in range(1, 8)]
    assert render.cause_lines(found, render.MAX_CAUSES, " (more)") == [
        "  1. cause 1",
        "  2. cause 2",
        "  3. cause 3",
        "  4. cause 4",
        "  5. cause 5",
        "  ... and 2 more (more)",
    ]
    assert len(render.cause_lines(found)) == 7


# -- sandbox explain ------------------------------------------------------------------------------------


def test_explain_lists_the_causes_of_one_run(
    planted: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, ids = planted
    rc, out = cli(capsys, path, "explain", ids["B"])
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"run {ids['B'][:12]} 'model'") and "(4 graphs, 4.00 s)" in lines[0]
    assert lines[1].startswith(f"  cache misses judged against the earlier run {ids['A'][:12]}")
    assert lines[3:] == [
        "why it compiled like this, largest first:",
        "  1. 4 graphs missed the FX graph cache (no earlier run in the store hit the cache for these graphs), 4.0 s",
        "  2. graph break at model.py:32 (call to torch._dynamo.graph_break): 2 graphs after it, 2.0 s",
    ]
    rc, out = cli(capsys, path, "explain", ids["B"], "--json")
    found = json.loads(out)
    assert rc == 0 and [c["cause"] for c in found] == ["cache_miss", "graph_break_added"]
    assert found[1]["evidence"][0]["graph"] == 0 and found[1]["graphs"] == [
        f"forward graph of {RESUME} at model.py:32",
        f"backward graph of {RESUME} at model.py:32",
    ]


def test_explain_judges_a_miss_against_an_earlier_hit(
    planted: tuple[Path, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A later run of the same name that misses where C hit: the miss is judged against C's hit."""
    path, ids = planted
    copy = tmp_path / "runs.db"
    source, store = open_store(str(path), readonly=True), open_store(str(copy))
    for run in reversed(source.runs()):
        run.pop("summary")
        store.put_run(run)
        store.put_reports(source.reports(run["run_id"]))
    source.close()
    later = Run(name="model", started_at=T0 + 4 * 3600)
    store.put_run(later)
    store.put_reports(with_break(later))
    store.close()
    rc, out = cli(capsys, copy, "explain", "model")  # a name: its newest run
    assert rc == 0 and f"judged against the earlier run {ids['C'][:12]}" in out
    assert "4 graphs missed the FX graph cache (the same key as an earlier hit: another cache directory" in out


def test_explain_of_a_warm_run_and_of_a_run_with_nothing_to_explain(
    planted: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, ids = planted
    rc, out = cli(capsys, path, "explain", ids["C"])  # every graph a cache hit; the break is still there
    assert rc == 0 and "  1. graph break at model.py:32" in out and "missed" not in out
    store = open_store(str(path), readonly=True)
    try:
        run = store.get_run(ids["A"])
        assert render.explain(run, store.reports(ids["A"]), None, []).endswith(render.NOTHING_TO_EXPLAIN)
    finally:
        store.close()


def test_explain_is_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    assert "explain" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["explain"])
    assert e.value.code == 2 and "RUN" in capsys.readouterr().err
