"""What the run store trusts: a database that is not a store is never written; a store written by
a newer version is read as far as this version knows it; reading writes nothing.

- **Another program's database** (SQLite files of several shapes: a ``meta`` table of the store's
  shape beside tables of its own, a ``meta`` table of another shape, a ``runs`` table of another
  shape, another application's marker, one in WAL mode) given to ``sandbox spool --upload``, to a
  training process through ``SANDBOX_STORE`` and to ``sandbox runs``: its bytes stay the same, no
  file appears beside it, and the error names it.
- **A newer version's reports and store**: report fields this version does not know, at the top and
  nested (stages, failure, kernels, causes, the run), are left out, and ``show``, ``diff``,
  ``explain``, ``export-trace`` and the Run and Graph pages work, with one warning. A store whose
  newer schema only adds is read; written only where it says this version may.
- **Reading writes nothing**: no ``-wal`` or ``-shm`` file from any reading command, and a store in a
  folder the reader cannot write is read by another (non-root) user, with and without a writer.
- **Run ids are not patterns**: ``%`` and ``_`` in an id prefix or a tag match only themselves.
- **gc --keep N** keeps the N newest runs whatever else is asked.

Every command runs as the real console script; stores are real SQLite files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, as_user, other_user, script_env

from sandbox.record.report import CompileReport, Failure, Run, Stage
from sandbox.store import open_store
from sandbox.store.schema import MIGRATIONS

SCRIPT = Path(sys.executable).with_name("sandbox")
DAY = 86400.0


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "OTEL_"))}
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), SANDBOX_SPOOL=str(tmp_path / "spool"))
    env.update(extra)
    return env


def sandbox_cli(tmp_path: Path, *args: str, user: int | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        as_user(user, [str(SCRIPT), *args]),
        env=cli_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )


def make_run(name: str, started_at: float | None = None, run_id: str | None = None, **fields: Any) -> Run:
    run = Run(name=name, started_at=started_at or time.time(), torch="2.13.0+cpu", device="test CPU", **fields)
    if run_id:
        run.run_id = run_id
    return run


def make_report(run: Run, index: int, **fields: Any) -> CompileReport:
    t = run.started_at + index
    source = f"// kernel {index}\nout[i] = in[i] + {index};\n"
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
            Stage("wait_for_worker", t + 0.05, t + 0.1, "parent", "inductor_compile"),
            Stage("compile_in_worker", t + 0.1, t + 0.4, "worker", "inductor_compile"),
        ],
        caches={"fx_graph": {"state": "miss", "key": "k"}},
        graph={"nodes": 12, "ops": 8, "inputs": 3, "hash": f"h{index}", "calls": {"add": 1}},
        kernels=[
            {
                "name": f"cpp_fused_add_{index}",
                "kind": "cpp",
                "source": source,
                "source_hash": hashlib.sha256(source.encode()).hexdigest(),
                "lines": 2,
                "calls": 1,
                "ops": ["add"],
            }
        ],
    )
    values.update(fields)
    return CompileReport(**values)


def fill(path: Path, runs: list[Run], graphs: int = 2) -> None:
    store = open_store(str(path))
    for run in runs:
        store.put_run(run)
        store.put_reports([make_report(run, i) for i in range(graphs)])
    store.close()


def beside(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# --- another program's database is never written -------------------------------------------------


def _meta_ours_shape(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('version', '7'), ('owner', 'photo-app')")
    conn.execute("CREATE TABLE albums (id INTEGER PRIMARY KEY, title TEXT)")
    conn.execute("INSERT INTO albums (title) VALUES ('holidays')")


def _meta_ours_shape_and_a_version(conn: sqlite3.Connection) -> None:
    # Even a schema_version row: its tables are not the store's.
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.execute("INSERT INTO users VALUES ('ada')")


def _meta_other_shape(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE meta (id INTEGER PRIMARY KEY, payload BLOB, created REAL)")
    conn.execute("INSERT INTO meta (payload, created) VALUES (x'00ff', 1.5)")


def _runs_other_shape(conn: sqlite3.Connection) -> None:
    # The store's meta, version and three of its tables; its runs table is someone else's.
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, command TEXT, exit_code INTEGER)")
    conn.execute("INSERT INTO runs (command, exit_code) VALUES ('make', 0)")
    conn.execute("CREATE TABLE reports (report_id TEXT PRIMARY KEY, data TEXT)")
    conn.execute("CREATE TABLE kernel_sources (source_hash TEXT PRIMARY KEY, source TEXT NOT NULL)")


def _another_application(conn: sqlite3.Connection) -> None:
    # The store's exact tables (as its migrations make them), marked as another application's.
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('application', 'someone-else'), ('schema_version', '1')")


def _wal_mode_app(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    _meta_ours_shape(conn)


FOREIGN = {
    "meta-of-our-shape-beside-its-tables": _meta_ours_shape,
    "meta-of-our-shape-with-a-version": _meta_ours_shape_and_a_version,
    "meta-of-another-shape": _meta_other_shape,
    "runs-of-another-shape": _runs_other_shape,
    "another-applications-marker": _another_application,
    "wal-mode-app": _wal_mode_app,
}


@pytest.fixture(params=sorted(FOREIGN))
def foreign(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    folder.mkdir()
    path = folder / "app.db"
    conn = sqlite3.connect(path)
    FOREIGN[request.param](conn)
    conn.commit()
    conn.close()
    assert beside(path) == ["app.db"]
    return path


def check_refused(path: Path, before: str, message: str) -> None:
    assert str(path) in message, message
    assert "not a run store" in message and "left untouched" in message, message
    assert sha(path) == before
    assert beside(path) == ["app.db"]  # no journal, WAL or temporary file either


def test_spool_upload_refuses_a_foreign_database(foreign: Path, tmp_path: Path) -> None:
    before = sha(foreign)
    proc = sandbox_cli(tmp_path, "spool", "--upload", "--store", str(foreign))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    check_refused(foreign, before, proc.stderr)


def test_reading_commands_refuse_a_foreign_database(foreign: Path, tmp_path: Path) -> None:
    before = sha(foreign)
    for args in (["runs"], ["show", "latest"], ["gc", "--keep", "1"]):
        proc = sandbox_cli(tmp_path, *args, "--store", str(foreign))
        assert proc.returncode == 1, (args, proc.stdout + proc.stderr)
        check_refused(foreign, before, proc.stderr)


def test_another_application_is_named(tmp_path: Path) -> None:
    path = tmp_path / "app" / "app.db"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        _another_application(conn)
    conn.close()
    proc = sandbox_cli(tmp_path, "runs", "--store", str(path))
    assert proc.returncode == 1 and "another application ('someone-else')" in proc.stderr, proc.stderr


# A training process's writer, through the public path: configure the store from the
# environment (SANDBOX_STORE), publish reports, flush.
WRITER = r"""
import json, warnings
import sandbox
from sandbox import runtime
from sandbox.options import Options
from sandbox.record.report import CompileReport

warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    runtime.current().configure(Options.resolve())
    run = runtime.current().run()
    for i in range(3):
        runtime.current().publish(CompileReport(run_id=run.run_id, compile_id="%d/0" % i, graph_kind="forward",
                                                outcome="isolated", duration_s=0.01))
    flushed = sandbox.flush(60)
print(json.dumps({"flushed": flushed, "warnings": [str(w.message) for w in caught]}))
"""


def test_a_training_process_never_writes_a_foreign_database(foreign: Path, tmp_path: Path) -> None:
    before = sha(foreign)
    proc = subprocess.run(
        [sys.executable, "-c", WRITER],
        env=cli_env(tmp_path, SANDBOX_STORE=str(foreign)),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["flushed"]
    assert any(str(foreign) in w and "not a run store" in w for w in result["warnings"]), result["warnings"]
    assert sha(foreign) == before and beside(foreign) == ["app.db"]
    # The reports wait in the spool; uploading them into that file is refused too, with exit 1.
    assert list((tmp_path / "spool").rglob("*.jsonl"))
    proc = sandbox_cli(tmp_path, "spool", "--upload", "--store", str(foreign))
    assert proc.returncode == 1 and str(foreign) in proc.stderr, proc.stdout + proc.stderr
    assert sha(foreign) == before and beside(foreign) == ["app.db"]


TRAINING = r"""
import warnings
import torch
import sandbox

warnings.simplefilter("always")
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
step = torch.compile(model, backend="sandbox")
with warnings.catch_warnings(record=True) as caught:
    for _ in range(2):
        loss = step(torch.randn(4, 8)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    sandbox.flush(60)
for w in caught:
    print("WARNING:", w.message)
print("reports:", len(sandbox.reports()))
"""


@pytest.mark.slow
def test_a_torch_compile_training_script_never_writes_a_foreign_database(tmp_path: Path, cache_dir: Path) -> None:
    path = tmp_path / "app" / "app.db"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        _meta_ours_shape(conn)
    conn.close()
    before = sha(path)
    proc = subprocess.run(
        [sys.executable, "-c", TRAINING],
        env=script_env(cache_dir, {"SANDBOX_STORE": str(path), "SANDBOX_SPOOL": str(tmp_path / "spool")}),
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert "reports: 2" in proc.stdout, proc.stdout
    assert any(str(path) in line and "not a run store" in line for line in proc.stdout.splitlines()), proc.stdout
    assert sha(path) == before and beside(path) == ["app.db"]


@pytest.mark.parametrize(
    "tables",
    [
        ["CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)", "CREATE TABLE invoices (id INTEGER)"],
        ["CREATE TABLE meta (id INTEGER PRIMARY KEY, payload BYTEA)"],
        ["CREATE TABLE runs (id INTEGER PRIMARY KEY, command TEXT)"],
    ],
    ids=["meta-beside-its-tables", "meta-of-another-shape", "runs-of-another-shape"],
)
def test_a_foreign_postgresql_schema_is_never_written(postgres: Any, tmp_path: Path, tables: list[str]) -> None:
    import psycopg

    url = postgres.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in tables:
            conn.execute(statement)

    def catalogue() -> list[tuple[str, str]]:
        with psycopg.connect(url) as conn:
            return conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() ORDER BY 1, 2"
            ).fetchall()

    before = catalogue()
    secret = url.replace("postgres@", "postgres:hunter2@")  # trust auth: the password is not checked
    for args in (["spool", "--upload"], ["runs"], ["gc", "--keep", "1"]):
        proc = sandbox_cli(tmp_path, *args, "--store", secret)
        assert proc.returncode == 1, (args, proc.stdout + proc.stderr)
        assert "not a run store" in proc.stderr and "postgres:***@" in proc.stderr, proc.stderr
        assert "hunter2" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-c", WRITER], env=cli_env(tmp_path, SANDBOX_STORE=secret), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not a run store" in proc.stdout and "hunter2" not in proc.stdout + proc.stderr
    assert catalogue() == before


def test_a_store_made_before_the_marker_is_still_ours(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    old = make_run("before-the-marker")
    fill(path, [old])
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM meta WHERE key = 'application'")
    conn.close()
    proc = sandbox_cli(tmp_path, "runs", "--store", str(path))
    assert proc.returncode == 0 and "before-the-marker" in proc.stdout, proc.stderr
    store = open_store(str(path))  # to write: it is ours, and gets the marker
    store.put_run(make_run("after"))
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'application'").fetchone() == ("compile-sandbox",)
    conn.close()


def test_an_empty_database_becomes_a_store(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with sqlite3.connect(path) as conn:  # a database with nothing in it (yet): a header, no tables
        conn.execute("CREATE TABLE scratch (x)")
        conn.execute("DROP TABLE scratch")
    conn.close()
    assert path.stat().st_size > 0
    store = open_store(str(path))
    store.put_run(make_run("first"))
    store.close()
    assert sandbox_cli(tmp_path, "runs", "--store", str(path)).stdout.count("first") == 1


# --- what a newer version wrote ---------------------------------------------------------------------


def future(d: dict[str, Any]) -> dict[str, Any]:
    """A report as a newer version would write it: fields this one does not know, at every level."""
    d = json.loads(json.dumps(d))
    d["gpu_memory_peak"] = {"bytes": 123}
    d["energy_j"] = 4.5
    for s in d["stages"]:
        s["color"] = "teal"
        s["thread"] = 7
    if d.get("failure"):
        d["failure"]["core_dump"] = "/tmp/core.1"
    for k in d["kernels"]:
        k["occupancy"] = 0.5
    d["compile_reason"] = {"graph_break": False, "reason": "return_value", "frames": [], "confidence": 0.9}
    d["cache_keys"] = {"fx_graph": {"key": "k", "state": "miss", "components": {"gm": "x"}, "tier": "remote"}}
    return d


@pytest.fixture
def future_store(tmp_path: Path) -> tuple[Path, dict[str, Run]]:
    path = tmp_path / "store" / "runs.db"
    path.parent.mkdir()
    a, b = make_run("future", time.time() - 60), make_run("future", time.time())
    store = open_store(str(path))
    for run in (a, b):
        d = run.to_dict()
        d["cgroup"] = "/training"  # a run field this version does not know
        store.put_run(d)
    failure = Failure(kind="crash", message="worker 9 was killed by SIGSEGV", signal="SIGSEGV", worker_pid=9)
    store.put_reports([future(make_report(a, i).to_dict()) for i in range(2)])
    store.put_reports(
        [
            future(make_report(b, 0).to_dict()),
            future(make_report(b, 1, outcome="failed", failure=failure, fallback="eager").to_dict()),
        ]
    )
    store.close()
    return path, {"a": a, "b": b}


def warned_once(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if "does not know" in line]
    assert len(lines) == 1, stderr
    for name in ("gpu_memory_peak", "energy_j", "stages[].color", "stages[].thread"):
        assert name in lines[0], lines[0]
    assert "newer version" in lines[0]
    assert "Traceback" not in stderr and "TypeError" not in stderr


def test_unknown_fields_are_left_out_and_said_once(future_store: tuple[Path, dict[str, Run]], tmp_path: Path) -> None:
    path, runs = future_store
    a, b = runs["a"].run_id, runs["b"].run_id
    store = ["--store", str(path)]

    proc = sandbox_cli(tmp_path, "show", b, *store)
    assert proc.returncode == 0 and "SIGSEGV" in proc.stdout, proc.stderr
    warned_once(proc.stderr)
    assert "failure.core_dump" in proc.stderr

    proc = sandbox_cli(tmp_path, "show", b, "--json", *store)
    assert proc.returncode == 0, proc.stderr
    warned_once(proc.stderr)
    reports = json.loads(proc.stdout)["reports"]
    assert [r["outcome"] for r in reports] == ["isolated", "failed"]
    assert "energy_j" not in reports[0] and "color" not in reports[0]["stages"][0]
    assert reports[0]["kernels"][0]["occupancy"] == 0.5  # inside a free-form entry: kept as written

    for args in (["diff", a, b], ["diff", a, b, "--json"], ["explain", b], ["explain", b, "--json"]):
        proc = sandbox_cli(tmp_path, *args, *store)
        assert proc.returncode == 0, (args, proc.stderr)
        warned_once(proc.stderr)

    trace = tmp_path / "trace.json"
    proc = sandbox_cli(tmp_path, "export-trace", b, "-o", str(trace), *store)
    assert proc.returncode == 0, proc.stderr
    warned_once(proc.stderr)
    assert json.loads(trace.read_text())["traceEvents"]


def test_unknown_fields_on_the_run_and_graph_pages(future_store: tuple[Path, dict[str, Run]]) -> None:
    from streamlit.testing.v1 import AppTest

    path, runs = future_store
    saved = os.environ.get("SANDBOX_STORE")
    os.environ["SANDBOX_STORE"] = str(path)
    try:
        for page, params in (("run", {"run": runs["b"].run_id}), ("graph", {"run": runs["b"].run_id, "graph": "1"})):
            at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
            at.run()
            at.query_params = params
            at.switch_page(f"pages/{page}.py").run()
            assert not at.exception, [e.value for e in at.exception]
            assert at.title, page
    finally:
        if saved is None:
            os.environ.pop("SANDBOX_STORE", None)
        else:
            os.environ["SANDBOX_STORE"] = saved


def newer_schema(path: Path, version: int, oldest_reader: int | None, oldest_writer: int | None = None) -> None:
    """What a newer version makes of the store: a table and a column more, its own version."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE graph_notes (report_id TEXT PRIMARY KEY, note TEXT)")
        conn.execute("ALTER TABLE runs ADD COLUMN project TEXT")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        for key, value in (("oldest_reader", oldest_reader), ("oldest_writer", oldest_writer)):
            if value is not None:
                conn.execute("INSERT INTO meta VALUES (?, ?)", (key, str(value)))
    conn.close()


def test_a_newer_store_that_only_adds_is_read(tmp_path: Path) -> None:
    path = tmp_path / "store" / "runs.db"
    path.parent.mkdir()
    run = make_run("kept")
    fill(path, [run])
    newer_schema(path, version=2, oldest_reader=1)
    before = sha(path)
    for args in (["runs"], ["show", "kept"], ["explain", "kept"]):
        proc = sandbox_cli(tmp_path, *args, "--store", str(path))
        assert proc.returncode == 0, (args, proc.stderr)
        assert "kept" in proc.stdout or run.run_id[:8] in proc.stdout
        assert "schema 2" in proc.stderr and "newer version" in proc.stderr, proc.stderr
    # Writing is refused: it does not say this version's writes keep it whole. A training process
    # keeps its reports in the spool, and uploading them is refused too.
    proc = sandbox_cli(tmp_path, "gc", "--keep", "0", "--store", str(path))
    assert proc.returncode == 1 and "may read it but not write it" in proc.stderr, proc.stdout + proc.stderr
    proc = subprocess.run(
        [sys.executable, "-c", WRITER],
        env=cli_env(tmp_path, SANDBOX_STORE=str(path)),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "may read it but not write it" in proc.stdout, proc.stdout
    assert list((tmp_path / "spool").rglob("*.jsonl"))
    proc = sandbox_cli(tmp_path, "spool", "--upload", "--store", str(path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert str(path) in proc.stderr and "may read it but not write it" in proc.stderr, proc.stderr
    assert sha(path) == before and beside(path) == ["runs.db"]


def test_a_newer_store_that_allows_this_writer_is_written(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    fill(path, [make_run("old")])
    newer_schema(path, version=2, oldest_reader=1, oldest_writer=1)
    store = open_store(str(path))
    store.put_run(make_run("new"))
    store.close()
    proc = sandbox_cli(tmp_path, "runs", "--store", str(path))
    assert proc.returncode == 0 and "new" in proc.stdout and "old" in proc.stdout, proc.stderr
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    conn.close()


def test_a_newer_store_that_changed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    fill(path, [make_run("kept")])
    newer_schema(path, version=3, oldest_reader=None)
    before = sha(path)
    proc = sandbox_cli(tmp_path, "runs", "--store", str(path))
    assert proc.returncode == 1 and "newer version" in proc.stderr and "upgrade" in proc.stderr, proc.stderr
    assert sha(path) == before


# --- reading writes nothing -------------------------------------------------------------------------


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Run, Run]:
    path = tmp_path / "store" / "runs.db"
    path.parent.mkdir()
    a, b = make_run("reader", time.time() - 60, job="job-1"), make_run("reader", time.time(), job="job-1")
    fill(path, [a, b])
    return path, a, b


def reading_commands(a: str, b: str, out: Path) -> list[list[str]]:
    return [
        ["runs"],
        ["runs", "--json"],
        ["show", b],
        ["show", b, "--json", "--sources"],
        ["diff", a, b],
        ["explain", b],
        ["job"],
        ["job", "job-1"],
        ["export-trace", b, "-o", str(out)],
    ]


def test_reading_commands_create_no_wal_or_shm(two_runs: tuple[Path, Run, Run], tmp_path: Path) -> None:
    path, a, b = two_runs
    assert beside(path) == ["runs.db"]
    before = sha(path)
    for args in reading_commands(a.run_id, b.run_id, tmp_path / "trace.json"):
        proc = sandbox_cli(tmp_path, *args, "--store", str(path))
        assert proc.returncode == 0, (args, proc.stderr)
        assert beside(path) == ["runs.db"], args
    assert sha(path) == before
    # The dashboard's reader, opened read-only through the store API: nothing either.
    reader = open_store(str(path), readonly=True)
    assert len(reader.runs()) == 2 and len(reader.reports(b.run_id, with_sources=True)) == 2
    assert reader.counts()["runs"] == 2
    reader.close()
    assert beside(path) == ["runs.db"] and sha(path) == before


def test_a_long_lived_reader_sees_new_runs(two_runs: tuple[Path, Run, Run]) -> None:
    path, _, _ = two_runs
    reader = open_store(str(path), readonly=True)
    assert reader.counts()["runs"] == 2
    # A writer comes, writes and leaves (its close checkpoints into the file).
    fill(path, [make_run("later")])
    assert reader.counts()["runs"] == 3
    # A writer that stays: its run is in its WAL.
    writer = open_store(str(path))
    writer.put_run(make_run("while-writing"))
    assert reader.counts()["runs"] == 4
    assert {r["name"] for r in reader.runs()} == {"reader", "later", "while-writing"}
    writer.close()
    assert reader.counts()["runs"] == 4
    reader.close()


@pytest.fixture
def unwritable_folder() -> Iterator[tuple[Path, int | None]]:
    """A store folder this test's reader cannot write, and who the reader is: another user
    (nobody) when the tests run as root, for whom permission bits do not apply."""
    base = Path(tempfile.mkdtemp(prefix="sandbox-ro-store-"))
    folder = base / "shared"
    folder.mkdir()
    user = other_user()
    try:
        yield folder, user
    finally:
        for p in (base, folder):
            p.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_a_wal_store_in_an_unwritable_folder_is_read_by_another_user(
    unwritable_folder: tuple[Path, int | None], tmp_path: Path
) -> None:
    folder, user = unwritable_folder
    path = folder / "runs.db"
    a, b = make_run("shared", time.time() - 60, job="job-1"), make_run("shared", time.time(), job="job-1")
    fill(path, [a, b])
    path.chmod(0o644)  # a store shared for reading
    folder.chmod(0o555)
    folder.parent.chmod(0o755)
    # The reader is who it should be and cannot write here: checked, not assumed.
    who = subprocess.run(as_user(user, ["id", "-u"]), capture_output=True, text=True)
    assert who.stdout.strip() == str(user if user is not None else os.geteuid())
    probe = subprocess.run(as_user(user, ["touch", str(folder / "probe")]), capture_output=True)
    assert probe.returncode != 0 and not (folder / "probe").exists()
    assert path.read_bytes()[18:20] == b"\x02\x02"  # a WAL store (its header says so)
    assert beside(path) == ["runs.db"]
    before = sha(path)
    home = {"HOME": "/nonexistent", "XDG_CACHE_HOME": "/nonexistent", "SANDBOX_SPOOL": "/nonexistent"}
    for args in reading_commands(a.run_id, b.run_id, Path("/dev/null")):
        proc = sandbox_cli(tmp_path, *args, "--store", str(path), user=user, **home)
        assert proc.returncode == 0, (args, proc.stderr)
    proc = sandbox_cli(tmp_path, "runs", "--store", str(path), user=user, **home)
    assert proc.stdout.count("shared") == 2
    assert beside(path) == ["runs.db"] and sha(path) == before

    # With a writer at work (its -wal and -shm there, readable as the store is), still read.
    folder.chmod(0o755)
    writer = open_store(str(path))
    writer.put_run(make_run("written-meanwhile"))
    folder.chmod(0o555)
    try:
        assert beside(path) == ["runs.db", "runs.db-shm", "runs.db-wal"]
        proc = sandbox_cli(tmp_path, "runs", "--store", str(path), user=user, **home)
        assert proc.returncode == 0 and "written-meanwhile" in proc.stdout, proc.stderr
    finally:
        folder.chmod(0o755)
        writer.close()


# --- ids are not patterns ---------------------------------------------------------------------------


def test_id_prefixes_and_tags_are_not_like_patterns(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    now = time.time()
    runs = [
        make_run("one", now - 30, run_id="abc1230000", tags=["50%_off"]),
        make_run("two", now - 20, run_id="ab_literal", tags=["50xxoff"]),
        make_run("three", now - 10, run_id="ab!x000000", tags=["plain"]),
    ]
    fill(path, runs, graphs=1)
    store = ["--store", str(path)]

    def show(ref: str) -> subprocess.CompletedProcess:
        return sandbox_cli(tmp_path, "show", ref, "--json", *store)

    for ref in ("%", "_", "ab%", "a_c", "%1", "!"):
        proc = show(ref)
        assert proc.returncode == 1 and f"no run {ref!r}" in proc.stderr, (ref, proc.stdout, proc.stderr)
    assert json.loads(show("ab_").stdout)["run"]["name"] == "two"  # the literal underscore only
    assert json.loads(show("ab!").stdout)["run"]["name"] == "three"  # the escape character is literal too
    assert json.loads(show("abc").stdout)["run"]["name"] == "one"
    proc = show("ab")
    assert proc.returncode == 1 and "matches 3 runs" in proc.stderr

    def tagged(tag: str) -> list[str]:
        proc = sandbox_cli(tmp_path, "runs", "--tag", tag, "--json", *store)
        assert proc.returncode == 0, proc.stderr
        return sorted(r["name"] for r in json.loads(proc.stdout))

    assert tagged("50%_off") == ["one"]
    assert tagged("%") == [] and tagged("_") == [] and tagged("50%") == []


# --- gc --keep N ------------------------------------------------------------------------------------


@pytest.fixture
def aged(tmp_path: Path) -> tuple[Path, dict[int, Run]]:
    """Seven runs 60, 50, 45, 40, 20, 10 and 1 days old: the five newest include two older than 30 days."""
    path = tmp_path / "aged.db"
    runs = {age: make_run(f"age-{age}", time.time() - age * DAY) for age in (60, 50, 45, 40, 20, 10, 1)}
    fill(path, list(runs.values()), graphs=1)
    return path, runs


def left_after(tmp_path: Path, path: Path, *args: str) -> list[str]:
    copy = tmp_path / f"copy-{len(list(tmp_path.glob('copy-*')))}.db"
    shutil.copy(path, copy)
    proc = sandbox_cli(tmp_path, "gc", *args, "--store", str(copy))
    assert proc.returncode == 0, proc.stderr
    runs = sandbox_cli(tmp_path, "runs", "--json", "--limit", "0", "--store", str(copy))
    return [r["name"] for r in json.loads(runs.stdout)]


def test_gc_keep_always_keeps_the_n_newest(aged: tuple[Path, dict[int, Run]], tmp_path: Path) -> None:
    path, _ = aged
    newest5 = ["age-1", "age-10", "age-20", "age-40", "age-45"]
    assert left_after(tmp_path, path, "--keep", "5", "--older-than", "30d") == newest5
    assert left_after(tmp_path, path, "--older-than", "30d", "--keep", "5") == newest5
    assert left_after(tmp_path, path, "--keep", "5") == newest5
    assert left_after(tmp_path, path, "--older-than", "30d") == ["age-1", "age-10", "age-20"]
    # --keep is a floor: with an age, only runs past both go.
    assert left_after(tmp_path, path, "--keep", "2", "--older-than", "30d") == ["age-1", "age-10", "age-20"]
    assert left_after(tmp_path, path, "--keep", "0", "--older-than", "15d") == ["age-1", "age-10"]
    assert left_after(tmp_path, path, "--keep", "7", "--older-than", "1s") == [
        "age-1",
        "age-10",
        "age-20",
        "age-40",
        "age-45",
        "age-50",
        "age-60",
    ]
