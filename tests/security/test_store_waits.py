"""Every wait on a PostgreSQL store is bounded: a training process whose store is down or
silent flushes and exits within seconds, with one warning, and loses no report.

A silent server is a plain socket server that accepts connections and never answers; a
refused port has nothing listening; a hung server is the test's real PostgreSQL server
(the ``postgres`` fixture) stopped with SIGSTOP while connected. Writers are real processes
publishing through the public path (``Runtime.publish``, ``sandbox.flush()``, interpreter
exit), or the store writer itself in this process for the hung server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_server import PostgresServer
from support import HELPERS, free_port, parse_result

from sandbox.record.report import CompileReport, Run
from sandbox.sinks import store as store_sink
from sandbox.store import StoreError, open_store
from sandbox.store import postgres as pg

SECRET = "w4its-Secret-7q"
SLACK_S = 2.5  # a loaded two-core machine: process start-up and teardown, scheduling

# Publishes three reports, flushes, prints how long the flush took, and exits.
WRITER = """
import time
import common
import sandbox
from sandbox import runtime
from sandbox.options import Options
from sandbox.record.report import CompileReport

runtime.current().configure(Options.resolve())
run = runtime.current().run()
ids = []
for i in range(3):
    r = CompileReport(run_id=run.run_id, compile_id=f"{i}/0", graph_kind="forward", outcome="isolated")
    runtime.current().publish(r)
    ids.append(r.report_id)
t0 = time.monotonic()
ok = sandbox.flush()
common.emit({"ok": ok, "flush_s": time.monotonic() - t0, "ids": ids})
"""


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server that accepts every TCP connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def clean_env(tmp_path: Path, store: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "OTEL_", "PG"))}
    env.update(
        SANDBOX_STORE=store,
        SANDBOX_SPOOL=str(tmp_path / "spool"),
        SANDBOX_PRESTART="off",
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        PYTHONUNBUFFERED="1",
    )
    return env


def run_writer(tmp_path: Path, store: str) -> dict[str, Any]:
    """Run WRITER; its result, stderr and how long the process took to end after its result."""
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER],
            cwd=str(HELPERS),
            env=clean_env(tmp_path, store),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            result = None
            assert proc.stdout is not None
            for line in proc.stdout:
                result = parse_result(line)
                if result is not None:
                    break
            emitted = time.monotonic()
            proc.wait(timeout=120)
            exit_s = time.monotonic() - emitted
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = err_path.read_text()
    assert proc.returncode == 0 and result is not None, stderr[-4000:]
    return dict(result, exit_s=exit_s, stderr=stderr)


def spooled_ids(spool: Path) -> set[str]:
    ids = set()
    for path in spool.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if "report" in entry:
                ids.add(entry["report"]["report_id"])
    return ids


def test_silent_server_flush_and_exit_are_bounded_with_one_warning(tmp_path: Path, silent_port: int) -> None:
    result = run_writer(tmp_path, f"postgresql://team:{SECRET}@127.0.0.1:{silent_port}/runs")
    assert result["ok"] is True
    assert result["flush_s"] < pg.CONNECT_TIMEOUT_S + SLACK_S, result
    assert result["exit_s"] < store_sink.EXIT_WAIT_S + SLACK_S, result
    assert result["stderr"].count("RuntimeWarning: sandbox:") == 1, result["stderr"]
    assert "kept in the spool" in result["stderr"] and "timeout" in result["stderr"]
    assert SECRET not in result["stderr"]
    assert set(result["ids"]) <= spooled_ids(tmp_path / "spool"), "a report was lost"


def test_refused_port_flush_and_exit_are_quick_with_one_warning(tmp_path: Path) -> None:
    result = run_writer(tmp_path, f"postgresql://team:{SECRET}@127.0.0.1:{free_port()}/runs")
    assert result["ok"] is True
    assert result["flush_s"] < 1.5, result
    assert result["exit_s"] < SLACK_S, result
    assert result["stderr"].count("RuntimeWarning: sandbox:") == 1, result["stderr"]
    assert "Connection refused" in result["stderr"] and SECRET not in result["stderr"]
    assert set(result["ids"]) <= spooled_ids(tmp_path / "spool")


def test_cli_on_a_silent_server_fails_within_the_connect_timeout(tmp_path: Path, silent_port: int) -> None:
    url = f"postgresql://team:{SECRET}@127.0.0.1:{silent_port}/runs"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "runs", "--store", url],
        env=clean_env(tmp_path, url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - t0
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert took < pg.CONNECT_TIMEOUT_S + SLACK_S + 1.0, took  # + the CLI's own start-up
    assert "timeout" in proc.stderr and f"team:***@127.0.0.1:{silent_port}" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_a_connect_timeout_in_the_location_wins(silent_port: int) -> None:
    """The user's own connect_timeout is kept, not replaced by the default."""
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="timeout"):
        open_store(f"host=127.0.0.1 port={silent_port} dbname=runs connect_timeout=5")
    assert 4.5 < time.monotonic() - t0 < 5 + SLACK_S


# --- a hung server: the real one, stopped while connected ------------------------------------


def server_pids(server: PostgresServer) -> list[int]:
    """The postmaster and every backend it started."""
    postmaster = int(Path(server.data, "postmaster.pid").read_text().split()[0])
    children = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # not a process, or gone
        if int(fields[1]) == postmaster:
            children.append(int(entry.name))
    return [postmaster, *children]


def freeze(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)


def thaw(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def report(run: Run, i: int) -> CompileReport:
    return CompileReport(run_id=run.run_id, compile_id=f"{i}/0", graph_kind="forward", outcome="isolated")


def test_a_statement_on_a_hung_server_ends_within_its_bound(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    store = open_store(url, statement_timeout_s=1)
    run = Run()
    store.put_run(run)
    pids = server_pids(postgres)
    freeze(pids)
    try:
        t0 = time.monotonic()
        with pytest.raises(Exception, match="did not answer within 3 s"):
            store.put_reports([report(run, 0)])
        took = time.monotonic() - t0
    finally:
        thaw(pids)
        store.close()
    assert 2.5 < took < 3 + SLACK_S, took


def test_a_hung_server_costs_flush_and_exit_a_bounded_wait_and_loses_nothing(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stops answering mid-job: flush spools what the stuck writer holds after
    FLUSH_WAIT_S, exit after EXIT_WAIT_S; once the server is back, every report is stored."""
    monkeypatch.setenv("SANDBOX_SPOOL", str(tmp_path / "spool"))
    url = postgres.new_database()
    run = Run()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sink = store_sink.StoreSink(url, run)
        first = report(run, 0)
        sink.consume(first)
        assert sink.flush() and sink.written == 1
        pids = server_pids(postgres)
        freeze(pids)
        try:
            late = [report(run, 1), report(run, 2)]
            sink.consume(late[0])
            t0 = time.monotonic()
            assert sink.flush() is True
            flush_s = time.monotonic() - t0
            sink.consume(late[1])
            t0 = time.monotonic()
            sink.shutdown()
            exit_s = time.monotonic() - t0
        finally:
            thaw(pids)
    assert flush_s < store_sink.FLUSH_WAIT_S + SLACK_S, flush_s
    assert exit_s < store_sink.EXIT_WAIT_S + SLACK_S, exit_s
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "kept in the spool" in messages[0], messages
    assert {r.report_id for r in late} <= spooled_ids(tmp_path / "spool"), "a report was lost"

    # The server is back: the spool goes in, and the report stored before is not replaced.
    sink._thread.join(timeout=30)
    again = store_sink.StoreSink(url, Run())
    try:
        again.consume(report(again.run, 0))
        assert again.flush()
        assert again.written == 1
    finally:
        again.shutdown()
    store = open_store(url, readonly=True)
    try:
        stored = {r.report_id for r in store.reports(run.run_id)}
    finally:
        store.close()
    assert stored == {first.report_id} | {r.report_id for r in late}


def test_statement_timeouts_on_the_server_and_the_users_own_wins(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    cases = [
        (url, None, "1min", pg.STATEMENT_TIMEOUT_S + pg.NO_ANSWER_GRACE_S),  # the CLI and the dashboard
        (url, store_sink.WRITER_STATEMENT_TIMEOUT_S, "5s", 5 + pg.NO_ANSWER_GRACE_S),  # the training process
        (url + "?options=-c%20statement_timeout%3D1500", 5.0, "1500ms", 1.5 + pg.NO_ANSWER_GRACE_S),
        (url + "?options=-c%20statement_timeout%3D0", 5.0, "0", None),  # no limit, as the user asked
    ]
    for location, statement_s, shown, client_s in cases:
        store = open_store(location, statement_timeout_s=statement_s)
        try:
            assert store._query("SHOW statement_timeout") == [(shown,)], location
            assert store.conn.answer_within_s == client_s, location
        finally:
            store.close()
