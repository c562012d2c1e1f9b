"""The ``sandbox`` command line over a run store, as a user types it.

Most commands run in this process (``sandbox.cli.main``: the console script's entry
point) on a store filled with synthetic runs; a few run the real console script, and
one compiles a real model through ``sandbox demo`` and reads it back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support import IN_CI

from sandbox.analysis.diff import compare_runs, graph_keys, similarity
from sandbox.cli.demo import tracing_endpoint
from sandbox.cli.main import main, parse_age, parse_when
from sandbox.record.report import CompileReport, Failure, Run, Stage
from sandbox.store import open_store

SCRIPT = Path(sys.executable).with_name("sandbox")
WORKER_PID = 4242


# One "today" for the runs and the dates the tests filter them by: a suite that crosses midnight
# between building the runs and filtering them would otherwise be a day off at the bounds.
TODAY = dt.date.today()


def days_ago(n: float, hour: int = 10) -> float:
    """Local ``hour`` o'clock, ``n`` days before ``TODAY``."""
    day = dt.datetime.combine(TODAY, dt.time(hour=hour))
    return (day - dt.timedelta(days=n)).timestamp()


def date_of(n: float) -> str:
    return (TODAY - dt.timedelta(days=n)).isoformat()


# --- synthetic runs ----------------------------------------------------------------------

GELU = "\n".join(f"    out[{i}] = 0.5 * x[{i}] * (1 + erf(x[{i}] * M_SQRT1_2));" for i in range(12))
RELU = "\n".join(f"    out[{i}] = max(x[{i}], 0.0f);" for i in range(12))
SUM = "\n".join(f"    acc += g[{i}];" for i in range(8))


def kernel(name: str, body: str = "", kind: str = "cpp", calls: int = 1) -> dict[str, Any]:
    if kind == "extern":
        return {"name": name, "kind": kind, "source_hash": None, "source": "", "lines": 0, "calls": calls}
    source = f'extern "C" void kernel(const float* x, float* out) {{\n{body}\n}}\n'
    return {
        "name": name,
        "kind": kind,
        "source": source,
        "source_hash": hashlib.sha256(source.encode()).hexdigest(),
        "lines": source.count("\n"),
        "calls": calls,
    }


def report(
    run: Run,
    index: int,
    co_name: str,
    filename: str,
    line: int,
    kind: str,
    kernels: list[dict[str, Any]],
    wait: float = 0.2,
    **fields: Any,
) -> CompileReport:
    # Own times: wait_for_worker ``wait``, compile_in_worker 0.45, GraphLowering.run 0.15,
    # fx_codegen_and_compile 0.10, load 0.08, inductor_compile 0.02; in all ``wait`` + 0.8 s.
    t = run.started_at + 5 * index
    w = t + 0.02 + wait
    stages = [
        Stage("inductor_compile", t, t + wait + 0.8),
        Stage("fx_codegen_and_compile", t + 0.01, t + wait + 0.79, parent="inductor_compile"),
        Stage("wait_for_worker", t + 0.02, w, parent="fx_codegen_and_compile"),
        Stage("compile_in_worker", w, w + 0.6, "worker", "fx_codegen_and_compile"),
        Stage("GraphLowering.run", w + 0.05, w + 0.2, "worker", "compile_in_worker"),
        Stage("load", w + 0.6, w + 0.68, parent="fx_codegen_and_compile"),
    ]
    values: dict[str, Any] = dict(
        run_id=run.run_id,
        compile_id=f"{index}/0",
        graph_kind=kind,
        outcome="isolated",
        graph_index=index,
        co_name=co_name,
        filename=filename,
        line=line,
        worker_pid=WORKER_PID,
        started_at=t,
        duration_s=wait + 0.8,
        stages=stages,
        caches={"fx_graph": {"state": "miss"}, "aot_autograd": {"state": "miss"}},
        metrics={
            "generated_kernel_count": len([k for k in kernels if k["kind"] != "extern"]),
            "ir_nodes_pre_fusion": 9,
        },
        graph={"nodes": 20, "ops": 12, "inputs": 4},
        kernels=kernels,
    )
    values.update(fields)
    return CompileReport(**values)


MODEL, TRAIN = "/src/model.py", "/src/train.py"


def baseline_reports(run: Run) -> list[CompileReport]:
    return [
        report(
            run,
            0,
            "forward",
            MODEL,
            20,
            "forward",
            [
                kernel("cpp_fused_gelu_0", GELU),
                kernel("cpp_fused_relu_1", RELU),
                kernel("extern_kernels.addmm", kind="extern", calls=3),
            ],
        ),
        report(
            run,
            1,
            "forward",
            MODEL,
            20,
            "backward",
            [kernel("cpp_fused_threshold_backward_0", RELU + "\n// bw"), kernel("cpp_fused_sum_1", SUM)],
        ),
        report(run, 2, "loss_fn", TRAIN, 5, "forward", [kernel("cpp_fused_mse_0", SUM + "\n// mse")]),
        report(run, 3, "eval_step", TRAIN, 30, "inference", [kernel("cpp_fused_argmax_0", SUM + "\n// argmax")]),
    ]


def candidate_reports(run: Run) -> list[CompileReport]:
    crash = Failure(
        kind="crash",
        message=f"worker {WORKER_PID} was killed by SIGSEGV",
        signal="SIGSEGV",
        worker_pid=WORKER_PID,
        log_tail=["Fatal Python error: Segmentation fault"],
    )
    return [
        report(
            run,
            0,
            "forward",
            MODEL,
            20,
            "forward",
            [
                kernel("cpp_fused_gelu_0", GELU.replace("0.5 *", "0.5f *")),  # same name, new source
                kernel("cpp_fused_relu_add_2", RELU + "\n    out[0] += 1;"),  # renamed, similar source
                kernel("extern_kernels.addmm", kind="extern", calls=3),
                kernel("cpp_fused_softmax_3", "    softmax(x, out);\n    done();"),
            ],
            wait=1.7,
        ),
        report(
            run,
            1,
            "forward",
            MODEL,
            20,
            "backward",
            [kernel("cpp_fused_threshold_backward_0", RELU + "\n// bw")],
            wait=1.2,
        ),
        report(run, 2, "loss_fn", TRAIN, 5, "forward", [], outcome="failed", failure=crash, fallback="eager"),
        report(
            run, 3, "forward", MODEL, 20, "forward", [kernel("cpp_fused_gelu_0", GELU)], compile_id="0/1"
        ),  # a recompile
    ]


def fill(path: Path) -> dict[str, Run]:
    store = open_store(str(path))
    runs = {
        "old": Run(name="old", tags=["nightly"], started_at=days_ago(40), torch="2.12.0+cpu", pid=1000),
        "baseline": Run(
            name="baseline", tags=["nightly", "cpu"], started_at=days_ago(20), torch="2.13.0+cpu", pid=1001
        ),
        "experiment": Run(name="experiment", tags=["gpu"], started_at=days_ago(10), torch="2.13.0+cpu", pid=1002),
        "candidate": Run(
            name="candidate",
            tags=["nightly", "max-autotune"],
            started_at=days_ago(2),
            torch="2.13.0+cpu",
            pid=1003,
            inductor_config={"max_autotune": True},
        ),
    }
    for key, run in runs.items():
        store.put_run(run)
        if key == "candidate":
            store.put_reports(candidate_reports(run))
        elif key != "experiment":  # a run that compiled nothing
            store.put_reports(baseline_reports(run))
    store.close()
    return runs


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Run]]:
    path = tmp_path_factory.mktemp("cli") / "runs.db"
    return path, fill(path)


@pytest.fixture
def store_copy(tmp_path: Path) -> tuple[Path, dict[str, Run]]:
    """A store of its own, for commands that change it."""
    path = tmp_path / "runs.db"
    return path, fill(path)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def names_listed(out: str) -> list[str]:
    """Run names in the order `sandbox runs` printed them (third column)."""
    rows = out.splitlines()[2:]
    return [r.split()[3] for r in rows if r and not r.startswith("(")]


# --- runs ----------------------------------------------------------------------------------


def test_runs_lists_newest_first_with_summaries(
    filled: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, runs = filled
    rc, out, err = cli(capsys, "--store", str(path), "runs")
    assert rc == 0 and err == ""
    assert names_listed(out) == ["candidate", "experiment", "baseline", "old"]
    header = out.splitlines()[0].split()
    assert header[:4] == ["run", "started", "name", "tags"] and "graphs" in header and "failed" in header
    candidate = next(line for line in out.splitlines() if "candidate" in line)
    assert candidate.startswith(runs["candidate"].run_id[:12]) and "nightly,max-autotune" in candidate
    # graphs 4, isolated 3, hits 0%, failed 1, compile 6.5 s
    assert candidate.split()[5:10] == ["4", "3", "0%", "1", "6.5"]


def test_runs_filters_by_name_tag_and_date(
    filled: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--store", str(filled[0])]
    assert names_listed(cli(capsys, *store, "runs", "--name", "baseline")[1]) == ["baseline"]
    assert names_listed(cli(capsys, *store, "runs", "--tag", "nightly")[1]) == ["candidate", "baseline", "old"]
    assert names_listed(cli(capsys, *store, "runs", "--tag", "gpu")[1]) == ["experiment"]
    assert names_listed(cli(capsys, *store, "runs", "--since", date_of(15))[1]) == ["candidate", "experiment"]
    assert names_listed(cli(capsys, *store, "runs", "--since", "15d", "--until", "5d")[1]) == ["experiment"]
    # A bare --until date runs to the end of that day.
    assert names_listed(cli(capsys, *store, "runs", "--until", date_of(20))[1]) == ["baseline", "old"]
    assert names_listed(cli(capsys, *store, "runs", "--since", date_of(20), "--until", date_of(10))[1]) == [
        "experiment",
        "baseline",
    ]
    rc, out, _ = cli(capsys, *store, "runs", "--limit", "2")
    assert names_listed(out) == ["candidate", "experiment"] and "--limit" in out
    rc, out, _ = cli(capsys, *store, "runs", "--name", "nobody")
    assert rc == 0 and "no runs match" in out


def test_runs_json_parses(filled: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]) -> None:
    path, runs = filled
    rc, out, _ = cli(
        capsys, "runs", "--tag", "nightly", "--json", "--store", str(path)
    )  # --store after the command too
    assert rc == 0
    data = json.loads(out)
    assert [r["name"] for r in data] == ["candidate", "baseline", "old"]
    assert data[0]["run_id"] == runs["candidate"].run_id
    assert data[0]["summary"] == {
        "graphs": 4,
        "compile_s": pytest.approx(6.5),
        "cache_hits": 0,
        "failures": 1,
        "isolated": 3,
        "cache_hit_ratio": 0.0,
    }
    assert data[0]["inductor_config"] == {"max_autotune": True}


def test_dates_and_ages_parse() -> None:
    now = time.time()
    assert parse_age("7d") == 7 * 86400 and parse_age("90s") == 90 and parse_age("2w") == 14 * 86400
    assert parse_when("3h", now=now) == now - 3 * 3600
    assert parse_when("2026-11-26") == dt.datetime(2026, 11, 26).timestamp()
    assert parse_when("2026-11-26", end=True) == pytest.approx(dt.datetime(2026, 11, 27).timestamp(), abs=1e-3)
    assert parse_when("2026-11-26 08:30") == dt.datetime(2026, 11, 26, 8, 30).timestamp()
    assert parse_when("yesterday", now=now) < parse_when("today", now=now) <= now


# --- show ----------------------------------------------------------------------------------


def test_show_prints_graphs_stages_caches_kernels_and_failures(
    filled: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, runs = filled
    rc, out, err = cli(capsys, "--store", str(path), "show", "latest")
    assert rc == 0 and err == ""
    run = runs["candidate"]
    assert out.startswith(f"run {run.run_id}  'candidate'  tags: nightly, max-autotune")
    assert "inductor config: max_autotune=True" in out
    assert "4 graphs: 3 isolated, 0 cache hits, 0 in-process, 1 failed; 6.50 s compiling" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("#  graph"))
    rows = [line.split("  ") for line in lines[header + 2 : header + 6]]
    rows = [[c.strip() for c in row if c.strip()] for row in rows]
    assert [r[1] for r in rows] == ["forward 0/0", "backward 1/0", "forward 2/0", "forward 0/1"]
    assert rows[0][2] == "forward (model.py:20)" and rows[2][2] == "loss_fn (train.py:5)"
    assert [r[3] for r in rows] == ["isolated", "isolated", "failed (crash)", "isolated"]
    assert all(r[4] == str(WORKER_PID) for r in rows) and [r[5] for r in rows] == ["2.50", "2.00", "1.00", "1.00"]
    # Where the graph spent its own time (a stage's nested stages are not counted twice).
    assert rows[0][6].startswith("wait_for_worker 1.70, compile_in_worker 0.45, GraphLowering.run 0.15")
    assert rows[3][6].startswith("compile_in_worker 0.45, wait_for_worker 0.20, GraphLowering.run 0.15")
    assert rows[0][7] == "fx miss, aot miss" and rows[0][8] == "4" and rows[2][8] == "0"
    assert "1 failure(s):" in out
    assert f"#2 forward 2/0 at loss_fn (train.py:5): crash (SIGSEGV, worker {WORKER_PID})" in out
    assert f"worker {WORKER_PID} was killed by SIGSEGV; ran eagerly instead" in out
    assert "| Fatal Python error: Segmentation fault" in out

    # The same run by id prefix and by name.
    assert cli(capsys, "--store", str(path), "show", run.run_id[:8])[1] == out
    assert cli(capsys, "--store", str(path), "show", "candidate")[1] == out


def test_show_json_parses(filled: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]) -> None:
    path, runs = filled
    rc, out, _ = cli(capsys, "--store", str(path), "show", "baseline", "--json")
    assert rc == 0
    data = json.loads(out)
    assert data["run"]["run_id"] == runs["baseline"].run_id
    reports = [CompileReport.from_dict(r) for r in data["reports"]]
    assert [r.graph_kind for r in reports] == ["forward", "backward", "forward", "inference"]
    assert all(not k.get("source") for r in reports for k in r.kernels)
    rc, out, _ = cli(capsys, "--store", str(path), "show", "baseline", "--json", "--sources")
    assert json.loads(out)["reports"][0]["kernels"][0]["source"].startswith('extern "C"')


# --- diff ----------------------------------------------------------------------------------


def test_diff_shows_graphs_kernels_stages_and_metrics(
    filled: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, runs = filled
    rc, out, err = cli(capsys, "--store", str(path), "diff", "baseline", "candidate")
    assert rc == 0 and err == ""
    assert (
        f"A  {runs['baseline'].run_id[:12]} 'baseline'" in out
        and f"B  {runs['candidate'].run_id[:12]} 'candidate'" in out
    )
    assert "inductor_config.max_autotune: None -> True" in out
    # the causes first, numbered, before every table:
    why = out[out.index("\nwhy:\n") : out.index("graphs:")].splitlines()
    # the failed graph (B ran it eagerly), graphs only one run compiled (nothing else explains them),
    # the mode, the longer wait
    assert why[2].startswith("  1. B's forward graph of loss_fn at train.py:5 failed to compile (crash: worker 4242")
    assert why[3] == "  2. B compiled 1 graph of forward at model.py:20 that A did not, +0.8 s"
    assert why[4] == "  3. A compiled 1 graph of eval_step at train.py:30 that B did not, -0.8 s"
    assert why[5] == "  4. B compiles with another mode, max_autotune=True (A: default)"
    assert why[6].startswith("  5. B waited 2.5 s longer for a worker")
    assert "graphs:  3 matched, 1 added, 1 removed" in out
    # forward: gelu changed, relu renamed (changed), softmax added, addmm unchanged;
    # backward: sum removed, threshold unchanged; recompile: gelu added; eval_step: argmax removed.
    assert "kernels: 2 added, 2 removed, 2 changed, 2 unchanged" in out
    # compile work is the same (4 graphs of 0.8 s each side); the 2.5 s more wait is kept apart
    assert "compile time: 3.20 s -> 3.20 s (+0.00 s, +0%)" in out
    assert "waiting for a worker: 0.80 s -> 3.30 s (+2.50 s)" in out
    rows = out[out.index("  graph ") : out.index("kernel changes:")].splitlines()[2:-1]
    assert [r[:1] + re.split(r"\s{2,}", r[3:])[0] for r in rows] == [
        " forward (model.py:20) forward",
        " forward (model.py:20) backward",
        " loss_fn (train.py:5) forward",
        "+forward (model.py:20) forward #1",
        "-eval_step (train.py:30) inference",
    ]
    assert "isolated -> failed" in rows[2] and "n/a (no inventory)" in rows[2]
    assert rows[0].split()[-6:] == ["0.80", "0.80", "+0.00", "+1", "-0", "~2"]  # work; B's longer wait apart
    assert "    ~ cpp_fused_gelu_0 (source " in out
    assert "    ~ cpp_fused_relu_1 -> cpp_fused_relu_add_2 (source " in out
    assert "    + cpp_fused_softmax_3 (cpp, " in out
    assert "    - cpp_fused_sum_1 (cpp, " in out
    assert "    - cpp_fused_argmax_0 (cpp, " in out
    assert "    + cpp_fused_gelu_0 (cpp, " in out  # the recompile's kernel
    assert "extern_kernels.addmm" not in out  # unchanged kernels are counted, not listed
    stage_table = out[out.index("stage time") : out.index("metrics that changed")]
    assert ["wait_for_worker", "0.80", "3.30", "+2.50"] in [line.split() for line in stage_table.splitlines()]
    assert "compile_in_worker [worker]" not in stage_table  # as long in both runs
    assert "metrics.generated_kernel_count" in out


def test_diff_json_parses(filled: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]) -> None:
    path, runs = filled
    rc, out, _ = cli(capsys, "--store", str(path), "diff", runs["baseline"].run_id[:10], "latest", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["graphs"] == {"matched": 3, "added": 1, "removed": 1}
    assert d["kernels"] == {"added": 2, "removed": 2, "changed": 2, "unchanged": 2}
    forward = d["graph_changes"][0]
    assert (forward["co_name"], forward["graph_kind"], forward["order"], forward["status"]) == (
        "forward",
        "forward",
        0,
        "matched",
    )
    renamed = next(k for k in forward["kernels"] if k["name_b"] == "cpp_fused_relu_add_2")
    assert (
        renamed["status"] == "changed" and renamed["name_a"] == "cpp_fused_relu_1" and 0.5 < renamed["similarity"] < 1
    )
    assert {g["status"] for g in d["graph_changes"]} == {"matched", "added", "removed"}
    wait = next(s for s in d["stage_deltas"] if s["stage"] == "wait_for_worker")
    assert wait["delta_s"] == pytest.approx(2.5) and wait["origin"] == "parent"
    assert [v["cause"] for v in d["verdict"]] == [
        "compile_failure",
        "graph_change",
        "graph_change",
        "mode_change",
        "environment",
    ]
    assert all({"cause", "text", "graphs", "seconds"} <= set(v) for v in d["verdict"])


def test_diff_of_a_run_with_itself_is_all_unchanged(
    filled: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = cli(capsys, "--store", str(filled[0]), "diff", "baseline", "baseline", "--json")
    d = json.loads(out)
    assert d["graphs"] == {"matched": 4, "added": 0, "removed": 0}
    assert d["kernels"] == {"added": 0, "removed": 0, "changed": 0, "unchanged": 7}
    assert d["stage_deltas"] == [] and d["metric_deltas"] == [] and d["environment"] == {}
    assert d["verdict"] == []
    rc, out, _ = cli(capsys, "--store", str(filled[0]), "diff", "baseline", "baseline")
    assert rc == 0 and "\nwhy: nothing explains a difference: the same graphs, caches, config and versions\n" in out


def test_kernel_matching_by_name_then_similarity() -> None:
    run_a, run_b = Run(), Run()
    a = [
        report(
            run_a,
            0,
            "f",
            "m.py",
            1,
            "forward",
            [kernel("k_0", GELU), kernel("k_1", RELU), kernel("k_2", SUM), kernel("extern_kernels.mm", kind="extern")],
        )
    ]
    b = [
        report(
            run_b,
            0,
            "f",
            "m.py",
            1,
            "forward",
            [
                kernel("k_0", GELU),
                kernel("k_9", RELU),
                kernel("k_1", "    totally();\n    different();"),
                kernel("extern_kernels.mm", kind="extern", calls=2),
            ],
        )
    ]
    d = compare_runs(run_a.to_dict(), a, run_b.to_dict(), b)
    by = {(k.name_a, k.name_b): k for k in d.graph_changes[0].kernels}
    assert by[("k_0", "k_0")].status == "unchanged"
    assert (
        by[("k_1", "k_1")].status == "changed" and by[("k_1", "k_1")].similarity < 0.5
    )  # name first, whatever the source
    assert by[("k_2", None)].status == "removed"  # nothing similar is left for it
    assert by[(None, "k_9")].status == "added"  # RELU's twin was taken by name
    assert by[("extern_kernels.mm", "extern_kernels.mm")].fields == {"calls": (1, 2)}
    assert similarity(GELU, GELU) == 1.0 and 0 < similarity(GELU, GELU + "\nx") < 1

    # Sources that only the store has: fetched once, for the hashes that need them.
    asked: list[list[str]] = []
    stripped_a = [CompileReport.from_dict(json.loads(r.to_json())) for r in a]
    stripped_b = [CompileReport.from_dict(json.loads(r.to_json())) for r in b]
    sources = {
        k["source_hash"]: k.pop("source") for r in stripped_a + stripped_b for k in r.kernels if k.get("source_hash")
    }
    d2 = compare_runs(
        run_a.to_dict(),
        stripped_a,
        run_b.to_dict(),
        stripped_b,
        load_sources=lambda hashes: asked.append(hashes) or {h: sources[h] for h in hashes},
    )
    assert len(asked) == 1 and d2.kernels == d.kernels


def test_graphs_match_by_code_kind_and_order() -> None:
    run = Run()
    reports = [report(run, i, "f", "m.py", 1, kind, []) for i, kind in enumerate(["forward", "backward", "forward"])]
    assert [k for k, _ in graph_keys(reports)] == [
        ("f", "m.py", 1, "forward", 0),
        ("f", "m.py", 1, "backward", 0),
        ("f", "m.py", 1, "forward", 1),
    ]


# --- export-trace --------------------------------------------------------------------------


def check_balanced(trace: dict[str, Any]) -> dict[int, str]:
    """Every B has its E on the same lane, properly nested, time never going back; returns process names."""
    stacks: dict[tuple[int, int], list[str]] = {}
    last: dict[tuple[int, int], float] = {}
    names = {}
    for e in trace["traceEvents"]:
        if e["ph"] == "M":
            names[e["pid"]] = e["args"]["name"]
            continue
        lane = (e["pid"], e["tid"])
        assert e["ts"] >= last.get(lane, float("-inf")), e
        last[lane] = e["ts"]
        if e["ph"] == "B":
            stacks.setdefault(lane, []).append(e["name"])
        else:
            assert e["ph"] == "E" and stacks.get(lane) and stacks[lane].pop() == e["name"], e
    assert all(not s for s in stacks.values()), stacks
    return names


def test_export_trace_writes_balanced_chrome_json(
    filled: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, runs = filled
    target = tmp_path / "trace.json"
    rc, out, err = cli(capsys, "--store", str(path), "export-trace", "candidate", "-o", str(target))
    assert rc == 0 and err == ""
    assert str(target) in out and f"workers {WORKER_PID}" in out
    trace = json.loads(target.read_text())
    names = check_balanced(trace)
    assert names == {runs["candidate"].pid: "training process", WORKER_PID: f"sandbox worker {WORKER_PID}"}
    begun = [e["name"] for e in trace["traceEvents"] if e["ph"] == "B"]
    assert begun.count("compile_in_worker") == 4 and "forward graph 2/0 (failed)" in begun
    worker = [e for e in trace["traceEvents"] if e["ph"] == "B" and e["name"] == "GraphLowering.run"]
    assert worker and all(e["pid"] == WORKER_PID for e in worker)

    rc, _, err = cli(
        capsys, "--store", str(path), "export-trace", "candidate", "-o", str(tmp_path / "no" / "such" / "dir.json")
    )
    assert rc == 1 and "cannot write" in err and err.count("\n") == 1


# --- gc --------------------------------------------------------------------------------------


def test_gc_keeps_the_n_newest(store_copy: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]) -> None:
    path, runs = store_copy
    store = ["--store", str(path)]
    rc, out, _ = cli(capsys, *store, "gc", "--keep", "2")
    assert rc == 0 and "deleted 2 run(s)" in out and f"2 left in {path}" in out
    assert names_listed(cli(capsys, *store, "runs")[1]) == ["candidate", "experiment"]
    rc, out, _ = cli(capsys, *store, "gc", "--older-than", "5d")
    assert rc == 0 and "deleted 1 run(s)" in out
    assert names_listed(cli(capsys, *store, "runs")[1]) == ["candidate"]
    rc, out, _ = cli(capsys, *store, "gc", "--keep", "5")
    assert rc == 0 and "nothing to delete" in out
    # Kernel sources of deleted runs are gone; those of the kept run stay.
    store_ = open_store(str(path), readonly=True)
    kept = {k["source_hash"] for r in store_.reports(runs["candidate"].run_id) for k in r.kernels if k["source_hash"]}
    assert store_.counts()["kernel_sources"] == len(kept)
    store_.close()


def test_gc_needs_a_rule(store_copy: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--store", str(store_copy[0]), "gc"])
    assert e.value.code == 2 and "--keep N and/or --older-than" in capsys.readouterr().err
    rc, _, err = cli(capsys, "--store", str(store_copy[0]), "gc", "--older-than", "soon")
    assert rc == 2 and "bad age 'soon'" in err


# --- bad input: one clear line, non-zero, nothing overwritten ------------------------------------


def one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "argv",
    [
        ["runs"],
        ["show", "latest"],
        ["diff", "a", "b"],
        ["export-trace", "latest", "-o", "t.json"],
        ["gc", "--keep", "1"],
    ],
)
def test_corrupt_store_is_reported_and_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    path = tmp_path / "runs.db"
    content = b"SQLite format 3\x00" + bytes(range(256)) * 32
    path.write_bytes(content)
    rc, out, err = cli(capsys, "--store", str(path), *argv)
    assert rc == 1 and out == ""
    assert str(path) in one_line(err) and "untouched" in err and "SANDBOX_STORE" in err
    assert path.read_bytes() == content and sorted(os.listdir(tmp_path)) == ["runs.db"]


def test_no_store_yet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "fresh" / "runs.db"
    for argv in (["runs"], ["gc", "--keep", "3"]):
        rc, _, err = cli(capsys, "--store", str(path), *argv)
        assert rc == 1 and str(path) in one_line(err) and "sandbox demo" in err
    assert not path.exists()


def test_newer_schema(store_copy: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]) -> None:
    path = store_copy[0]
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    before = path.read_bytes()
    for argv in (["runs"], ["gc", "--keep", "0"]):
        rc, _, err = cli(capsys, "--store", str(path), *argv)
        assert rc == 1 and "newer version" in one_line(err) and "upgrade" in err
    assert path.read_bytes() == before


def test_read_only_store_cannot_be_collected(
    store_copy: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]
) -> None:
    path = store_copy[0]
    frozen = ["chattr", "+i", str(path)] if os.geteuid() == 0 else None
    if frozen:
        if subprocess.run(frozen, capture_output=True).returncode != 0:
            (pytest.fail if IN_CI else pytest.skip)("as root a read-only file needs `chattr +i`, which failed here")
    else:
        path.chmod(0o444)
    try:
        before = path.read_bytes()
        rc, _, err = cli(capsys, "--store", str(path), "gc", "--keep", "0")
        assert rc == 1 and "read-only" in one_line(err) and str(path) in err
        assert path.read_bytes() == before
        rc, out, _ = cli(capsys, "--store", str(path), "runs")  # reading still works
        assert rc == 0 and len(names_listed(out)) == 4
    finally:
        if frozen:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o644)


def test_unknown_and_ambiguous_runs(filled: tuple[Path, dict[str, Run]], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = filled
    rc, _, err = cli(capsys, "--store", str(path), "show", "no-such-run")
    assert rc == 1 and "no run 'no-such-run'" in one_line(err) and str(path) in err and "sandbox runs" in err
    rc, _, err = cli(capsys, "--store", str(path), "diff", "baseline", "nope")
    assert rc == 1 and "no run 'nope'" in one_line(err)
    rc, _, err = cli(capsys, "--store", str(path), "runs", "--since", "last tuesday")
    assert rc == 2 and "bad date 'last tuesday'" in one_line(err)


def test_unreachable_postgresql(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        (pytest.fail if IN_CI else pytest.skip)("the PostgreSQL driver is not installed: pip install 'psycopg[binary]'")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, _, err = cli(capsys, "--store", f"postgresql://me:hunter2@127.0.0.1:{port}/runs", "runs")
    # The password on the command line draws its own warning first; the error itself is one line.
    warning, _, error = err.partition("\n")
    assert "password in --store is visible to other users" in warning
    assert rc == 1 and "cannot reach PostgreSQL store postgresql://me:***@127.0.0.1" in one_line(error)
    assert "hunter2" not in err


def test_console_script_reports_bad_store_in_one_line(tmp_path: Path) -> None:
    """The installed ``sandbox`` command, as a user runs it: exit code and stderr."""
    path = tmp_path / "runs.db"
    path.write_bytes(b"definitely not sqlite" * 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["SANDBOX_STORE"] = str(path)  # the default location, from the environment
    proc = subprocess.run([str(SCRIPT), "runs"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert one_line(proc.stderr).startswith(f"sandbox runs: store {path} is not a readable SQLite database")
    assert path.read_bytes() == b"definitely not sqlite" * 100


# --- the demo, for real ------------------------------------------------------------------------


def test_tracing_needs_a_collector() -> None:
    assert tracing_endpoint({}) is None
    assert tracing_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) == "http://collector:4317"
    assert (
        tracing_endpoint({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}) == "http://c:4318/v1/traces"
    )


@pytest.mark.slow
def test_demo_stores_a_run_that_show_diff_and_export_read(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store" / "runs.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "OTEL_"))}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    proc = subprocess.run(
        [str(SCRIPT), "--store", str(store), "demo", "--models", "mlp"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert "tracing on: no OpenTelemetry collector is configured, so spans are written to" in proc.stderr
    spans = [json.loads(line) for line in (store.parent / "demo-spans.jsonl").read_text().splitlines()]
    graph_spans = [s for s in spans if s["name"].startswith("torch.compile ")]
    assert len(graph_spans) == 2 and {s["attributes"]["sandbox.outcome"] for s in graph_spans} == {"isolated"}
    assert any(s["name"] == "GraphLowering.run" for s in spans)  # a worker stage, as a span
    assert "1/1 mlp: matches eager, 2 graph(s)" in proc.stderr
    saved = next(line for line in proc.stdout.splitlines() if line.startswith("run "))
    run_id = saved.split()[1].rstrip(":")
    assert saved == f"run {run_id}: 2 report(s) saved in {store}"
    # The commands the demo prints work when pasted into the user's shell as it is (no venv activated).
    show = next(line for line in proc.stdout.splitlines() if line.startswith("See it here with: "))
    assert show.endswith(f"--store {store} show {run_id[:12]}"), show
    pasted = subprocess.run(
        show.removeprefix("See it here with: "), shell=True, env=env, capture_output=True, text=True, timeout=60
    )
    assert pasted.returncode == 0 and run_id in pasted.stdout, pasted.stdout + pasted.stderr
    dashboard = next(line for line in proc.stdout.splitlines() if line.startswith("To see every compile"))
    assert dashboard.endswith(f"--store {store} dashboard"), dashboard
    assert dashboard.split(": ", 1)[1].split()[0] == show.split(": ", 1)[1].split()[0]  # the command that worked

    rc, out, _ = cli(capsys, "--store", str(store), "show", "latest", "--json")
    data = json.loads(out)
    assert data["run"]["run_id"] == run_id and data["run"]["name"] == "demo"
    reports = [CompileReport.from_dict(r) for r in data["reports"]]
    assert [(r.graph_kind, r.outcome) for r in reports] == [("forward", "isolated"), ("backward", "isolated")]
    worker = reports[0].worker_pid
    assert worker and worker != data["run"]["pid"] and all(r.kernels for r in reports)

    rc, out, _ = cli(capsys, "--store", str(store), "show", run_id[:6])
    assert rc == 0 and "forward 0/0" in out and "backward 0/0" in out and str(worker) in out

    rc, out, _ = cli(capsys, "--store", str(store), "diff", "demo", run_id, "--json")
    d = json.loads(out)
    assert d["graphs"]["matched"] == 2 and d["kernels"]["unchanged"] == sum(len(r.kernels) for r in reports)

    target = tmp_path / "trace.json"
    assert cli(capsys, "--store", str(store), "export-trace", "latest", "-o", str(target))[0] == 0
    names = check_balanced(json.loads(target.read_text()))
    assert names[data["run"]["pid"]] == "training process" and names[worker] == f"sandbox worker {worker}"
