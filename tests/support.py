"""Shared test machinery: paths, the CI switch, and running scenario scripts.

A plain module (``from support import ...``), not ``conftest.py``: pytest imports every
conftest outside a package as the module ``conftest`` and replaces it in ``sys.modules`` each
time, so a ``from conftest import ...`` could get another folder's conftest. ``conftest.py``
holds only hooks and fixtures, and imports what it needs from here.

Most tests run a scenario script from ``tests/helpers`` in a fresh Python process:
the worker pool and dynamo's caches are process-wide, and several scenarios kill
workers or the process itself. Each script prints one JSON result line (see
``helpers/common.py``), which :func:`run_script` parses and returns.

Cache directories: each scenario gets its own fresh ``TORCHINDUCTOR_CACHE_DIR``
(:func:`fresh_cache_dir`), seeded only with the results of Inductor's one-time CPU
instruction-set probe (the ``probe_seed`` fixture of ``conftest.py``).
"""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from helpers.common import MARK, pid_alive  # the scenario scripts' own marker and check

__all__ = [
    "HELPERS",
    "IN_CI",
    "MARK",
    "REDIS_HINT",
    "ROOT",
    "SCRIPT_TIMEOUT_S",
    "TESTS",
    "RedisServer",
    "ScriptResult",
    "free_port",
    "fresh_cache_dir",
    "kill_quietly",
    "load_bench",
    "made_once",
    "missing",
    "parse_result",
    "pid_alive",
    "run_script",
    "script_env",
    "wait_gone",
]

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent  # the repository root
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


def load_bench(name: str) -> Any:
    """A bench script as a module. Run as a script, its own folder comes first on ``sys.path``,
    where it finds its helpers (``_paths``); here that folder is there only while it loads, so
    ``bench/coverage.py`` never stands in for an installed ``coverage`` afterwards."""
    import importlib.util

    bench_dir = str(ROOT / "bench")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, bench_dir)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(bench_dir)
    return module


def missing(what: str) -> None:
    """Locally a skip that says what to install; in CI a failure."""
    if IN_CI:
        pytest.fail(f"CI=true and {what}")
    pytest.skip(what)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- cache directories ---------------------------------------------------------------


def fresh_cache_dir(base: Path, seed: Path) -> Path:
    path = base / "inductor-cache"
    shutil.copytree(seed, path, ignore=shutil.ignore_patterns("locks", "*.lock"))
    return path


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
        self.port = free_port()
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


def other_user() -> int | None:
    """Who reads as "someone who cannot write here": nobody when the tests run as root (for whom
    permission bits do not apply), else None, the test's own user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534


def as_user(user: int | None, command: list[str]) -> list[str]:
    """``command`` run as ``user`` (its uid and gid, no other groups) through util-linux's setpriv;
    as is for None."""
    if user is None:
        return command
    if not shutil.which("setpriv"):
        missing("setpriv (util-linux) is needed to read a store as another user: apt-get install util-linux")
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]


# -- the developer's own files: never touched ----------------------------------------------------

# Settings of the test machinery itself stay (each declared in sandbox/env.py).
TEST_SETTINGS = {"SANDBOX_TEST_CHROMIUM"}


class UserFiles:
    """The developer's real default store, its WAL and the demo's span file, as they were before the suite."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.paths = [cache / name for name in ("runs.db", "runs.db-wal", "demo-spans.jsonl")]
        self.before = self._fingerprint()

    def _fingerprint(self) -> dict[str, tuple[int, int] | None]:
        out: dict[str, tuple[int, int] | None] = {}
        for path in self.paths:
            try:
                st = path.stat()
                out[str(path)] = (st.st_size, st.st_mtime_ns)
            except OSError:
                out[str(path)] = None
        return out

    def changed(self) -> list[str]:
        return [p for p, v in self._fingerprint().items() if v != self.before[p]]


SUITE_HOME: Path | None = None
REAL_CACHE: Path | None = None  # the developer's own cache folder, as it was before the suite


def isolate_user_home() -> UserFiles:
    """Give the suite a home and a cache folder of its own and drop the shell's SANDBOX_* settings (its
    store, its collector); called once, by conftest.py at import, before any test or fixture runs."""
    global SUITE_HOME, REAL_CACHE
    REAL_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    real = UserFiles(REAL_CACHE / "torch-compile-sandbox")
    SUITE_HOME = Path(tempfile.mkdtemp(prefix="sandbox-tests-home-"))
    os.environ["HOME"] = str(SUITE_HOME)
    os.environ["XDG_CACHE_HOME"] = str(SUITE_HOME / ".cache")
    for name in [n for n in os.environ if n.startswith("SANDBOX_") and n not in TEST_SETTINGS]:
        del os.environ[name]
    return real


def cache_cxx_builds() -> Path | None:
    """Point ``CXX`` at ``helpers/cxx_cache.py`` for this pytest run, so each distinct C++ build
    runs g++ once per run rather than once per scenario (each scenario's Inductor cache starts
    empty). Called by conftest.py at import: the run's first process makes the folder and returns
    it (it removes it at the end); xdist workers and the scenarios they start inherit the settings
    through the environment and share it. No compiler on PATH: nothing is set, and Inductor's own
    error says what is missing."""
    if os.environ.get("TEST_CXX_CACHE"):
        return None
    real = shutil.which(os.environ.get("CXX") or "g++")
    if real is None:
        return None
    folder = Path(tempfile.mkdtemp(prefix="sandbox-tests-cxx-"))
    (folder / "out").mkdir()
    (folder / "bin").mkdir()
    shim = folder / "bin" / "g++"  # Inductor tells gcc from clang by the compiler's name
    script = HELPERS / "cxx_cache.py"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S {shlex.quote(str(script))} "$@"\n')
    shim.chmod(0o755)
    os.environ.update(TEST_CXX_REAL=real, TEST_CXX_CACHE=str(folder / "out"), CXX=str(shim))
    return folder


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], Any]) -> tuple[Path, Any]:
    """A folder that ``make(folder)`` fills once for the whole pytest run, and what it returned
    (kept as JSON): under xdist the first worker to ask makes it while the others wait on a lock,
    so a store of real runs is not made again by every worker. A ``make`` that fails leaves
    nothing behind, and the next caller tries again."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, which holds every worker's basetemp
    folder, done = base / f"once-{name}", base / f"once-{name}.json"
    with open(base / f"once-{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            try:
                made = make(folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            done.write_text(json.dumps(made))
        return folder, json.loads(done.read_text())
