"""Pre-started workers: spawn, hand out, watch (timeout, memory), replace, shut down.

A worker is a ``python -m sandbox.isolation.worker`` process with three pipes: jobs
in, results out, and a lifeline it watches so that it exits when this process
dies, SIGKILL included. A forked child of this process (a DataLoader worker)
forgets the pool: it neither uses nor tears down the parent's workers.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import select
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from sandbox import env as sandbox_env
from sandbox.isolation import protocol, sizing
from sandbox.isolation.processes import WorkerProcess, signal_name, tree_rss_bytes
from sandbox.record.report import Failure

log = logging.getLogger("sandbox")

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
                w.send({"op": "exit"})
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
                "rss_bytes": tree_rss_bytes(w.pid) if w.alive() else 0,
                "warm_up_s": (w.ready or {}).get("warm_up_s"),
                "warm_up_phases": (w.ready or {}).get("phases"),
                "warm_up_priority": (w.ready or {}).get("warm_up_priority"),
                "repaired_builds": (w.ready or {}).get("repaired_builds") or [],
                "start_to_ready_s": ((w.ready or {}).get("ready_at", w.spawned_at) - w.spawned_at) if w.ready else None,
                "rescue_of": w.rescue_of,
            }
            for w in workers
        ]

    def warm_gpu(self) -> int:
        """Ask each worker to start CUDA, Triton and Triton's compile pool now instead of at its
        first GPU job (``sandbox.warmup()`` on a GPU machine: the program said compiles come soon,
        and its data loading hides the start). A worker without a GPU, or warm already, ignores
        it. Returns how many were asked."""
        with self._lock:
            workers = list(self._workers)
        asked = 0
        for w in workers:
            try:
                w.send({"op": "warm_gpu"})
                asked += 1
            except OSError:
                pass  # a dead worker: the next job finds and replaces it
        return asked

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every worker has finished its warm-up."""
        deadline = None if timeout is None else time.time() + timeout
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            if w.ready is None and w.rescue_of is None:
                self._await_ready(w, deadline)

    # -- one job -------------------------------------------------------------------
    def _await_ready(self, w: WorkerProcess, deadline: float | None) -> WorkerProcess:
        """Wait for ``w``'s warm-up and return the worker to use. An idle-class warm-up gets no
        CPU while every core is busy (data loading, other ranks), and an unprivileged process
        cannot leave that class: after SANDBOX_WORKER_RESCUE_S a second worker starts beside it at
        normal priority, and whichever is ready first is kept."""
        rescue_after = self._rescue_after_s()
        while True:
            chosen = self._settle(w)
            if chosen is not None:
                return chosen
            rescue = w.rescue
            if w.ready_event.is_set() and (rescue is None or rescue.ready_event.is_set()):
                raise self._death(w)  # died warming up (and so did its rescue, if any)
            if deadline is not None and time.time() >= deadline:
                for c in (w, rescue):
                    if c is not None:
                        c.kill()
                if rescue is not None:
                    with self._lock:
                        if rescue in self._workers:
                            self._workers.remove(rescue)
                raise WorkerFailure(
                    "timeout",
                    f"worker {w.pid} did not become ready {time.time() - w.spawned_at:.0f} s after it was "
                    f"started (its log's last lines follow); it was killed",
                    pid=w.pid,
                    signal="SIGKILL",
                    log_tail=w.log_tail(),
                )
            if rescue_after is not None and rescue is None and time.time() - w.spawned_at >= rescue_after:
                self._start_rescue(w, rescue_after)
            # Woken by the worker's ready message at once, as before rescues existed; a rescue's within 0.1 s.
            waiting = next((c for c in (w, w.rescue) if c is not None and not c.ready_event.is_set()), None)
            if waiting is not None:
                waiting.ready_event.wait(0.1)

    def _rescue_after_s(self) -> float | None:
        """Seconds before a starving idle-class warm-up gets a rescue; None where warm-ups are not idle-class."""
        chosen = sandbox_env.get("SANDBOX_WORKER_WARMUP", self.env).lower()
        if chosen not in ("", "idle") or (not chosen and sizing.gpu_machine(self.env)):
            return None
        try:
            value = float(sandbox_env.get("SANDBOX_WORKER_RESCUE_S", self.env))
        except ValueError:
            value = float(sandbox_env.VARIABLES["SANDBOX_WORKER_RESCUE_S"].default)
        return value if value > 0 else None

    def _start_rescue(self, w: WorkerProcess, after: float) -> None:
        with self._lock:
            if w.rescue is not None or self.closed:
                return
            index = self._next_index
            self._next_index += 1
            rescue = WorkerProcess(index, self.log_dir, {**self.env, "SANDBOX_WORKER_WARMUP": "normal"})
            rescue.rescue_of = w.pid
            w.rescue = rescue
            self._workers.append(rescue)
        rescue.watch_ready(self.on_ready)
        log.warning(
            "sandbox: worker %d has not warmed up %.0f s after its start at idle priority (every core is busy); "
            "worker %d starts beside it at normal priority, and the first one ready is kept "
            "(SANDBOX_WORKER_WARMUP=normal starts workers so)",
            w.pid,
            after,
            rescue.pid,
        )

    def _settle(self, w: WorkerProcess) -> WorkerProcess | None:
        """The ready one of ``w`` and its rescue (the other is ended), or None while neither is."""
        with self._lock:
            if w.kept is not None:
                return w.kept
            rescue = w.rescue
            if w.ready is not None:
                w.kept, loser = w, rescue
            elif rescue is not None and rescue.ready is not None:
                w.kept, loser = rescue, w
            else:
                return None
            if loser is not None and loser in self._workers:
                self._workers.remove(loser)
        if loser is not None:
            loser.kill()
            loser.remove_log()
        return w.kept

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
                rss = tree_rss_bytes(w.pid)
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
        sig = signal_name(code)
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

        Raises WorkerFailure. A worker that died, ran past its deadline or memory limit, or ran
        out of memory is replaced; one whose compile raised an ordinary exception is kept.
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
            if w.ready is None or w.kept not in (None, w):
                # timeout_s limits the compile; a worker still starting (a replacement after a
                # failure, or the first one on a busy machine) gets at least START_LIMIT_S.
                w = self._await_ready(w, None if timeout_s is None else time.time() + max(timeout_s, START_LIMIT_S))
            waited = time.time() - t0
            sent_at = time.time()
            if self.compile_threads:
                job = {**job, "compile_threads": self.compile_threads}
            try:
                w.send(job)
            except OSError as e:
                raise self._death(w) from e
            if on_sent is not None:
                on_sent()  # e.g. the profiler region switches from waiting to compiling
            deadline = None if timeout_s is None else sent_at + timeout_s
            reply = self._receive(w, deadline, limit)
            received = time.time()
            w.jobs += 1
            if not reply.get("ok"):
                # The compile raised an ordinary exception and the worker caught it: it goes on as
                # in-process Inductor goes on after the same exception, so the next graph does not
                # wait for a start.
                healthy = reply.get("reusable") is True
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
