"""What the sandbox leaves on disk is private, and its temporary files go away.

- The SQLite run store holds argv, working directories and generated code: a new store is mode
  0600, so are its ``-wal`` and ``-shm`` files, and a folder it creates for itself is 0700.
- Each worker pool logs into a folder of its own under ``$TMPDIR``: 0700, each log 0600. A worker
  that dies (SIGKILL) has its log removed once its failure is recorded; the folder goes when the
  pool shuts down, and when the process that owns the pool is itself killed (its workers, which
  exit then, remove their logs and the folder).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import pid_alive, script_env

from sandbox.record.report import Run
from sandbox.store import open_store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the run store ------------------------------------------------------------------------------


def test_a_new_store_and_its_wal_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: without the sandbox's own modes, 0644 and 0755
    try:
        path = tmp_path / "new-folder" / "runs.db"
        store = open_store(str(path))
        store.put_run(Run(name="private"))
        # The writer is still open: its WAL and shared-memory files are there.
        assert sorted(p.name for p in path.parent.iterdir()) == ["runs.db", "runs.db-shm", "runs.db-wal"]
        assert mode(path.parent) == 0o700
        for name in ("runs.db", "runs.db-wal", "runs.db-shm"):
            assert mode(path.parent / name) == 0o600, name
        store.close()
        assert mode(path) == 0o600
    finally:
        os.umask(old)


def test_the_default_store_folder_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDBOX_STORE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    open_store().close()
    folder = tmp_path / "cache" / "torch-compile-sandbox"
    assert mode(folder) == 0o700 and mode(folder / "runs.db") == 0o600


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o755)
    open_store(str(folder / "runs.db")).close()
    assert mode(folder) == 0o755 and mode(folder / "runs.db") == 0o600


# --- worker logs --------------------------------------------------------------------------------

# A training process with one worker: the log folder while it runs, a worker killed with SIGKILL,
# a graph compiled after it (its compile fails: the worker is gone, a fresh one replaces it).
KILLED_WORKER = r"""
import glob, json, os, signal, stat, time, warnings
import torch
import sandbox

def folders():
    out = {}
    for d in glob.glob(os.path.join(os.environ["TMPDIR"], "sandbox-workers-*")):
        out[d] = {"mode": stat.S_IMODE(os.stat(d).st_mode),
                  "logs": {f: stat.S_IMODE(os.stat(os.path.join(d, f)).st_mode) for f in sorted(os.listdir(d))}}
    return out

sandbox.warmup(workers=1, wait=True)
first = folders()
victim = sandbox.workers()[0]["pid"]
os.kill(victim, signal.SIGKILL)
while os.path.exists("/proc/%d" % victim) and open("/proc/%d/stat" % victim).read().split(")")[-1].split()[0] != "Z":
    time.sleep(0.05)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    f = torch.compile(lambda x: torch.sin(x) + 1, backend="sandbox")
    f(torch.randn(8))
sandbox.warmup(wait=True)  # the replacement is ready
after = folders()
print(json.dumps({"first": first, "after": after, "victim": victim,
                  "workers": [w["pid"] for w in sandbox.workers()],
                  "outcomes": [r.outcome for r in sandbox.reports()],
                  "failure": sandbox.reports()[0].failure.message if sandbox.reports()[0].failure else None}))
"""


@pytest.mark.slow
def test_worker_logs_are_private_and_removed_after_sigkill(tmp_path: Path, cache_dir: Path) -> None:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_WORKER],
        env=script_env(cache_dir, {"TMPDIR": str(tmpdir)}),
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    [(folder, first)] = result["first"].items()
    assert first["mode"] == 0o700
    [(log, log_mode)] = first["logs"].items()
    assert log_mode == 0o600
    assert result["outcomes"] == ["failed"] and "SIGKILL" in result["failure"]
    # The killed worker's log is gone, its failure recorded; the replacement's log is there.
    [(folder_after, after)] = result["after"].items()
    assert folder_after == folder and after["mode"] == 0o700
    assert log not in after["logs"] and len(after["logs"]) == 1
    assert set(after["logs"].values()) == {0o600}
    # The pool shut down at exit: nothing of it is left in $TMPDIR.
    assert not list(tmpdir.glob("sandbox-workers-*")), list(tmpdir.iterdir())


# The process that owns the pool is killed with SIGKILL: nothing of it runs to clean up.
KILLED_PARENT = r"""
import glob, json, os, signal, sys
import sandbox

sandbox.warmup(workers=2, wait=True)
print(json.dumps({"workers": [w["pid"] for w in sandbox.workers()],
                  "folders": glob.glob(os.path.join(os.environ["TMPDIR"], "sandbox-workers-*"))}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_worker_logs_are_removed_when_their_process_is_killed(tmp_path: Path, cache_dir: Path) -> None:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_PARENT],
        env=script_env(cache_dir, {"TMPDIR": str(tmpdir)}),
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    [folder] = result["folders"]
    assert len(result["workers"]) == 2
    deadline = time.time() + 30
    while any(pid_alive(p) for p in result["workers"]) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in result["workers"])
    deadline = time.time() + 10
    while os.path.exists(folder) and time.time() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(folder), os.listdir(folder)
    assert not list(tmpdir.glob("sandbox-workers-*"))
