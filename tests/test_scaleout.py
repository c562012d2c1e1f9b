"""Scale-out (issue 8, points 1, 3 and 5): torchrun jobs, worker sizing, Inductor's Redis
remote caches, per-rank traces and metrics.

* A real ``torchrun --nproc-per-node 2 --standalone`` job (gloo, CPU) trains the zoo's MLP under
  DistributedDataParallel through the sandbox into one SQLite store, with tracing to a real
  OTLP receiver (rotel, as in ``sinks/test_otel.py``) and a metrics endpoint per rank. Checked: the
  store groups both ranks' runs under torchrun's job id, every run and report carries rank,
  local rank, world size and job; each rank's spans carry its rank and its resource names the
  process (``service.instance.id`` = its run id); endpoint base port + N serves local rank N's
  metrics; the ranks shared the host's compile service, whose worker got all the cores as
  Inductor compile threads (tests/isolation/test_service.py tests the service itself).
* A real ``redis-server`` on 127.0.0.1: a first process compiles and fills the remote caches;
  a second one with an empty local cache directory (a second machine) is served by them and
  reports remote hits per graph with the compile time they saved, which the metrics count;
  a third one with the server stopped reports the remote caches unavailable and still
  compiles, correctly.
* The sizing rule and the job id as pure functions.

torchrun comes with torch; redis-server from Debian and the redis package from PyPI
(``apt-get install -y --no-install-recommends redis-server``, ``pip install redis``), rotel from
PyPI: missing, the tests that need them skip locally and fail in CI (``CI=true``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from otlp_receiver import Receiver
from support import HELPERS, IN_CI, ROOT, fresh_cache_dir, run_script, script_env

from sandbox.isolation import sizing
from sandbox.record.environment import job_id

# --- the sizing rule and the job id (pure) -----------------------------------------------------


def test_compile_threads_share_the_cores_between_ranks_and_workers() -> None:
    assert sizing.compile_threads(workers=1, ranks=1, cores=16) == 16
    assert sizing.compile_threads(workers=1, ranks=8, cores=16) == 2
    assert sizing.compile_threads(workers=2, ranks=8, cores=16) == 1
    assert sizing.compile_threads(workers=1, ranks=8, cores=12) == 1  # rounded down, never 0
    assert sizing.compile_threads(workers=4, ranks=8, cores=16) == 1  # oversubscribed: still 1 each
    for ranks, workers, cores in [(1, 1, 1), (2, 1, 2), (8, 1, 64), (8, 2, 64), (3, 2, 16), (3, 3, 10)]:
        threads = sizing.compile_threads(workers, ranks, cores)
        assert ranks * workers * threads <= cores, (ranks, workers, cores, threads)
        assert ranks * workers * (threads + 1) > cores  # the largest share that fits


def test_worker_env_follows_the_rule_and_respects_the_user(recwarn: pytest.WarningsRecorder) -> None:
    assert sizing.worker_env(1, {"LOCAL_WORLD_SIZE": "4"}, cores=16) == {"TORCHINDUCTOR_COMPILE_THREADS": "4"}
    assert sizing.worker_env(2, {"LOCAL_WORLD_SIZE": "4"}, cores=16) == {"TORCHINDUCTOR_COMPILE_THREADS": "2"}
    assert sizing.worker_env(1, {}, cores=6) == {"TORCHINDUCTOR_COMPILE_THREADS": "6"}  # one rank
    assert sizing.worker_env(1, {"LOCAL_WORLD_SIZE": "x"}, cores=6) == {"TORCHINDUCTOR_COMPILE_THREADS": "6"}
    assert sizing.worker_env(2, {"LOCAL_WORLD_SIZE": "4", "TORCHINDUCTOR_COMPILE_THREADS": "3"}, cores=16) == {}
    assert not [w for w in recwarn if "compile processes" in str(w.message)]
    sizing._warned = False
    with pytest.warns(
        RuntimeWarning, match=r"8 rank\(s\) on this host x 4 worker\(s\) each = 32 compile processes for 16 core"
    ):
        sizing.worker_env(4, {"LOCAL_WORLD_SIZE": "8"}, cores=16)
    assert sizing.usable_cores() == len(os.sched_getaffinity(0))


def test_job_id_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDBOX_JOB", raising=False)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert job_id() is None
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's default without --rdzv-id
    assert job_id() is None
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run-7")
    assert job_id() == "run-7"
    monkeypatch.setenv("SANDBOX_JOB", "nightly-42")
    assert job_id() == "nightly-42"
    assert job_id(SimpleNamespace(job="from-option")) == "from-option"

    from sandbox.options import OptionError, Options

    assert Options.resolve(env={"SANDBOX_JOB": " nightly-42 "}).job == "nightly-42"
    assert Options.resolve(options={"job": "opt"}, env={"SANDBOX_JOB": "env"}).job == "opt"
    assert Options.resolve(env={}).job is None
    with pytest.raises(OptionError, match="unknown option 'jobs'"):
        Options.resolve(options={"jobs": "x"})


# --- a torchrun job --------------------------------------------------------------------------------


_ATTRIBUTE = re.compile(r"^\s+-> ([^:]+): (\w+)\((.*)\)$")


def spans_with_resources(text: str) -> list[dict[str, Any]]:
    """rotel's detailed debug log -> one dict per span: name, attributes and its resource's attributes."""
    spans: list[dict[str, Any]] = []
    resource: dict[str, Any] = {}
    section = None
    for line in text.splitlines():
        if line.startswith("ResourceSpans #"):
            resource, section = {}, None
        elif line.startswith("Resource attributes:"):
            section = "resource"
        elif line.startswith("Span #"):
            spans.append({"name": "", "attributes": {}, "resource": resource})
            section = "span"
        elif line.startswith(("ScopeSpans #", "InstrumentationScope")):
            section = None
        elif section == "span" and line.strip().startswith("Name"):
            spans[-1]["name"] = line.split(":", 1)[1].strip()
        elif section == "span" and line.strip() in ("Events:", "Links:"):
            section = "span-other"
        else:
            m = _ATTRIBUTE.match(line)
            if m and section in ("resource", "span"):
                value = int(m.group(3)) if m.group(2) == "Int" else m.group(3)
                (resource if section == "resource" else spans[-1]["attributes"])[m.group(1)] = value
    return spans


def _free_ports(n: int) -> int:
    """A base port with ``n`` free ports above it."""
    import socket

    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65535:
            continue
        try:
            for port in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


def _metric(text: str, name: str, labels: dict[str, str]) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
def test_torchrun_job_into_one_store(receiver: Receiver, tmp_path: Path, probe_seed: Path) -> None:
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        message = "torchrun (it comes with torch) is not on PATH"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    store = tmp_path / "team-runs.db"
    out = tmp_path / "out"
    out.mkdir()
    base_port = _free_ports(2)
    env = script_env(
        fresh_cache_dir(tmp_path, probe_seed),
        {
            "SANDBOX_STORE": str(store),
            "SANDBOX_TRACE": "1",
            "SANDBOX_METRICS_PORT": str(base_port),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint("grpc"),
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_SERVICE_NAME": "scaleout-test",
            "PYTHONPATH": os.pathsep.join(p for p in (str(HELPERS), os.environ.get("PYTHONPATH", "")) if p),
        },
    )
    env.pop("TORCHINDUCTOR_COMPILE_THREADS", None)
    proc = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "--standalone", str(HELPERS / "script_scaleout_rank.py"), str(out)],
        cwd=str(HELPERS),
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, f"torchrun exited with {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-8000:]}"
    ranks = {r: json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)}

    # Training: DDP kept the ranks in step; each rank compiled in its own workers.
    assert all(d["in_sync"] for d in ranks.values())
    job = ranks[0]["env"]["TORCHELASTIC_RUN_ID"]
    assert job and job != "none" and ranks[1]["env"]["TORCHELASTIC_RUN_ID"] == job

    # Every run and every report carries rank, local rank, world size and the job.
    for rank, d in ranks.items():
        run = d["run"]
        assert (run["job"], run["rank"], run["local_rank"], run["world_size"]) == (job, rank, rank, 2)
        assert {r["graph_kind"] for r in d["reports"]} == {"forward", "backward"}
        for r in d["reports"]:
            assert (r["job"], r["rank"], r["local_rank"], r["world_size"], r["run_id"]) == (
                job,
                rank,
                rank,
                2,
                run["run_id"],
            )
            assert r["outcome"] in ("isolated", "cache_hit"), r["outcome"]  # a late rank: the caches serve it

    # The sizing rule: the ranks share the host's compile service, whose one worker has all the cores.
    cores = sizing.usable_cores()
    assert ranks[0]["worker_compile_threads"] == ranks[1]["worker_compile_threads"]
    for d in ranks.values():
        assert list(d["worker_compile_threads"].values()) == [str(cores)]

    # One store, the ranks grouped into the job.
    from sandbox.store import open_store

    s = open_store(str(store))
    try:
        runs = s.runs(job=job)
        assert sorted((r["rank"], r["local_rank"], r["world_size"]) for r in runs) == [(0, 0, 2), (1, 1, 2)]
        assert {r["run_id"] for r in runs} == {d["run"]["run_id"] for d in ranks.values()}
        for r in runs:
            stored = s.reports(r["run_id"])
            assert len(stored) == 2 and all(x.job == job and x.rank == r["rank"] for x in stored)
    finally:
        s.close()

    # Metrics: local rank N serves on the base port + N, and what it serves is rank N's.
    for local in (0, 1):
        durations = sum(r["duration_s"] for r in ranks[local]["reports"])
        for scraper in ranks.values():
            text = scraper["scrapes"][str(local)]
            assert _metric(text, "sandbox_compile_duration_seconds_count", {}) == 2
            assert abs(_metric(text, "sandbox_compile_duration_seconds_sum", {}) - durations) < 1e-6, (local, durations)

    # Traces: each rank's spans carry its rank; its resource names the process.
    def graph_spans() -> list[dict[str, Any]]:
        return [
            s
            for s in spans_with_resources(receiver.log.read_text(errors="replace"))
            if s["name"].startswith("torch.compile ") and s["attributes"].get("sandbox.job") == job
        ]

    deadline = time.time() + 30
    while len(graph_spans()) < 4 and time.time() < deadline:
        time.sleep(0.5)
    spans = graph_spans()
    assert len(spans) == 4, [s["name"] for s in spans]
    for rank, d in ranks.items():
        mine = [s for s in spans if s["attributes"].get("sandbox.rank") == rank]
        assert len(mine) == 2
        for s in mine:
            assert s["attributes"]["sandbox.local_rank"] == rank and s["attributes"]["sandbox.world_size"] == 2
            res = s["resource"]
            assert res["service.name"] == "scaleout-test"
            assert res["service.instance.id"] == d["run"]["run_id"]
            assert res["process.pid"] == d["run"]["pid"]
            assert res["sandbox.rank"] == rank and res["sandbox.job"] == job
    assert len({s["resource"]["service.instance.id"] for s in spans}) == 2


# --- Inductor's Redis remote caches ------------------------------------------------------------------


def _remote_env(redis_url: str) -> dict[str, str]:
    return {
        "TORCHINDUCTOR_FX_GRAPH_REMOTE_CACHE": "1",
        "TORCHINDUCTOR_AUTOGRAD_REMOTE_CACHE": "1",
        "TORCHINDUCTOR_REDIS_URL": redis_url,
    }


def _by_kind(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    reports = {r["graph_kind"]: r for r in result["reports"]}
    assert set(reports) == {"forward", "backward"} and len(result["reports"]) == 2, [
        r["graph_kind"] for r in result["reports"]
    ]
    return reports


@pytest.mark.slow
def test_remote_caches_serve_a_second_machine_and_redis_down_is_reported(
    redis_server: Any, tmp_path: Path, probe_seed: Path
) -> None:
    env = _remote_env(redis_server.url)

    # The first machine: misses everywhere, compiles, fills the remote caches.
    first = run_script(
        "script_scaleout_remote.py",
        cache_dir=fresh_cache_dir(tmp_path / "first", probe_seed),
        env={**env, "SANDBOX_JOB": "cache-warmer"},
    )
    assert first["correct"]
    a = _by_kind(first)
    for r in a.values():
        assert r["outcome"] == "isolated" and r["job"] == "cache-warmer"
        remote = r["caches"]["fx_graph_remote"]
        assert (remote["state"], remote["put"], remote["server"]) == ("miss", "ok", redis_server.url), remote
    assert a["forward"]["caches"]["aot_autograd_remote"]["state"] == "miss"
    assert "aot_autograd_remote" not in a["backward"]["caches"]  # one lookup per pair, on the forward
    client = redis_server.client()
    entries = {}
    for kind, r in a.items():
        raw = client.get(f"pt2:fx-graph-v1::{r['caches']['fx_graph']['key']}:c1")
        assert raw is not None, f"the {kind} graph is not in Redis"
        entries[kind] = json.loads(raw)["time_taken_ms"] / 1000.0
        assert 0 < entries[kind] <= r["duration_s"]
    assert client.keys("pt2:autograd-experimental::*"), "no AOTAutograd entry in Redis"
    assert first["metrics"]["fx_graph_remote/miss"] == 2 and first["metrics"]["aot_autograd_remote/miss"] == 1

    # A second machine with an empty local cache: served by Redis, graph by graph.
    second = run_script(
        "script_scaleout_remote.py", cache_dir=fresh_cache_dir(tmp_path / "second", probe_seed), env=env
    )
    assert second["correct"]
    b = _by_kind(second)
    for kind, r in b.items():
        assert (r["outcome"], r["reason"]) == ("cache_hit", "aot_autograd_cache")
        remote = r["caches"]["fx_graph_remote"]
        assert remote["state"] == "hit", remote
        assert remote["time_saved_s"] == pytest.approx(entries[kind], abs=1e-3)
    aot = b["forward"]["caches"]["aot_autograd_remote"]
    assert aot["state"] == "hit" and aot["time_saved_s"] >= max(entries.values())
    m = second["metrics"]
    assert (m["fx_graph_remote/hit"], m["fx_graph_remote/miss"], m["aot_autograd_remote/hit"]) == (2, 0, 1)
    assert m["fx_graph_remote/saved_s"] == pytest.approx(sum(entries.values()), abs=1e-3)
    assert m["aot_autograd_remote/saved_s"] == pytest.approx(aot["time_saved_s"], abs=1e-3)

    # Redis down: Inductor falls back silently; the reports say so, and compiles proceed.
    redis_server.stop()
    down = run_script("script_scaleout_remote.py", cache_dir=fresh_cache_dir(tmp_path / "down", probe_seed), env=env)
    assert down["correct"]
    c = _by_kind(down)
    for r in c.values():
        assert r["outcome"] == "isolated"
        remote = r["caches"]["fx_graph_remote"]
        assert (remote["state"], remote["put"]) == ("unavailable", "unavailable"), remote
        assert remote["lookup_s"] < 2.0  # a refused connection through a redis:// URL fails fast
    assert c["forward"]["caches"]["aot_autograd_remote"]["state"] == "unavailable"
    m = down["metrics"]
    assert (m["fx_graph_remote/unavailable"], m["aot_autograd_remote/unavailable"], m["fx_graph_remote/miss"]) == (
        2,
        1,
        0,
    )


# --- the deployment guide's PostgreSQL roles ----------------------------------------------------------


def test_deployment_guide_postgres_roles(postgres: Any) -> None:
    """The SQL of docs/DEPLOYMENT.md, run as written against a real PostgreSQL (trust auth: the
    passwords are not checked here, the privileges are): the jobs' role creates the schema and
    writes; the dashboard's role reads everything and writes nothing."""
    import psycopg

    from sandbox.record.report import CompileReport, Run
    from sandbox.store import open_store

    guide = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
    sql = re.search(r"```sql\n(.*?)```", guide, re.S).group(1)  # type: ignore[union-attr]
    conn = psycopg.connect(postgres.admin_url, autocommit=True)
    try:
        for line in sql.splitlines():
            statement = line.split("--", 1)[0].strip()
            if statement.startswith("\\c "):
                conn.close()
                conn = psycopg.connect(
                    postgres.admin_url.rsplit("/", 1)[0] + "/" + statement.split()[1], autocommit=True
                )
            elif statement:
                conn.execute(statement.rstrip(";"))
    finally:
        conn.close()
    urls = {
        role: url
        for url, role in re.findall(r"SANDBOX_STORE=(postgresql://(\w+):[^@\s]+@db\.internal:5432/sandbox)", guide)
    }
    assert set(urls) == {"sandbox", "sandbox_dashboard"}, urls
    local = {role: url.replace("db.internal:5432", f"127.0.0.1:{postgres.port}") for role, url in urls.items()}

    writer = open_store(local["sandbox"])
    run = Run(job="job-1", rank=0, world_size=2)
    writer.put_run(run)
    writer.put_reports(
        [CompileReport(run_id=run.run_id, compile_id="0/0", graph_kind="forward", outcome="isolated", job="job-1")]
    )
    writer.close()

    reader = open_store(local["sandbox_dashboard"], readonly=True)
    try:
        runs = reader.runs(job="job-1")
        assert [(r["run_id"], r["summary"]["graphs"]) for r in runs] == [(run.run_id, 1)]
        assert reader.counts() == {"runs": 1, "reports": 1, "kernel_sources": 0}
    finally:
        reader.close()
    with psycopg.connect(local["sandbox_dashboard"]) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM runs")
