"""The run store: where it lives, what it holds, that nothing is lost, and what it refuses.

Reports here are synthetic (``CompileReport`` / ``Run`` objects) unless a real compile
is the point: the store only sees the record. Writers run in their own processes, the
way training jobs do, and go through the public path: ``Runtime.publish`` into
the background writer, ``sandbox.flush()``.

PostgreSQL: the tests start their own server from Debian's ``postgresql`` package
(``initdb`` + ``pg_ctl`` in a temporary directory, on a free port, as a non-root user
when run as root; ``tests/postgres_server.py``, the ``postgres`` fixture of ``tests/conftest.py``)
and stop it afterwards. Locally, a missing server or driver skips
with what to install; with ``CI=true`` it fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, free_port, missing

from sandbox.record.report import CompileReport, Failure, Run, Stage
from sandbox.store import StoreError, default_location, open_store
from sandbox.store.schema import SCHEMA_VERSION

# --- synthetic records -------------------------------------------------------------------


def kernel(name: str, body: str, kind: str = "cpp") -> dict[str, Any]:
    source = f"// {name}\n{body}\n"
    return {
        "name": name,
        "kind": kind,
        "source": source,
        "source_hash": hashlib.sha256(source.encode()).hexdigest(),
        "lines": source.count("\n"),
        "calls": 1,
    }


SHARED_KERNELS = [kernel(f"cpp_fused_add_{i}", f"out[i] = in[i] + {i};") for i in range(20)]


def make_run(name: str | None = None, tags: list[str] | None = None, started_at: float | None = None) -> Run:
    return Run(name=name, tags=tags or [], started_at=started_at or time.time(), torch="2.13.0+cpu", device="test CPU")


def make_report(run: Run, index: int, kernels: list[dict[str, Any]] | None = None, **fields: Any) -> CompileReport:
    t = run.started_at + index
    values: dict[str, Any] = dict(
        run_id=run.run_id,
        compile_id=f"{index}/0",
        graph_kind="forward",
        outcome="isolated",
        graph_index=index,
        co_name="forward",
        filename="/src/model.py",
        line=10 + index,
        worker_pid=4321,
        started_at=t,
        duration_s=0.5,
        stages=[
            Stage("inductor_compile", t, t + 0.5),
            Stage("compile_in_worker", t + 0.1, t + 0.4, "worker", "inductor_compile"),
        ],
        caches={"fx_graph": {"state": "miss", "key": "k"}},
        counters={"inductor": {"fxgraph_cache_miss": 1}},
        metrics={"generated_kernel_count": 2, "nodes_num_elem": [[1, 2]]},
        graph={"nodes": 12, "ops": 8, "inputs": 3},
        kernels=[dict(k) for k in (SHARED_KERNELS[:2] if kernels is None else kernels)],
    )
    values.update(fields)
    return CompileReport(**values)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- PostgreSQL (the ``postgres`` fixture) ------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store location of each kind."""
    if request.param == "sqlite":
        return str(tmp_path / "runs.db")
    return request.getfixturevalue("postgres").new_database()


# --- where it lives ------------------------------------------------------------------------


def test_default_location_is_in_the_user_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SANDBOX_STORE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "torch-compile-sandbox" / "runs.db"
    assert default_location() == str(expected)
    store = open_store()
    store.close()
    assert expected.is_file()

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_location() == str(tmp_path / "home" / ".cache" / "torch-compile-sandbox" / "runs.db")

    monkeypatch.setenv("SANDBOX_STORE", str(tmp_path / "elsewhere.db"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_location() == str(tmp_path / "elsewhere.db")
    open_store().close()
    assert (tmp_path / "elsewhere.db").is_file()


def test_sqlite_store_is_in_wal_mode(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "runs.db"))
    store.put_run(make_run())
    store.close()
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- what it holds -------------------------------------------------------------------------


def test_store_holds_json_and_text_only(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    store = open_store(str(path))
    run = make_run("json-only", ["a", "b"])
    store.put_run(run)
    failure = Failure(kind="crash", message="worker 1 was killed by SIGSEGV", signal="SIGSEGV", log_tail=["x"])
    store.put_reports([make_report(run, 0), make_report(run, 1, outcome="failed", failure=failure, fallback="eager")])
    store.close()

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert set(tables) == {"meta", "runs", "reports", "kernel_sources"}
    checked = 0
    for table in tables:
        columns = conn.execute(f"PRAGMA table_info({table})").fetchall()
        for _, column, declared, *_ in columns:
            assert "BLOB" not in declared.upper(), (table, column, declared)
            types = {t for (t,) in conn.execute(f"SELECT DISTINCT typeof({column}) FROM {table}")}
            assert types <= {"text", "integer", "real", "null"}, (table, column, types)
            for (value,) in conn.execute(f"SELECT {column} FROM {table}"):
                checked += 1
                if isinstance(value, str):
                    assert not value.startswith(("\x80", "(dp", "ccopy_reg")), (table, column, value[:40])
                    if column in ("data", "tags"):
                        json.loads(value)
    assert checked > 20
    data = json.loads(conn.execute("SELECT data FROM reports WHERE outcome = 'failed'").fetchone()[0])
    assert data["failure"]["signal"] == "SIGSEGV"


def test_kernel_sources_are_stored_once_per_hash(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    store = open_store(str(path))
    runs = 25
    for i in range(runs):
        run = make_run(f"run-{i}")
        store.put_run(run)
        # Every run: the same 20 kernels over 5 graphs, plus one kernel of its own.
        reports = [make_report(run, g, SHARED_KERNELS[4 * g : 4 * g + 4]) for g in range(5)]
        reports.append(make_report(run, 5, [kernel(f"cpp_fused_mine_{i}", f"x = {i};")]))
        store.put_reports(reports)
    assert store.counts() == {"runs": runs, "reports": runs * 6, "kernel_sources": 20 + runs}

    # Reports keep the hash, not the text; reading with sources puts the text back.
    latest = store.get_run("latest")
    assert latest["name"] == f"run-{runs - 1}"
    stored = store.reports(latest["run_id"])
    assert all("source" not in k for r in stored for k in r.kernels)
    with_sources = store.reports(latest["run_id"], with_sources=True)
    assert with_sources[0].kernels[0]["source"] == SHARED_KERNELS[0]["source"]
    store.close()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    body = SHARED_KERNELS[3]["source"]
    assert conn.execute("SELECT COUNT(*) FROM kernel_sources WHERE source = ?", (body,)).fetchone()[0] == 1
    assert (
        conn.execute("SELECT COUNT(*) FROM reports WHERE data LIKE ?", (f"%{body.splitlines()[1]}%",)).fetchone()[0]
        == 0
    )


def test_put_and_get_round_trip(location: str) -> None:
    store = open_store(location)
    old = make_run("nightly", ["cpu", "baseline"], started_at=time.time() - 10 * 86400)
    new = make_run("nightly", ["cpu", "max-autotune"])
    other = make_run("experiment", ["gpu"], started_at=time.time() - 86400)
    for run in (old, new, other):
        store.put_run(run)
    failure = Failure(kind="timeout", message="compile ran past 1800 s", signal="SIGKILL", worker_pid=7)
    reports = [
        make_report(new, 0),
        make_report(new, 1, outcome="cache_hit", reason="fx_graph_cache", kernels=[]),
        make_report(new, 2, outcome="failed", failure=failure, fallback="eager", kernels=[]),
    ]
    assert store.put_reports(reports) == 3
    assert store.put_reports(reports[:1]) == 1  # idempotent per report id
    store.put_reports([make_report(old, 0, SHARED_KERNELS[5:7])])

    back = store.reports(new.run_id, with_sources=True)
    assert [r.to_dict() for r in back] == [r.to_dict() for r in reports]
    assert back[2].failure == failure and isinstance(back[0].stages[0], Stage)

    assert [r["run_id"] for r in store.runs()] == [new.run_id, other.run_id, old.run_id]
    assert [r["run_id"] for r in store.runs(name="nightly")] == [new.run_id, old.run_id]
    assert [r["run_id"] for r in store.runs(tag="max-autotune")] == [new.run_id]
    assert [r["run_id"] for r in store.runs(since=time.time() - 2 * 86400)] == [new.run_id, other.run_id]
    assert [r["run_id"] for r in store.runs(until=time.time() - 2 * 86400)] == [old.run_id]
    assert [r["run_id"] for r in store.runs(limit=1)] == [new.run_id]
    summary = store.runs(name="nightly")[0]["summary"]
    assert summary == {
        "graphs": 3,
        "compile_s": 1.5,
        "cache_hits": 1,
        "failures": 1,
        "isolated": 1,
        "cache_hit_ratio": 1 / 3,
    }

    assert store.get_run(new.run_id)["tags"] == ["cpu", "max-autotune"]
    assert store.get_run(old.run_id[:10])["run_id"] == old.run_id
    assert store.get_run("nightly")["run_id"] == new.run_id  # newest of that name
    assert store.get_run("latest")["run_id"] == new.run_id
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.get_run("nope")

    # gc: the newest run stays, and so do the kernel sources it uses.
    assert sorted(store.gc(keep=1)) == sorted([old.run_id, other.run_id])
    assert store.counts() == {"runs": 1, "reports": 3, "kernel_sources": 2}
    store.close()

    reader = open_store(location, readonly=True)
    assert [r["run_id"] for r in reader.runs()] == [new.run_id]
    reader.close()


# --- nothing lost --------------------------------------------------------------------------

# A training process that reports through the public path: configure the store,
# publish reports (the background writer commits them), sandbox.flush().
WRITER = r"""
import hashlib, json, os, sys, time
import sandbox
from sandbox import runtime
from sandbox.options import Options
from sandbox.record.report import CompileReport

location, who, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
options = {"store": location, "run_name": "writer-" + who, "tags": ["writers"]}
runtime.current().configure(Options.resolve(options=options))
run = runtime.current().run()
open(go + "." + who + ".ready", "w").close()
deadline = time.time() + 120
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.005)
ids = []
for i in range(count):
    shared = "// shared kernel %d\n" % (i % 7)
    own = "// kernel of %s %d\n" % (who, i)
    kernels = [{"name": "k%d" % j, "kind": "cpp", "source": src, "lines": 1,
                "source_hash": hashlib.sha256(src.encode()).hexdigest()}
               for j, src in enumerate((shared, own))]
    r = CompileReport(run_id=run.run_id, compile_id="%d/0" % i, graph_kind="forward", outcome="isolated",
                      duration_s=0.01, kernels=kernels)
    runtime.current().publish(r)
    ids.append(r.report_id)
    if i % 4 == 3:
        assert sandbox.flush(120), "flush timed out"  # many small transactions, racing the other writers
assert sandbox.flush(120), "flush timed out"
print(json.dumps({"run_id": run.run_id, "ids": ids}), flush=True)
if os.environ.get("KILL_AFTER_FLUSH"):
    os.kill(os.getpid(), 9)
"""


def writer_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "OTEL_"))}
    env.update(extra)
    return env


def run_writers(location: str, tmp_path: Path, writers: int = 4, count: int = 60) -> list[dict[str, Any]]:
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, location, f"w{i}", str(count), str(go)],
            env=writer_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(writers)
    ]
    # Let them all import and configure, then start them at once.
    deadline = time.time() + 180
    while not all(Path(f"{go}.w{i}.ready").exists() for i in range(writers)):
        assert time.time() < deadline and all(p.poll() is None for p in procs), "writers did not get ready"
        time.sleep(0.05)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"writer failed ({p.returncode}):\n{out}\n{err[-4000:]}"
        assert "RuntimeWarning" not in err, err[-4000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def check_all_landed(location: str, results: list[dict[str, Any]], count: int) -> None:
    store = open_store(location, readonly=True)
    try:
        runs = {r["run_id"]: r for r in store.runs(tag="writers")}
        assert set(runs) == {r["run_id"] for r in results}
        for result in results:
            stored = store.reports(result["run_id"], with_sources=True)
            assert sorted(r.report_id for r in stored) == sorted(result["ids"])
            assert [r.graph_index for r in stored] == list(range(count))
            assert all(k.get("source") for r in stored for k in r.kernels)
            assert runs[result["run_id"]]["summary"]["graphs"] == count
        # 7 shared sources, once each, plus one per report.
        assert store.counts() == {
            "runs": len(results),
            "reports": len(results) * count,
            "kernel_sources": 7 + len(results) * count,
        }
    finally:
        store.close()


@pytest.mark.slow
def test_four_processes_write_one_store_at_once(location: str, tmp_path: Path) -> None:
    # The store does not exist yet: the writers also race to create it.
    results = run_writers(location, tmp_path, writers=4, count=60)
    check_all_landed(location, results, 60)


@pytest.mark.slow
def test_sigkill_after_flush_loses_nothing(tmp_path: Path) -> None:
    location = str(tmp_path / "runs.db")
    go = tmp_path / "go"
    go.touch()  # start at once
    proc = subprocess.run(
        [sys.executable, "-c", WRITER, location, "killed", "25", str(go)],
        env=writer_env(KILL_AFTER_FLUSH="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    check_all_landed(location, [result], 25)


# --- what it refuses, leaving it untouched ------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"this is not a database\n" * 200, b"SQLite format 3\x00" + b"\xff" * 4000])
@pytest.mark.parametrize("readonly", [False, True])
def test_corrupt_or_empty_file_is_refused_and_untouched(tmp_path: Path, content: bytes, readonly: bool) -> None:
    path = tmp_path / "runs.db"
    path.write_bytes(content)
    with pytest.raises(StoreError) as e:
        open_store(str(path), readonly=readonly)
    assert str(path) in str(e.value)
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["runs.db"]  # no journal, no WAL left behind


def test_another_programs_sqlite_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ada')")
    conn.close()
    before = sha(path)
    for readonly in (False, True):
        with pytest.raises(StoreError, match="something else"):
            open_store(str(path), readonly=readonly)
    assert sha(path) == before
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_store_of_a_newer_schema_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    store = open_store(str(path))
    run = make_run("kept")
    store.put_run(run)
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = sha(path)
    for readonly in (False, True):
        with pytest.raises(StoreError) as e:
            open_store(str(path), readonly=readonly)
        message = str(e.value)
        assert str(path) in message and "newer" in message and "99" in message and str(SCHEMA_VERSION) in message
        assert "upgrade" in message
    assert sha(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["runs.db"]  # no WAL or shared-memory file either
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    assert conn.execute("SELECT run_id FROM runs").fetchall() == [(run.run_id,)]


def test_missing_store_is_not_created_by_readers(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here" / "runs.db"
    with pytest.raises(StoreError, match="no store at .*sandbox demo"):
        open_store(str(path), readonly=True)
    assert not path.parent.exists()


@pytest.fixture
def read_only_store(tmp_path: Path) -> Iterator[Path]:
    """A store file this process cannot write: chmod for a user, immutable for root."""
    path = tmp_path / "runs.db"
    store = open_store(str(path))
    store.put_run(make_run("frozen"))
    store.close()
    if os.geteuid() == 0:
        proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            missing(f"as root a read-only file needs `chattr +i`, which failed: {proc.stderr.strip()}")
        yield path
        subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o444)
        yield path
        path.chmod(0o644)


def test_read_only_store_is_refused_for_writing_and_readable(read_only_store: Path) -> None:
    before = sha(read_only_store)
    with pytest.raises(StoreError, match="read-only") as e:
        open_store(str(read_only_store))
    assert str(read_only_store) in str(e.value)
    assert sha(read_only_store) == before
    reader = open_store(str(read_only_store), readonly=True)
    assert [r["name"] for r in reader.runs()] == ["frozen"]
    reader.close()


def test_unreachable_postgresql_is_a_clear_error() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("the PostgreSQL driver is not installed: .venv/bin/pip install 'psycopg[binary]'")
    url = f"postgresql://sandbox:secret@127.0.0.1:{free_port()}/runs"
    with pytest.raises(StoreError) as e:
        open_store(url)
    message = str(e.value)
    assert "cannot reach PostgreSQL store" in message and "127.0.0.1" in message
    assert "secret" not in message  # the password is never printed


# --- scale, measured ----------------------------------------------------------------------------


def test_store_scale_bench_runs_quick() -> None:
    bench = ROOT / "bench" / "store_scale.py"
    proc = subprocess.run(
        [sys.executable, str(bench), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    out = proc.stdout
    assert "20 runs x 50 graphs x 20 kernels" in out
    for needle in ("reports/s", "KiB per report", "x dedup", "PASS  runs:", "PASS  diff:"):
        assert needle in out, out
