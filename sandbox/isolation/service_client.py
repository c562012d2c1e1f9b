"""A client of the host's compile service (``service.py``): a pool with ``Pool``'s face.

``ServicePool.run(job, ...)`` sends the job over the service's socket and returns the
``JobResult`` the service answers, with who compiled the graph (``reply["single_flight"]``).
It connects, or starts the service, on a background thread, so that ``import torch`` does not
wait. The start race between ranks is decided under an ``flock`` next to the socket. When the
service cannot be reached, or dies, this process falls back to a ``Pool`` of its own, as it
would without a service: a job in flight when the connection broke fails as a worker crash
(the failure policy then decides), and every later job goes to the process's own workers.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from sandbox import env as sandbox_env
from sandbox.isolation import protocol, service_key, sizing
from sandbox.isolation.pool import START_LIMIT_S, JobResult, Pool, WorkerFailure
from sandbox.isolation.service_key import ServiceUnavailable

log = logging.getLogger("sandbox")

CONNECT_LIMIT_S = 60.0  # for the service to come up (no torch to import) and answer hello
_STATUS_S = 5.0


def wanted(choice: str, environ: dict[str, str] | os._Environ | None = None) -> bool:
    """Whether this process compiles through the host's service: ``on``; ``auto`` when torchrun
    runs several ranks on this host (``LOCAL_WORLD_SIZE`` > 1)."""
    if choice == "on":
        return True
    return choice == "auto" and sizing.ranks_on_host(environ) > 1


def identity() -> dict[str, Any]:
    """Who this client is, as reports name it (the rank from torchrun's environment)."""

    def number(name: str) -> int | None:
        try:
            return int(os.environ[name])
        except (KeyError, ValueError):
            return None

    return {
        "pid": os.getpid(),
        "rank": number("RANK"),
        "local_rank": number("LOCAL_RANK"),
        "host": socket.gethostname(),
    }


def _hello(path: str, compat: dict[str, Any], hello: dict[str, Any]) -> tuple[str, Any]:
    """("ok", (socket, welcome)), ("absent", reason) or ("refused", reason)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        # A bound on the answer to hello only (a service that stopped answering); the frames are
        # read with os.read, so the socket stays blocking and the bound is the kernel's.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 10, 0))
        protocol.send(sock.fileno(), {"op": "hello", "compat": compat, **hello})
        answer = protocol.recv(sock.fileno())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 0))
    except (OSError, EOFError, ValueError) as e:
        sock.close()
        return "absent", f"{type(e).__name__}: {e}"
    if answer.get("op") == "welcome":
        return "ok", (sock, answer)
    sock.close()
    return "refused", str(answer.get("reason") or answer)


def _spawn(files: dict[str, str], compat: dict[str, Any], env: dict[str, str], workers: int) -> subprocess.Popen:
    grace = sandbox_env.get("SANDBOX_SERVICE_GRACE_S")
    with open(os.open(files["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sandbox.isolation.service",
                "--socket",
                files["socket"],
                "--workers",
                str(workers),
                "--grace-s",
                grace,
            ],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            close_fds=True,
            # Not in the rank's process group: a signal for the rank is not one for the host's service.
            start_new_session=True,
        )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(compat).encode())
    proc.stdin.close()
    return proc


def connect_or_start(
    compat: dict[str, Any], hello: dict[str, Any], env: dict[str, str], workers: int
) -> tuple[socket.socket, dict[str, Any], bool]:
    """A welcomed connection to the host's service, started by this process if none runs:
    (socket, welcome, started here). Raises ``ServiceUnavailable``."""
    files = service_key.paths(service_key.service_dir(env), compat)
    last = "not tried"
    for _ in range(3):
        state, got = _hello(files["socket"], compat, hello)
        if state == "ok":
            return (*got, False)
        if state == "refused":
            raise ServiceUnavailable(got)
        with open(os.open(files["lock"], os.O_RDWR | os.O_CREAT, 0o600), "r+") as lock:
            deadline = time.time() + CONNECT_LIMIT_S
            while True:  # ranks starting at once: one starts the service, the others then connect
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.time() > deadline:
                        raise ServiceUnavailable(f"{files['lock']} stayed locked for {CONNECT_LIMIT_S:.0f} s") from None
                    time.sleep(0.05)
            state, got = _hello(files["socket"], compat, hello)
            if state == "ok":
                return (*got, False)
            if state == "refused":
                raise ServiceUnavailable(got)
            try:
                os.unlink(files["socket"])  # a service that died without removing it
            except FileNotFoundError:
                pass
            proc = _spawn(files, compat, env, workers)
            while time.time() < deadline:
                if os.path.exists(files["socket"]):
                    state, got = _hello(files["socket"], compat, hello)
                    if state == "ok":
                        return (*got, True)
                    last = got
                if proc.poll() is not None:
                    last = f"the service exited with {proc.returncode} (its log: {files['log']})"
                    break
                time.sleep(0.05)
    raise ServiceUnavailable(f"could not reach a compile service at {files['socket']}: {last}")


class _Waiter:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.message: dict[str, Any] | None = None
        self.broken: str | None = None


class ServicePool:
    """``Pool``'s face over the host's compile service, with a ``Pool`` of its own to fall back to."""

    def __init__(
        self,
        size: int,
        service_env: dict[str, str],
        local: Callable[[int], Pool],
        started_by: str = "",
        ranks_on_host: int = 1,
    ) -> None:
        self.size = size
        self.env = service_env  # the service's (and its workers') environment, when this process starts it
        self.started_by = started_by
        self.closed = False
        self.owner_pid = os.getpid()
        self.restarts = 0
        self.service_pid: int | None = None
        self.started_service = False
        self.broken: str | None = None  # why this process compiles in its own pool now
        self._local_factory = local
        self._local: Pool | None = None
        self._ranks = ranks_on_host
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._in_flight: dict[int, float] = {}
        self._seq = 0
        self._connected = threading.Event()
        self.identity = identity()
        threading.Thread(target=self._connect, name="sandbox-service-connect", daemon=True).start()

    # -- the connection ---------------------------------------------------------------------------
    def _connect(self) -> None:
        hello = {"client": self.identity, "workers": self.size, "ranks_on_host": self._ranks}
        try:
            compat = service_key.compatibility(self.env)
            sock, welcome, started = connect_or_start(compat, hello, self.env, self.size)
        except (ServiceUnavailable, OSError) as e:
            self._break(f"no compile service: {e}", warn=True)
            self._connected.set()
            return
        with self._lock:
            if self.closed:
                sock.close()
                self._connected.set()
                return
            self._sock, self.service_pid, self.started_service = sock, welcome.get("pid"), started
        threading.Thread(target=self._read, args=(sock,), name="sandbox-service-reader", daemon=True).start()
        self._connected.set()

    def _read(self, sock: socket.socket) -> None:
        why = f"the compile service {self.service_pid} went away"
        try:
            while True:
                msg = protocol.recv(sock.fileno())
                with self._lock:
                    waiter = self._waiters.pop(msg.get("seq"), None)
                if waiter is not None:
                    waiter.message = msg
                    waiter.event.set()
        except (protocol.ChannelClosed, EOFError):
            pass
        except (OSError, ValueError) as e:
            why += f" ({type(e).__name__}: {e})"
        if not self.closed:
            self._break(why, warn=True)

    def _break(self, why: str, warn: bool = False) -> None:
        """Stop using the service: what waits for it fails, later jobs go to a pool of our own."""
        with self._lock:
            if self.broken is not None:
                return
            self.broken = why
            waiters = list(self._waiters.values())
            self._waiters.clear()
            sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        for waiter in waiters:
            waiter.broken = why
            waiter.event.set()
        if warn and not self.closed:
            log.warning("sandbox: %s; this process compiles in workers of its own from now on", why)
        if not self.closed and os.getpid() == self.owner_pid:
            self.local()  # started now: it warms up while the failed graph's fallback runs

    def local(self) -> Pool:
        with self._lock:
            if self._local is None:
                self._local = self._local_factory(self.size)
            return self._local

    def _request(self, message: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        """Send ``message`` with a sequence number and wait for the answer carrying it."""
        waiter = _Waiter()
        with self._lock:
            if self._sock is None:
                raise WorkerFailure("crash", self.broken or "no connection to the compile service")
            self._seq += 1
            seq = message["seq"] = self._seq
            self._waiters[seq] = waiter
            sock = self._sock
        try:
            with self._send_lock:
                protocol.send(sock.fileno(), message)
        except OSError as e:
            self._break(f"the compile service {self.service_pid} went away ({e})", warn=True)
        if not waiter.event.wait(timeout):
            with self._lock:
                self._waiters.pop(seq, None)
            raise TimeoutError
        if waiter.message is None:
            raise WorkerFailure("crash", f"{waiter.broken}, with this graph's compile in flight")
        return waiter.message

    # -- Pool's face ------------------------------------------------------------------------------
    def run(
        self, job: dict[str, Any], timeout_s: float | None, memory_limit_mb: int | None, on_sent: Any = None
    ) -> JobResult:
        if self.closed:
            raise WorkerFailure("error", "the worker pool is shut down")
        self._connected.wait(CONNECT_LIMIT_S)
        if self.broken is not None or self._sock is None:
            return self.local().run(job, timeout_s, memory_limit_mb, on_sent)
        t0 = time.time()
        with self._lock:
            token = object()
            self._in_flight[id(token)] = t0
        message = {**job, "client": self.identity, "timeout_s": timeout_s, "memory_limit_mb": memory_limit_mb}
        # The service enforces the limits on the compile; this bounds a service that stopped answering.
        limit = None if timeout_s is None else timeout_s + START_LIMIT_S + 60.0
        try:
            if on_sent is not None:
                on_sent()
            try:
                answer = self._request(message, limit)
            except TimeoutError:
                self._break(f"the compile service {self.service_pid} did not answer within {limit:.0f} s", warn=True)
                raise WorkerFailure("timeout", f"the compile service {self.service_pid} did not answer") from None
        finally:
            with self._lock:
                self._in_flight.pop(id(token), None)
        received = time.time()
        single_flight = answer.get("single_flight") or {}
        if not answer.get("ok"):
            f = answer.get("failure") or {}
            wf = WorkerFailure(
                f.get("kind", "error"),
                f.get("message", "the compile failed in the service"),
                pid=f.get("worker_pid"),
                exit_code=f.get("exit_code"),
                signal=f.get("signal"),
                log_tail=f.get("log_tail"),
                traceback=f.get("traceback"),
                torch_tools=answer.get("torch_tools"),
            )
            wf.single_flight = single_flight  # type: ignore[attr-defined]
            raise wf
        reply = dict(answer["reply"])
        reply["single_flight"] = single_flight
        if single_flight.get("role") == "waited":  # another client's compile: all of it was a wait
            return JobResult(reply, answer["worker_pid"], received - t0, received, received)
        return JobResult(reply, answer["worker_pid"], answer["sent_at"] - t0, answer["sent_at"], received)

    def status(self) -> dict[str, Any] | None:
        """The service's own account (workers, clients, compiles in flight); None without one."""
        self._connected.wait(CONNECT_LIMIT_S)
        if self.broken is not None or self._sock is None:
            return None
        try:
            return self._request({"op": "status"}, _STATUS_S)
        except (TimeoutError, WorkerFailure):
            return None

    def workers(self) -> list[dict[str, Any]]:
        status = self.status()
        shared = [{**w, "service_pid": status["pid"], "shared": True} for w in (status or {}).get("workers", [])]
        own = self._local.workers() if self._local is not None else []
        return shared + own

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.time() + timeout
        while True:
            status = self.status()
            if status is None:
                self.local().wait_ready(None if deadline is None else max(0.0, deadline - time.time()))
                return
            if all(w.get("ready") for w in status.get("workers", [])):
                return
            if deadline is not None and time.time() >= deadline:
                return
            time.sleep(0.2)

    def resize(self, size: int) -> None:
        if size <= self.size:
            return
        self.size = size
        with self._lock:
            local = self._local
        if local is not None:
            local.resize(size)
        if self._connected.is_set() and self._sock is not None:
            try:
                with self._send_lock:
                    protocol.send(self._sock.fileno(), {"op": "resize", "workers": size})
            except OSError:
                pass  # the reader sees the service gone and falls back

    def in_flight(self) -> list[float]:
        with self._lock:
            own = list(self._in_flight.values())
        return own + (self._local.in_flight() if self._local is not None else [])

    def shutdown(self, timeout: float = 3.0) -> None:
        """Leave the service (it stays up for the other clients, then its grace period); stop our own pool."""
        if self.closed or os.getpid() != self.owner_pid:
            return
        self.closed = True
        with self._lock:
            sock, self._sock = self._sock, None
            local = self._local
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        if local is not None:
            local.shutdown(timeout)

    def forget(self) -> None:
        """In a forked child: drop our copy of the connection, leave the service to the parent."""
        self.closed = True
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()  # this process's copy of the descriptor only: the parent's connection stays
            except OSError:
                pass
        if self._local is not None:
            self._local.forget()
