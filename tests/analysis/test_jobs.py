"""Rank divergence: ``sandbox job`` and the dashboard's Job page over jobs made by real
sandbox compiles, and the pure analysis (``sandbox/jobs.py``) on synthetic records.

The jobs: each rank is its own process running ``helpers/script_jobs_rank.py`` (a small
function first, which pays Inductor's one-time costs and is the same on every rank, then
the zoo's MLP behind a custom op, two training steps) with ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``SANDBOX_JOB``
set as torchrun sets them, all on one Inductor cache directory (one machine) and one
store. The AOTAutograd cache is off, so a graph served by the FX graph cache still
lists its kernels and can be compared kernel by kernel.

- ``train-1`` (world size 2): rank 0 compiles (cache misses); rank 1, after it, hits the
  FX graph cache: other cache outcomes, the same graphs and kernels.
- ``train-2`` (world size 3, rank 2 never ran): rank 0 hits the cache; rank 1 trains with
  another batch size, so it traces another graph (other shapes, other guards), compiles
  it and generates other kernels. The model calls a custom op (``helpers/slow_ops.py``) whose
  compile waits ``SLOW_OPS_S`` in rank 1's worker only, as on a loaded node: rank 1 is a
  straggler by a margin that does not depend on how fast this machine compiles a small graph.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dashboard_stores import store_files
from streamlit.testing.v1 import AppTest
from support import HELPERS, ROOT, SCRIPT_TIMEOUT_S, fresh_cache_dir, parse_result, script_env

from sandbox.analysis import jobs
from sandbox.cli import render_job
from sandbox.cli.main import main
from sandbox.record.report import CompileReport, Run, Stage
from sandbox.store import open_store

APP = ROOT / "dashboard" / "app.py"

# (job, rank, world size, batch size); each inner tuple runs at once, the tuples one after another.
WAVES = (
    (("train-1", 0, 2, 32),),
    (("train-1", 1, 2, 32), ("train-2", 0, 3, 32), ("train-2", 1, 3, 48)),
)


@dataclass
class JobStore:
    path: Path
    ranks: dict[tuple[str, int], dict[str, Any]]  # (job, rank) -> what the rank's process reported


SLOW_COMPILE_S = 1.5  # what the straggler's worker waits inside its forward graph's compile
STRAGGLER = ("train-2", 1)


def _start(cache: Path, path: Path, job: str, rank: int, world: int, batch: int) -> subprocess.Popen:
    env = script_env(
        cache,
        {
            "SANDBOX_STORE": str(path),
            "SANDBOX_JOB": job,
            "SANDBOX_RUN_NAME": "train",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "TORCHINDUCTOR_AUTOGRAD_CACHE": "0",
            "SLOW_OPS_S": str(SLOW_COMPILE_S if (job, rank) == STRAGGLER else 0.0),
        },
    )
    env.pop("TORCHELASTIC_RUN_ID", None)
    return subprocess.Popen(
        [sys.executable, str(HELPERS / "script_jobs_rank.py"), str(batch)],
        cwd=str(HELPERS),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def job_store(tmp_path_factory: pytest.TempPathFactory, probe_seed: Path) -> JobStore:
    base = tmp_path_factory.mktemp("jobs")
    cache = fresh_cache_dir(base, probe_seed)
    path = base / "runs.db"
    ranks = {}
    for wave in WAVES:
        procs = {(job, rank): _start(cache, path, job, rank, world, batch) for job, rank, world, batch in wave}
        for key, proc in procs.items():
            out, err = proc.communicate(timeout=SCRIPT_TIMEOUT_S)
            result = parse_result(out)
            if proc.returncode != 0 or result is None:
                pytest.fail(f"rank {key} failed ({proc.returncode}):\n{out[-2000:]}\n{err[-6000:]}")
            assert (result["job"], result["rank"]) == key
            ranks[key] = result
    return JobStore(path, ranks)


def sandbox_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# -- the real jobs, through the CLI -----------------------------------------------------------------


def test_the_scenario_made_what_the_tests_expect(job_store: JobStore) -> None:
    """The ranks really did what the docstring says (else the assertions below mean nothing)."""
    r = job_store.ranks
    outcomes = {key: [x["outcome"] for x in v["reports"]] for key, v in r.items()}
    assert outcomes[("train-1", 0)] == ["isolated", "isolated"]
    assert outcomes[("train-1", 1)] == ["cache_hit", "cache_hit"]
    assert outcomes[("train-2", 0)] == ["cache_hit", "cache_hit"]
    assert outcomes[("train-2", 1)] == ["isolated", "isolated"]
    assert all(x["kernels"] > 0 for v in r.values() for x in v["reports"])  # FX graph cache hits list kernels too
    hashes = {key: v["reports"][0]["hash"] for key, v in r.items()}
    assert hashes[("train-2", 1)] != hashes[("train-2", 0)] == hashes[("train-1", 1)] == hashes[("train-1", 0)]


def test_sandbox_job_finds_the_rank_that_diverged(job_store: JobStore, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = sandbox_cli(capsys, "job", "train-2", "--store", str(job_store.path), "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert (
        [r["rank"] for r in report["runs"]] == [0, 1] and report["world_size"] == 3 and report["missing_ranks"] == [2]
    )
    kinds = [(g["graph_kind"], g["co_name"]) for g in report["graphs"]]
    assert kinds == [("inference", "warm"), ("forward", "forward"), ("backward", "forward")]
    assert report["graphs"][0]["findings"] == []  # the same function, served by the cache on both ranks
    forward = report["graphs"][1]
    assert set(forward["findings"]) == {"graph", "cache", "kernels", "straggler"}
    assert forward["hash_groups"] == [[0], [1]]
    assert forward["kernel_ranks"] == [1] and forward["stragglers"] == [1]
    assert forward["cache_groups"] == {"cache hit: fx hit": [0], "isolated: fx miss": [1]}
    rank0, rank1 = forward["ranks"]
    assert rank0["graph_hash"] == job_store.ranks[("train-2", 0)]["reports"][0]["hash"]
    assert rank1["graph_hash"] == job_store.ranks[("train-2", 1)]["reports"][0]["hash"]
    assert rank1["kernel_changes"]["changed"] + rank1["kernel_changes"]["added"] > 0 and rank0["kernel_changes"] is None
    assert report["counts"]["graph"] == 2 and report["counts"]["missing"] == 0
    assert [r["straggler"] for r in report["runs"]] == [False, True]

    rc, text, err = sandbox_cli(capsys, "job", "train-2", "--store", str(job_store.path))
    assert rc == 0, err
    assert "job train-2: 2 ranks (world size 3)" in text and "ranks with no run in the store: 2" in text
    assert "divergence: 2 of 3 graphs differ across ranks" in text
    assert "different graphs (graph hash): ranks 0; ranks 1" in text
    assert "warm (" not in text  # only the graphs that differ, unless --all
    rc, everything, _ = sandbox_cli(capsys, "job", "train-2", "--all", "--store", str(job_store.path))
    assert rc == 0 and "warm (script_jobs_rank.py:" in everything and ": the same on every rank" in everything
    assert (
        f"stragglers: rank 1 {rank1['duration_s']:.2f} s (the other ranks' median {rank0['duration_s']:.2f} s)" in text
    )


def test_sandbox_job_same_graphs_other_cache_outcomes(job_store: JobStore, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = sandbox_cli(capsys, "job", "train-1", "--store", str(job_store.path), "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["missing_ranks"] == [] and report["world_size"] == 2
    assert len(report["graphs"]) == 3
    for g in report["graphs"]:  # rank 0 compiled, rank 1 hit the cache: the same graphs and kernels
        assert "cache" in g["findings"] and "graph" not in g["findings"] and "kernels" not in g["findings"], g[
            "findings"
        ]
        assert len(g["hash_groups"]) == 1 and g["kernel_ranks"] == []


def test_sandbox_job_against_an_earlier_job(job_store: JobStore, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = sandbox_cli(
        capsys, "job", "train-2", "--against", "train-1", "--store", str(job_store.path), "--json"
    )
    assert rc == 0, err
    a = json.loads(out)["against"]
    assert a["earlier"] == "train-1" and [r["rank"] for r in a["ranks"]] == [0, 1]
    assert a["only_now"] == [] and a["only_earlier"] == []
    forward = next(g for g in a["graphs"] if g["graph_kind"] == "forward")
    assert forward["status"] == "matched" and forward["hash_changed"]  # rank 1 traced another graph this time
    rank0, rank1 = a["ranks"]
    assert rank0["graphs"] == rank1["graphs"] == {"matched": 3, "added": 0, "removed": 0}
    assert (
        rank0["kernels"]["changed"] == rank0["kernels"]["added"] == rank0["kernels"]["removed"] == 0
    )  # the same kernels, from the cache
    assert rank1["kernels"]["changed"] + rank1["kernels"]["added"] > 0  # another batch size, other kernels
    assert rank0["compile_s"] == pytest.approx(
        [job_store.ranks[("train-1", 0)]["compile_s"], job_store.ranks[("train-2", 0)]["compile_s"]]
    )

    rc, text, _ = sandbox_cli(capsys, "job", "train-2", "--against", "train-1", "--store", str(job_store.path))
    assert rc == 0 and "against earlier job train-1: slowest rank" in text and "graph changed" in text


def test_sandbox_job_lists_jobs_and_refuses_unknown_ones(
    job_store: JobStore, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = sandbox_cli(capsys, "job", "--store", str(job_store.path))
    assert rc == 0
    lines = [line.split()[0] for line in out.splitlines()[2:]]
    assert lines == ["train-2", "train-1"]  # newest first
    rc, _, err = sandbox_cli(capsys, "job", "nope", "--store", str(job_store.path))
    assert rc == 1 and "no job 'nope'; jobs: train-2, train-1" in err
    rc, _, err = sandbox_cli(capsys, "job", "train-", "--store", str(job_store.path))
    assert rc == 1 and "matches 2 jobs" in err and "give more characters" in err
    rc, out, _ = sandbox_cli(capsys, "job", "latest", "--store", str(job_store.path))
    assert rc == 0 and out.startswith("job train-2:")


# -- the Job page -------------------------------------------------------------------------------------


def as_read(markdown: str) -> str:
    """The page's markdown as it reads: store text arrives backslash-escaped so that it stays text."""
    return re.sub(r"\\(.)", r"\1", markdown)


def open_job_page(store: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("SANDBOX_STORE", str(store))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.query_params = dict(params)
    at.switch_page("pages/job.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_job_page_shows_divergence_and_the_earlier_job(job_store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    before = store_files(job_store.path)
    at = open_job_page(job_store.path, monkeypatch, job="train-2")
    assert store_files(job_store.path) == before  # read-only
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Ranks"] == "2 of 3" and metrics["Graphs that diverge"] == "2 of 3"
    assert metrics["Stragglers"] == "rank 1" and metrics["Slowest rank"] == "rank 1"
    assert metrics["Its compile time"] == f"{job_store.ranks[('train-2', 1)]['compile_s']:.2f} s"
    verdict = as_read(at.markdown[0].value)
    assert "Ranks 2 of 3 have no run in this store." in verdict
    assert "the ranks traced different graphs (other shapes or guards): ranks 0; ranks 1" in verdict
    assert at.query_params["against"] == "train-1"  # the earlier job of the same name, by default

    graphs = next(df.value for df in at.dataframe if "divergence" in df.value.columns)
    forward = graphs[graphs["kind"] == "forward"].iloc[0]
    assert forward["divergence"] == "a different graph, different cache outcomes, different kernels, a straggler"
    assert forward["kernels differ on"] == "1" and forward["stragglers"] == "1" and forward["graph hashes"] == 2
    per_rank = next(df.value for df in at.dataframe if "kernels vs lowest rank" in df.value.columns)
    assert list(per_rank["rank"]) == [0, 1] and list(per_rank["straggler"]) == [False, True]
    assert per_rank["open"][1] == f"graph?run={job_store.ranks[('train-2', 1)]['run_id']}&graph=1"
    against = next(df.value for df in at.dataframe if "then s" in df.value.columns)
    assert list(against["rank"]) == [0, 1] and against["kernels changed"][1] + against["kernels new"][1] > 0


def test_job_page_without_an_earlier_job_and_on_a_store_without_jobs(
    job_store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = open_job_page(job_store.path, monkeypatch, job="train-1", against="")
    assert not [df for df in at.dataframe if "then s" in df.value.columns]  # no earlier job picked
    assert "3 of 3 graphs differ across ranks: 3 with different cache outcomes" in as_read(at.markdown[0].value)

    plain = tmp_path / "plain.db"
    store = open_store(str(plain))
    store.put_run(Run(name="single"))
    store.close()
    at = open_job_page(plain, monkeypatch)
    assert "No run in this store belongs to a job" in at.info[0].value

    at = open_job_page(tmp_path / "nothing-here.db", monkeypatch)
    assert at.title[0].value == "No runs yet" and "sandbox demo" in at.code[0].value


# -- the analysis, on synthetic records -----------------------------------------------------------------


def _report(
    run: Run,
    index: int,
    kind: str = "forward",
    duration: float = 1.0,
    graph_hash: str = "h",
    outcome: str = "isolated",
    kernels: list[dict[str, Any]] | None = None,
) -> CompileReport:
    return CompileReport(
        run_id=run.run_id,
        compile_id=f"{index}/0",
        graph_kind=kind,
        outcome=outcome,
        graph_index=index,
        co_name="step",
        filename="/src/train.py",
        line=10 + index,
        duration_s=duration,
        graph={"hash": graph_hash},
        caches={"fx_graph": {"state": "hit" if outcome == "cache_hit" else "miss"}},
        kernels=[{"name": "k", "kind": "cpp", "source_hash": "s"}] if kernels is None else kernels,
    )


def _job(*ranks: list[CompileReport], job: str = "j", world: int | None = None) -> jobs.JobReport:
    runs, by_run = [], {}
    for rank, reports in enumerate(ranks):
        run = Run(job=job, rank=rank, world_size=world or len(ranks), started_at=1000.0 + rank)
        for r in reports:
            r.run_id = run.run_id
        runs.append(run.to_dict())
        by_run[run.run_id] = reports
    return jobs.analyse_job(job, runs, lambda run_id: by_run[run_id])


def test_straggler_rule() -> None:
    # More than 2x the others' median, and at least 1 s more.
    assert jobs.stragglers({0: 1.0, 1: 1.1, 2: 3.0}) == [2]
    assert jobs.stragglers({0: 1.0, 1: 1.0, 2: 2.0}) == []  # exactly 2x: not more
    assert jobs.stragglers({0: 0.1, 1: 0.1, 2: 0.9}) == []  # 9x, but only 0.8 s more
    assert jobs.stragglers({0: 10.0, 1: 25.0}) == [1]  # two ranks: each against the other
    assert jobs.stragglers({0: 5.0}) == []
    assert jobs.STRAGGLER_FACTOR == 2.0 and jobs.STRAGGLER_MIN_S == 1.0  # as docs/ARCHITECTURE.md says


def test_identical_ranks_do_not_diverge() -> None:
    r = _job([_report(Run(), 0), _report(Run(), 1, "backward")], [_report(Run(), 0), _report(Run(), 1, "backward")])
    assert r.divergent == [] and r.counts == dict.fromkeys(jobs.FINDINGS, 0)
    assert all(g.ranks[1].kernel_changes == {"added": 0, "removed": 0, "changed": 0, "unchanged": 1} for g in r.graphs)


def test_a_graph_only_some_ranks_compiled_and_kernels_that_differ() -> None:
    r = _job(
        [_report(Run(), 0), _report(Run(), 1)],
        [_report(Run(), 0, kernels=[{"name": "k", "kind": "cpp", "source_hash": "other"}])],
        [_report(Run(), 0, outcome="cache_hit", kernels=[])],  # served whole by a cache: no inventory to compare
    )
    first, second = r.graphs
    assert first.findings == ["cache", "kernels"] and first.kernel_ranks == [1]
    assert first.ranks[2].kernel_changes is None  # not comparable, not "different"
    assert second.findings == ["missing"] and second.missing == [1, 2]


def test_reports_without_a_graph_hash_neither_match_nor_differ() -> None:
    older = _report(Run(), 0)
    older.graph = {}  # stored before reports had a graph hash
    r = _job([_report(Run(), 0)], [older], [_report(Run(), 0, graph_hash="other")])
    assert r.graphs[0].hash_groups == [[0], [2]] and r.graphs[0].findings == ["graph"]
    r = _job([_report(Run(), 0)], [older])
    assert r.graphs[0].hash_groups == [[0]] and r.graphs[0].findings == []


def test_shared_compiles_say_who_compiled_and_who_waited() -> None:
    """Rank 0 compiles the forward graph while ranks 1 and 2 wait for it; the backward graph
    rank 2 got from a process of no rank of this job (another host's job, through Redis)."""
    from dashboard.queries import job as jq  # the dashboard's queries load pandas: only here

    runs = [Run(job="j", rank=rank, world_size=3, started_at=1000.0 + rank, pid=100 + rank) for rank in range(3)]
    for run in runs:
        run.hostname = "h"

    def shared(rank: int, kind: str, role: str, compiled_by: int | None = None, **kw: Any) -> CompileReport:
        t = 2000.0
        r = _report(runs[rank], 0 if kind == "forward" else 1, kind=kind, duration=kw.pop("duration", 10.0))
        r.stages = [Stage("wait_for_worker", t, t + kw.pop("worker_wait", 0.0))]
        r.single_flight = {"role": role, "via": kw.pop("via", "service"), **kw}
        if compiled_by is not None:
            r.single_flight["compiled_by"] = {"pid": compiled_by, "host": "h", "rank": 7}
        return r

    reports = {
        # Rank 0 waited 4 s for a free worker, then compiled 6 s; the waiters' 10 s are that whole time.
        0: [
            shared(0, "forward", "compiled", worker_wait=4.0, served=[{"pid": 101}, {"pid": 102}]),
            shared(0, "backward", "alone", duration=3.0),
        ],
        1: [shared(1, "forward", "waited", 100, waited_s=10.0, worker_wait=10.0), shared(1, "backward", "alone")],
        2: [
            shared(2, "forward", "waited", 100, waited_s=10.0, worker_wait=10.0),
            shared(2, "backward", "waited", 999, waited_s=5.0, worker_wait=5.0, duration=5.0, via="redis"),
        ],
    }
    by_run = {runs[rank].run_id: rs for rank, rs in reports.items()}
    for rank, rs in reports.items():
        for r in rs:
            r.run_id = runs[rank].run_id
    report = jobs.analyse_job("j", [r.to_dict() for r in runs], lambda run_id: by_run[run_id])
    forward = next(g for g in report.graphs if g.graph_kind == "forward")
    assert forward.compiled_on == [0] and forward.waited == [1, 2]
    assert [(row.shared, row.compiled_by, row.waited_s) for row in forward.ranks] == [
        ("compiled", None, None),
        ("waited", 0, 10.0),  # by pid and host, not by the rank the report names
        ("waited", 0, 10.0),
    ]
    # Every rank spent 6 s on the forward graph once rank 0's wait for a worker is left out: no straggler.
    assert [row.duration_s for row in forward.ranks] == [6.0, 6.0, 6.0] and forward.stragglers == []
    backward = next(g for g in report.graphs if g.graph_kind == "backward")
    assert backward.compiled_on == [0, 1] and backward.waited == [2]
    assert (backward.ranks[2].compiled_by, backward.ranks[2].compiled_by_host) == (None, "h")
    assert report.compiles == 3 and report.shared_graphs == 2
    r0, r1, r2 = report.runs
    assert (r0.served_graphs, r0.waited_graphs) == (1, 0) and (r2.waited_graphs, r2.flight_wait_s) == (2, 15.0)
    assert r0.wait_s == 4.0 and r1.wait_s == 0.0  # a wait for another's compile is no wait for a worker
    text = render_job.job(report)
    assert "compiles: 3 for 2 graphs on 3 ranks; 2 graph(s) compiled once for several ranks" in text
    waits = "rank 1 10.00 s for rank 0 (service); rank 2 10.00 s for rank 0 (service)"
    assert f"compiled on rank 0; waited: {waits}" in text
    assert "rank 2 5.00 s for a process of no rank of this job on h (redis)" in text
    verdict = " ".join(jq.job_verdict(report))
    assert "3 compiles for 2 graphs on 3 ranks: 2 graph(s) compiled once (on rank 0, 1)" in verdict
    assert "at most 10.00 s" in verdict
    rows = jq.job_graph_rows(report)
    assert list(rows["waited"]) == ["1 (10.00 s); 2 (10.00 s)", "2 (5.00 s)"]
    assert list(jq.job_graph_ranks(report, 0)["shared"]) == [
        "compiled (service)",
        "waited 10.00 s for rank 0 (service)",
        "waited 10.00 s for rank 0 (service)",
    ]


def test_newest_run_per_rank_and_missing_ranks() -> None:
    old = Run(job="j", rank=1, world_size=4, started_at=1.0).to_dict()
    new = Run(job="j", rank=1, world_size=4, started_at=2.0).to_dict()
    zero = Run(job="j", rank=0, world_size=4, started_at=1.5).to_dict()
    chosen, restarts = jobs.newest_per_rank([new, zero, old])
    assert list(chosen) == [0, 1] and chosen[1] is new and restarts == {1: 1}
    r = jobs.analyse_job("j", [old, new, zero], lambda run_id: [])
    assert r.missing_ranks == [2, 3] and [x.restarts for x in r.runs] == [0, 1]
    with pytest.raises(ValueError, match="job 'k' has no runs"):
        jobs.analyse_job("k", [], lambda run_id: [])


def test_resolving_jobs_and_the_previous_one() -> None:
    known = [
        {"job": "nightly-3", "names": ["train"], "started_at": 30.0},
        {"job": "adhoc", "names": ["probe"], "started_at": 20.0},
        {"job": "nightly-2", "names": ["train"], "started_at": 10.0},
    ]
    assert jobs.resolve_job("latest", known) == "nightly-3"
    assert jobs.resolve_job("adh", known) == "adhoc"
    with pytest.raises(LookupError, match="matches 2 jobs"):
        jobs.resolve_job("nightly", known)
    with pytest.raises(LookupError, match="no run in this store belongs to a job"):
        jobs.resolve_job("x", [])
    assert jobs.previous_job("nightly-3", known) == "nightly-2"  # same name first
    assert jobs.previous_job("adhoc", known) == "nightly-2"  # else the one before
    assert jobs.previous_job("nightly-2", known) is None


# -- the Job page in a real browser ----------------------------------------------------------------------


def test_job_page_in_a_browser(job_store: JobStore) -> None:
    """``streamlit run dashboard/app.py`` on the jobs' store, the Job page opened by its URL in
    headless Chromium (``browser.py``, as ``dashboard/test_dashboard_browser.py`` does; skipped locally
    without Chromium or Playwright, a failure with ``CI=true``); a screenshot goes to
    ``test-artifacts/dashboard/``."""
    from browser import CHROMIUM, load, metric_values, missing, serve, unavailable

    if missing():
        unavailable(missing())  # type: ignore[arg-type]
    from playwright.sync_api import sync_playwright

    with serve(job_store.path, "job-dashboard-server.log") as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            )
            # The app's front page first: a fresh server opened at a deep link runs the page
            # file on its own, without the app's navigation (Streamlit's pages/ directory).
            load(browser, f"{url}/", "job-runs", '[data-testid="stDataFrame"]').close()
            page = load(browser, f"{url}/job?job=train-2&against=train-1", "job", '[data-testid="stDataFrame"]')
            assert page.locator("h1").first.inner_text() == "Job"
            assert "Job" in page.locator('[data-testid="stSidebarNav"]').inner_text()
            m = metric_values(page)
            assert m["Ranks"] == "2 of 3" and m["Stragglers"] == "rank 1"
            verdict = page.locator('[data-testid="stMarkdownContainer"] ul').first.inner_text()
            assert "traced different graphs" in verdict and "Against train-1" in verdict
            assert page.locator('[data-testid="stDataFrame"]').count() == 5
            page.close()
            browser.close()


def test_job_queries_on_synthetic_ranks() -> None:
    """The dashboard's job tables and verdict, without Streamlit (``dashboard/queries/job.py``)."""
    from dashboard.queries import job as q

    r = _job(
        [_report(Run(), 0, duration=1.0), _report(Run(), 1, "backward")],
        [_report(Run(), 0, duration=4.0, graph_hash="h2"), _report(Run(), 1, "backward")],
        world=4,
    )
    graphs = q.job_graph_rows(r)
    assert list(graphs["diverges"]) == [True, False]
    assert graphs["divergence"][0] == "a different graph, a straggler" and graphs["stragglers"][0] == "1"
    ranks = q.job_graph_ranks(r, 0)
    assert list(ranks["straggler"]) == [False, True] and list(ranks["graph hash"]) == ["h", "h2"]
    verdict = q.job_verdict(r)
    assert verdict[0] == "Ranks 2, 3 of 4 have no run in this store."
    assert "a straggler: rank 1 took 4.00 s against the other ranks' median of 1.00 s" in verdict[3]
    assert q.job_cards(r)["stragglers"] == [1] and q.job_against_rows(r).empty
