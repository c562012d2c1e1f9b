"""A worker process as the pool sees it (its pipes, its log, its start), and the process-tree
helpers the pool, the worker and the service share to end a worker with everything it started."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from sandbox.isolation import protocol

log = logging.getLogger("sandbox")


def signal_name(code: int | None) -> str | None:
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants (Inductor's compile pool)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


class WorkerProcess:
    def __init__(self, index: int, log_dir: str, env: dict[str, str]) -> None:
        self.index = index
        job_r, self.job_w = os.pipe()
        self.result_r, result_w = os.pipe()
        lifeline_r, self.lifeline_w = os.pipe()
        self.log_path = os.path.join(log_dir, f"worker-{index}-{time.time_ns()}.log")
        self.spawned_at = time.time()
        # Private, like its folder: a worker's log holds the user's code paths and tracebacks.
        with open(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sandbox.isolation.worker",
                    "--in-fd",
                    str(job_r),
                    "--out-fd",
                    str(result_w),
                    "--lifeline-fd",
                    str(lifeline_r),
                    "--parent-pid",
                    str(os.getpid()),
                    "--log-path",
                    self.log_path,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(job_r, result_w, lifeline_r),
                env=env,
                close_fds=True,
            )
        for fd in (job_r, result_w, lifeline_r):
            os.close(fd)
        self.pid = self.proc.pid
        # One frame at a time on the job pipe: a job and a warm-up request from another thread
        # would otherwise interleave their bytes.
        self._send_lock = threading.Lock()
        self.ready: dict[str, Any] | None = None
        self.ready_event = threading.Event()
        self.jobs = 0
        # An idle-class warm-up that starved: the normal-priority worker started beside it, and
        # which of the two was kept (the first ready); see Pool._await_ready.
        self.rescue: WorkerProcess | None = None
        self.rescue_of: int | None = None
        self.kept: WorkerProcess | None = None

    def send(self, message: dict[str, Any]) -> None:
        """One frame to the worker (raises OSError once it is gone)."""
        with self._send_lock:
            protocol.send(self.job_w, message)

    def watch_ready(self, on_ready: Any) -> None:
        """Read the worker's one 'ready' message in the background (the only reader until then)."""

        def watch() -> None:
            try:
                reply = protocol.recv(self.result_r)
                if reply.get("op") == "ready":
                    self.ready = reply
                    _say_repaired(self.pid, reply.get("repaired_builds"))
            except (protocol.ChannelClosed, OSError, EOFError):
                pass
            finally:
                self.ready_event.set()
            if self.ready is not None and on_ready is not None:
                try:
                    on_ready(self)
                except Exception:
                    pass

        threading.Thread(target=watch, name=f"sandbox-worker-{self.index}-ready", daemon=True).start()

    def fds(self) -> tuple[int, ...]:
        return (self.job_w, self.result_r, self.lifeline_w)

    def log_tail(self, n: int = 20) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                lines = f.read().decode("utf-8", "replace").splitlines()
            return lines[-n:]
        except OSError:
            return []

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        tree: list[int] = []
        if self.proc.poll() is None:
            # The worker may have started Inductor's own compile pool: end the group's tree.
            tree = kill_descendants(self.pid)
            try:
                self.proc.kill()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        wait_gone(tree)
        self.close()

    def remove_log(self) -> None:
        """Once the worker is gone and what its log said is in the report (``log_tail``)."""
        try:
            os.unlink(self.log_path)
        except OSError:
            pass

    def close(self) -> None:
        for fd in self.fds():
            try:
                os.close(fd)
            except OSError:
                pass

    def forget(self) -> None:
        """In a forked child: drop our copies of the pipes, leave the process alone."""
        self.close()
        self.proc.returncode = 0  # never waited on, never killed from here


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc), children first."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(c) for c in f.read().split() if int(c) not in out]
                out.extend(kids)
                todo.extend(kids)
        except (OSError, ValueError):
            continue
    return out


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def kill_descendants(pid: int) -> list[int]:
    """SIGKILL every live descendant of ``pid``; returns them, for :func:`wait_gone`."""
    tree = descendants(pid)
    for child in tree:
        _kill_quietly(child)
    return tree


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie (its memory, files and GPU context already freed)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def wait_gone(pids: list[int], timeout: float = 3.0) -> list[int]:
    """Wait until killed processes have exited; returns those still there after ``timeout``.
    A killed process frees its memory and its GPU context on its way out: waiting here makes
    the process that started it pay for that, not whatever starts next on the machine
    (docs/decisions/worker-exit.md)."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if not _gone(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        left = [p for p in left if not _gone(p)]
    return left


def _say_repaired(pid: int, names: Any) -> None:
    """Warn once per worker that removed C++ builds a killed compile cut short
    (caches.repair_interrupted_builds): until then they crashed or slowed compiles on this host."""
    if not names or not isinstance(names, list):
        return
    # The names are files found on the host (any user may create them in a shared /tmp): repr()
    # escapes every character that is not printable, so a name cannot write to the terminal.
    shown = ", ".join(repr(str(n)[:80]) for n in names[:3]) + (", ..." if len(names) > 3 else "")
    log.warning(
        "sandbox: worker %s removed %d C++ build(s) that a killed compile left unfinished (%s). Inductor "
        "never rebuilds an output that exists: a partial kernel library crashed each load of its graph, "
        "a partial precompiled header made every C++ kernel on this host parse the whole header. They "
        "are built again when next needed.",
        pid,
        len(names),
        shown,
    )
