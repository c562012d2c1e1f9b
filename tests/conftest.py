"""Hooks and fixtures shared by every test folder (helpers live in ``support.py``, the
PostgreSQL server in ``postgres_server.py``, the OTLP receiver in ``otlp_receiver.py``).

C++ builds: ``CXX`` points at a build cache (``helpers/cxx_cache.py``) shared by the whole run, so
a kernel's source compiles once per run however many scenarios build it.

Cache directories: the session gets a fresh ``TORCHINDUCTOR_CACHE_DIR``. Each
scenario gets its own fresh directory too, seeded only with the results of
Inductor's one-time CPU instruction-set probe (no FX graph / AOTAutograd cache
entries, no kernels), which a worker pays once per session here instead of ~10 s
in every scenario. Graph-level caches therefore always start empty.

``CI=true``: a skipped test is reported as a failure (nothing may silently not run).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import support
from otlp_receiver import Receiver, rotel_binary, unavailable
from postgres_server import PostgresServer
from support import (
    IN_CI,
    REDIS_HINT,
    SCRIPT_TIMEOUT_S,
    RedisServer,
    free_port,
    fresh_cache_dir,
    made_once,
    missing,
    script_env,
)

# --- the user's own files: never touched ----------------------------------------------
#
# Set at import, before any test or fixture runs: the suite gets a home and a cache folder of its
# own, and no SANDBOX_* setting of the developer's shell (their store, their collector) leaks in.
# At the end, the developer's real default store and the demo's span file must be as they were.

USER_FILES = support.isolate_user_home()
CXX_BUILDS = support.cache_cxx_builds()  # set before any import of Inductor's config reads CXX


@pytest.fixture(autouse=True)
def _sandbox_settings_restored() -> Iterator[None]:
    """A test that points SANDBOX_STORE (or another SANDBOX_* setting) somewhere for an in-process
    page or call leaves the next test the environment it found."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("SANDBOX_")}
    yield
    for name in [n for n in os.environ if n.startswith("SANDBOX_") and n not in saved]:
        del os.environ[name]
    os.environ.update(saved)


def pytest_unconfigure(config: pytest.Config) -> None:
    if CXX_BUILDS is not None:
        shutil.rmtree(CXX_BUILDS, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    changed = USER_FILES.changed()
    if changed:
        print(f"\nthe test suite wrote into the user's own files: {', '.join(changed)}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- CI: never skip ------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), which counts as a failure: {reason}"


# --- cache directories ---------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterable[Path]:
    """A fresh TORCHINDUCTOR_CACHE_DIR for the whole session (in-process tests use it)."""
    path = tmp_path_factory.mktemp("inductor-cache-session")
    saved = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved


@pytest.fixture(scope="session")
def probe_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir holding only Inductor's CPU ISA probe artifacts, made by a worker
    (``sandbox.warmup(wait=True)`` compiles no graph), once for the run (every xdist worker)."""

    def make(seed: Path) -> None:
        code = "import sandbox; sandbox.warmup(wait=True); print(len(sandbox.workers()))"
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=script_env(seed),
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
        )
        assert proc.returncode == 0, f"seeding the probe cache failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
        graph_caches = [p for p in ("fxgraph", "aotautograd") if (seed / p).exists()]
        assert not graph_caches, f"warm-up alone must not write graph caches: {graph_caches}"

    return made_once(tmp_path_factory, "inductor-cache-seed", make)[0]


@pytest.fixture
def cache_dir(tmp_path: Path, probe_seed: Path) -> Path:
    """A fresh TORCHINDUCTOR_CACHE_DIR for one test (empty graph caches)."""
    return fresh_cache_dir(tmp_path, probe_seed)


@pytest.fixture(scope="module")
def module_cache_dir(tmp_path_factory: pytest.TempPathFactory, probe_seed: Path) -> Path:
    return fresh_cache_dir(tmp_path_factory.mktemp("module"), probe_seed)


# --- Redis (Inductor's remote caches) ------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterable[RedisServer]:
    """A running redis-server of this test's own (stop() / start() to take it down and back).
    Missing redis-server or the redis package: skips locally, fails in CI."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    absent = "redis-server is not installed" if binary is None else None
    try:
        import redis  # noqa: F401
    except ImportError:
        absent = "the redis package is not installed"
    if absent:
        message = f"{absent}; install it with `{REDIS_HINT}`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(binary, workdir).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


# --- PostgreSQL ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server for the test module. Missing server binaries or driver:
    skips locally, fails in CI."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("the PostgreSQL driver is not installed: .venv/bin/pip install 'psycopg[binary]'")
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    initdb = bins[0] if bins else shutil.which("initdb")
    if not initdb:
        missing("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    server = PostgresServer(os.path.dirname(initdb))  # type: ignore[arg-type]
    try:
        server.start()
    except Exception as e:
        server.stop()
        pytest.fail(f"could not start a PostgreSQL server for the tests: {e}")
    yield server
    server.stop()


# --- OTLP (a rotel receiver) -----------------------------------------------------------


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """A running rotel-agent for the test module (``otlp_receiver.Receiver``). Missing rotel:
    skips locally, fails in CI."""
    binary = rotel_binary()
    if binary is None:
        unavailable("the rotel package (rotel-agent) is not installed")
    grpc_port, http_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("rotel") / "rotel.out"
    cmd = [
        binary,
        "start",
        "--otlp-grpc-endpoint",
        f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint",
        f"127.0.0.1:{http_port}",
        "--exporter",
        "blackhole",
        "--debug-log",
        "traces",
        "--debug-log-verbosity",
        "detailed",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"}, start_new_session=True
        )
    try:
        deadline = time.time() + 20
        while True:
            if proc.poll() is not None:
                unavailable(f"rotel-agent exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
            try:
                for port in (grpc_port, http_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    unavailable(f"rotel-agent did not listen on 127.0.0.1:{grpc_port}/{http_port} within 20 s")
                time.sleep(0.2)
        yield Receiver(proc, log, grpc_port, http_port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
