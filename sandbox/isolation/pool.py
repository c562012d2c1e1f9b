"""Pre-started workers: spawn, hand out, watch (timeout, memory), replace, shut down.

A worker is a ``python -m sandbox.isolation.worker`` process with three pipes: jobs
in, results out, and a lifeline it watches so that it exits when this process
dies, SIGKILL included. A forked child of this process (a DataLoader worker)
forgets the pool: it neither uses nor tears down the parent's workers.
"""

from __future__ import annotations

import atexit
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from sandbox.isolation import protocol
from sandbox.record.report import Failure

# How long a job waits for a worker that is still starting before the worker counts as hung,
# unless timeout_s is longer: its start (import torch, warm-up) is not the graph's compile.
START_LIMIT_S = 300.0


class WorkerFailure(Exception):
    """A job that did not come back with a compiled graph; ``failure`` says how, as the
    report records it."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        pid: int | None = None,
        exit_code: int | None = None,
        signal: str | None = None,
        log_tail: list[str] | None = None,
        traceback: str | None = None,
        torch_tools: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.failure = Failure(
            kind,
            message,
            exit_code=exit_code,
            signal=signal,
            worker_pid=pid,
            log_tail=list(log_tail or []),
            traceback=traceback,
        )
        self.torch_tools = torch_tools  # the worker's log and trace records up to the error


@dataclass
class JobResult:
    reply: dict[str, Any]
    worker_pid: int
    waited_s: float  # waiting for a free, ready worker
    sent_at: float
    received_at: float


def _signal_name(code: int | None) -> str | None:
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _tree_rss_bytes(pid: int) -> int:
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
        self.ready: dict[str, Any] | None = None
        self.ready_event = threading.Event()
        self.jobs = 0

    def watch_ready(self, on_ready: Any) -> None:
        """Read the worker's one 'ready' message in the background (the only reader until then)."""

        def watch() -> None:
            try:
                reply = protocol.recv(self.result_r)
                if reply.get("op") == "ready":
                    self.ready = reply
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


# torch's debugging switches that would make a worker write files of its own (a second
# trace log, a second debug folder, the user's TORCH_LOGS_OUT file): the parent asks for
# what it records with each job instead, and writes it itself (sandbox/isolation/torch_tools.py).
WORKER_ENV_DROPPED = ("TORCH_TRACE", "TORCH_DTRACE", "TORCH_COMPILE_DEBUG", "TORCH_LOGS_OUT", "TORCH_LOGS")


class Pool:
    """A fixed number of pre-started workers; one job per worker at a time."""

    def __init__(
        self, size: int, env: dict[str, str] | None = None, on_ready: Any = None, started_by: str = ""
    ) -> None:
        self.size = size
        self.started_by = started_by  # what started the pool: import torch, torch.compile, warmup(), a graph
        self.on_ready = on_ready
        self.env = dict(os.environ if env is None else env)
        for name in WORKER_ENV_DROPPED:
            self.env.pop(name, None)
        # The workers' logs: a private folder (mkdtemp: 0700) under $TMPDIR, removed at shutdown; a
        # retired worker's log goes at once, and workers whose parent died remove theirs (worker.py).
        self.log_dir = tempfile.mkdtemp(prefix="sandbox-workers-")
        self._idle: queue.Queue[WorkerProcess] = queue.Queue()
        self._lock = threading.Lock()
        self._workers: list[WorkerProcess] = []
        self._next_index = 0
        self.restarts = 0
        self.closed = False
        self.owner_pid = os.getpid()
        self._in_flight: dict[int, float] = {}  # job number -> when it was handed to run() (unix s)
        self._job_seq = 0
        # Each worker's share of the host's cores now, sent with every job: a worker started
        # with a larger share (before the pool grew) shrinks its compile pool. None: the user's own.
        self.compile_threads: int | None = None
        for _ in range(size):
            self._spawn()

    # -- lifecycle ---------------------------------------------------------------
    def _spawn(self) -> WorkerProcess:
        with self._lock:
            index = self._next_index
            self._next_index += 1
        w = WorkerProcess(index, self.log_dir, self.env)
        w.watch_ready(self.on_ready)
        with self._lock:
            self._workers.append(w)
        self._idle.put(w)
        return w

    def _retire(self, w: WorkerProcess, replace: bool) -> None:
        w.kill()
        w.remove_log()  # its failure, log tail included, was built before it was retired
        with self._lock:
            if w in self._workers:
                self._workers.remove(w)
        if replace and not self.closed:
            self.restarts += 1
            self._spawn()

    def resize(self, size: int) -> None:
        while self.size < size:
            self.size += 1
            self._spawn()
        self.size = max(self.size, size)  # shrinking is not needed: extra workers just idle

    def shutdown(self, timeout: float = 3.0) -> None:
        """Ready workers are asked to exit; one still warming up has nothing to lose and is killed."""
        if self.closed or os.getpid() != self.owner_pid:
            return
        self.closed = True
        with self._lock:
            workers = list(self._workers)
            self._workers.clear()
        asked = []
        for w in workers:
            if w.ready is None:
                w.kill()
                continue
            try:
                protocol.send(w.job_w, {"op": "exit"})
                asked.append(w)
            except OSError:
                w.kill()
        deadline = time.time() + timeout
        for w in asked:
            try:
                w.proc.wait(timeout=max(0.05, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            w.kill()
        shutil.rmtree(self.log_dir, ignore_errors=True)

    def forget(self) -> None:
        self.closed = True
        with self._lock:
            for w in self._workers:
                w.forget()
            self._workers.clear()

    def workers(self) -> list[dict[str, Any]]:
        with self._lock:
            workers = list(self._workers)
        return [
            {
                "pid": w.pid,
                "alive": w.alive(),
                "ready": w.ready is not None,
                "jobs": w.jobs,
                "started_by": self.started_by,
                "rss_bytes": _tree_rss_bytes(w.pid) if w.alive() else 0,
                "warm_up_s": (w.ready or {}).get("warm_up_s"),
                "warm_up_phases": (w.ready or {}).get("phases"),
                "warm_up_priority": (w.ready or {}).get("warm_up_priority"),
                "start_to_ready_s": ((w.ready or {}).get("ready_at", w.spawned_at) - w.spawned_at) if w.ready else None,
            }
            for w in workers
        ]

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every worker has finished its warm-up."""
        deadline = None if timeout is None else time.time() + timeout
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            if w.ready is None:
                self._await_ready(w, deadline)

    # -- one job -------------------------------------------------------------------
    def _await_ready(self, w: WorkerProcess, deadline: float | None) -> None:
        while not w.ready_event.wait(0.2):
            if deadline is not None and time.time() >= deadline:
                w.kill()
                raise WorkerFailure(
                    "timeout",
                    f"worker {w.pid} did not become ready {time.time() - w.spawned_at:.0f} s after it was "
                    f"started (its log's last lines follow); it was killed",
                    pid=w.pid,
                    signal="SIGKILL",
                    log_tail=w.log_tail(),
                )
        if w.ready is None:
            raise self._death(w)

    def _receive(self, w: WorkerProcess, deadline: float | None, memory_limit: int | None) -> dict[str, Any]:
        while True:
            wait = 0.1 if memory_limit else 1.0
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.time()))
            try:
                readable, _, _ = select.select([w.result_r], [], [], wait)
            except (OSError, ValueError):
                readable = [w.result_r]
            if readable:
                try:
                    return protocol.recv(w.result_r)
                except (protocol.ChannelClosed, OSError, EOFError) as e:
                    raise self._death(w) from e
            if memory_limit:
                rss = _tree_rss_bytes(w.pid)
                if rss > memory_limit:
                    w.kill()
                    raise WorkerFailure(
                        "oom",
                        f"worker {w.pid} grew to {rss / 2**20:.0f} MiB, past "
                        f"memory_limit_mb={memory_limit // 2**20}; it was killed",
                        pid=w.pid,
                        signal="SIGKILL",
                        log_tail=w.log_tail(),
                    )
            if deadline is not None and time.time() >= deadline:
                w.kill()
                raise WorkerFailure(
                    "timeout",
                    f"worker {w.pid} did not finish within the time limit; it was killed",
                    pid=w.pid,
                    signal="SIGKILL",
                    log_tail=w.log_tail(),
                )
            if not w.alive():
                raise self._death(w)

    def _death(self, w: WorkerProcess) -> WorkerFailure:
        try:
            code = w.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        sig = _signal_name(code)
        how = f"was killed by {sig}" if sig else f"exited with code {code}"
        return WorkerFailure(
            "crash",
            f"worker {w.pid} {how}",
            pid=w.pid,
            exit_code=code if code is not None and code >= 0 else None,
            signal=sig,
            log_tail=w.log_tail(),
        )

    def run(
        self, job: dict[str, Any], timeout_s: float | None, memory_limit_mb: int | None, on_sent: Any = None
    ) -> JobResult:
        """Send one job to a free worker and wait for its reply.

        Raises WorkerFailure; the worker involved is then replaced (a failed job
        may leave poisoned state behind, so no worker is reused after one).
        """
        if self.closed:
            raise WorkerFailure("error", "the worker pool is shut down")
        t0 = time.time()
        with self._lock:
            self._job_seq += 1
            job_no = self._job_seq
            self._in_flight[job_no] = t0
        try:
            w = self._idle.get()
        except BaseException:
            self._done(job_no)
            raise
        limit = memory_limit_mb * 2**20 if memory_limit_mb else None
        healthy = False
        try:
            if w.ready is None:
                # timeout_s limits the compile; a worker still starting (a replacement after a
                # failure, or the first one on a busy machine) gets at least START_LIMIT_S.
                self._await_ready(w, None if timeout_s is None else time.time() + max(timeout_s, START_LIMIT_S))
            waited = time.time() - t0
            sent_at = time.time()
            if self.compile_threads:
                job = {**job, "compile_threads": self.compile_threads}
            try:
                protocol.send(w.job_w, job)
            except OSError as e:
                raise self._death(w) from e
            if on_sent is not None:
                on_sent()  # e.g. the profiler region switches from waiting to compiling
            deadline = None if timeout_s is None else sent_at + timeout_s
            reply = self._receive(w, deadline, limit)
            received = time.time()
            w.jobs += 1
            if not reply.get("ok"):
                raise WorkerFailure(
                    "error",
                    f"{reply.get('error_type')}: {reply.get('message')}",
                    pid=w.pid,
                    log_tail=w.log_tail(),
                    traceback=reply.get("traceback"),
                    torch_tools=reply.get("torch_tools"),
                )
            healthy = True
            return JobResult(reply, w.pid, waited, sent_at, received)
        finally:
            self._done(job_no)
            if healthy:
                self._idle.put(w)
            else:
                self._retire(w, replace=True)

    def _done(self, job_no: int) -> None:
        with self._lock:
            self._in_flight.pop(job_no, None)

    def in_flight(self) -> list[float]:
        """When each job now in the pool's hands (waiting for a worker, or compiling in one) was handed to ``run``."""
        with self._lock:
            return list(self._in_flight.values())


_pool: Pool | None = None
_pool_lock = threading.Lock()


def adopt(p: Pool) -> None:
    """Make ``p`` this process's pool, shut down at exit."""
    global _pool
    with _pool_lock:
        _pool = p
    atexit.register(p.shutdown)


def current_pool() -> Pool | None:
    return _pool


def shutdown() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown()
        _pool = None


def _after_fork_in_child() -> None:
    global _pool, _pool_lock
    _pool_lock = threading.Lock()
    if _pool is not None:
        _pool.forget()
    _pool = None


os.register_at_fork(after_in_child=_after_fork_in_child)
