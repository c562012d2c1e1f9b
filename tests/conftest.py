"""Shared test machinery.

Most tests run a scenario script from ``tests/helpers`` in a fresh Python process:
the worker pool and dynamo's caches are process-wide, and several scenarios kill
workers or the process itself. Each script prints one JSON result line (see
``helpers/common.py``), which :func:`run_script` parses and returns.

Cache directories: the session gets a fresh ``TORCHINDUCTOR_CACHE_DIR``. Each
scenario gets its own fresh directory too, seeded only with the results of
Inductor's one-time CPU instruction-set probe (no FX graph / AOTAutograd cache
entries, no kernels), which a worker pays once per session here instead of ~10 s
in every scenario. Graph-level caches therefore always start empty.

``CI=true``: a skipped test is reported as a failure (nothing may silently not run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from helpers.common import MARK, pid_alive  # the scenario scripts' own marker and check

TESTS = Path(__file__).resolve().parent
HELPERS = TESTS / "helpers"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
SCRIPT_TIMEOUT_S = 420

# Environment a user may have set that would change what the scenarios test
# (besides every SANDBOX_* and OTEL_* variable).
_SCRUB = (
    "TORCHINDUCTOR_FX_COMPILE_MODE",
    "TORCHINDUCTOR_FORCE_DISABLE_CACHES",
    "TORCHINDUCTOR_FX_GRAPH_CACHE",
    "TORCHINDUCTOR_AUTOGRAD_CACHE",
    "TORCH_COMPILE_DEBUG",
    "TORCH_LOGS",
    "TRITON_CACHE_DIR",
)


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
    (``sandbox.warmup(wait=True)`` compiles no graph)."""
    seed = tmp_path_factory.mktemp("inductor-cache-seed")
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
    return seed


def fresh_cache_dir(base: Path, seed: Path) -> Path:
    path = base / "inductor-cache"
    shutil.copytree(seed, path, ignore=shutil.ignore_patterns("locks", "*.lock"))
    return path


@pytest.fixture
def cache_dir(tmp_path: Path, probe_seed: Path) -> Path:
    """A fresh TORCHINDUCTOR_CACHE_DIR for one test (empty graph caches)."""
    return fresh_cache_dir(tmp_path, probe_seed)


@pytest.fixture(scope="module")
def module_cache_dir(tmp_path_factory: pytest.TempPathFactory, probe_seed: Path) -> Path:
    return fresh_cache_dir(tmp_path_factory.mktemp("module"), probe_seed)


# --- running scenario scripts --------------------------------------------------------


def script_env(cache_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The scenario's environment: a clean slate of sandbox settings, its own Inductor
    cache dir, and its own run store next to it (never the user's default store)."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith(("SANDBOX_", "OTEL_"))}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    env["SANDBOX_STORE"] = str(cache_dir.parent / f"{cache_dir.name}-runs.db")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"
    env.update(extra or {})
    return env


class ScriptResult(dict):
    """The script's JSON result, plus ``stdout``/``stderr``/``returncode``/``seconds``."""

    stdout: str
    stderr: str
    returncode: int
    seconds: float


def parse_result(stdout: str) -> Any:
    lines = [line for line in stdout.splitlines() if line.startswith(MARK)]
    if not lines:
        return None
    return json.loads(lines[-1][len(MARK) :])


def run_script(
    name: str,
    *args: str,
    cache_dir: Path,
    env: dict[str, str] | None = None,
    timeout: float = SCRIPT_TIMEOUT_S,
    expect_rc: int | None = 0,
) -> ScriptResult:
    """Run ``tests/helpers/<name>`` as ``__main__`` in a fresh interpreter; return its JSON."""
    t0 = time.time()
    try:
        proc = subprocess.run(
            [sys.executable, str(HELPERS / name), *args],
            cwd=str(HELPERS),
            env=script_env(cache_dir, env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"{name} {' '.join(args)} ran past {timeout} s\nstdout:\n{out[-3000:]}\nstderr:\n{err[-6000:]}")
    data = parse_result(proc.stdout)
    if (expect_rc is not None and proc.returncode != expect_rc) or data is None:
        pytest.fail(
            f"{name} {' '.join(args)} exited with {proc.returncode} (expected {expect_rc}), "
            f"result {'missing' if data is None else 'present'}\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-8000:]}"
        )
    result = ScriptResult(data)
    result.stdout, result.stderr, result.returncode = proc.stdout, proc.stderr, proc.returncode
    result.seconds = time.time() - t0
    return result


# --- processes -----------------------------------------------------------------------


def wait_gone(pids: Iterable[int], within: float) -> list[int]:
    """Wait up to ``within`` seconds for ``pids`` to end; return those still alive."""
    pids = list(pids)
    deadline = time.time() + within
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive or time.time() >= deadline:
            return alive
        time.sleep(0.1)


def kill_quietly(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# --- Redis (Inductor's remote caches) ------------------------------------------------


REDIS_HINT = "apt-get install -y --no-install-recommends redis-server, and pip install redis"


class RedisServer:
    """A real ``redis-server`` on 127.0.0.1, a free port, its own directory, no persistence."""

    def __init__(self, binary: str, workdir: Path) -> None:
        import socket as _socket

        with _socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.binary, self.workdir = binary, workdir
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        import redis

        self.proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(self.workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 20
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return self
            except redis.exceptions.ConnectionError:
                if self.proc.poll() is not None or time.time() > deadline:
                    log = (
                        (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                        if (self.workdir / "redis.log").exists()
                        else ""
                    )
                    pytest.fail(f"redis-server did not answer on {self.url} within 20 s:\n{log}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterable[RedisServer]:
    """A running redis-server of this test's own (stop() / start() to take it down and back).
    Missing redis-server or the redis package: skips locally, fails in CI."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    missing = "redis-server is not installed" if binary is None else None
    try:
        import redis  # noqa: F401
    except ImportError:
        missing = "the redis package is not installed"
    if missing:
        message = f"{missing}; install it with `{REDIS_HINT}`"
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
