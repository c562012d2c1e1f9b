"""One compile service per host: ``python -m sandbox.isolation.service``.

The ranks of a job on one host (and, opted in, several sandboxed processes of one user) share
one pool of workers, sized to the host's cores, instead of each starting its own. The first
client that needs the service starts it (``service_client.py``); it listens on a Unix socket in
a private folder, named by the hash of everything the clients must share (``service_key.py``),
speaks the workers' frames (``protocol.py``) to its clients, and exits ``SANDBOX_SERVICE_GRACE_S``
after its last client left.

Single-flight: a job whose FX graph cache key (with the same cache folders) is already being
compiled for another client waits for that compile and gets the same reply; a compile that
just finished answers, for a short while, clients that arrive before their cache has the entry.
Each answer says who compiled the graph and whom it served. Imports no torch: the service holds
the pool, its workers compile (docs/decisions/one-compile-service-per-host.md).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict
from typing import Any

from sandbox.isolation import protocol, service_key, sizing
from sandbox.isolation.pool import JobResult, Pool, WorkerFailure

# A finished compile answers clients that arrive within this many seconds (their FX graph
# cache entry is written by the client that compiled, after its load), up to this many bytes.
RECENT_S = 60.0
RECENT_MAX_BYTES = 256 * 2**20
_POLL_S = 0.5


def log(message: str) -> None:
    print(f"[sandbox service {os.getpid()}] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


class _Client:
    """One connection; replies go out under a lock (several jobs of one client answer at once)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.fd = conn.fileno()
        self.info: dict[str, Any] = {}
        self.welcomed = False
        self.clock: int | None = None
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> bool:
        try:
            with self._lock:
                protocol.send(self.fd, message)
            return True
        except OSError:
            return False  # the client went away: its answer is not needed any more


class _Flight:
    """One compile and everyone waiting for it."""

    def __init__(self, key: tuple[str, str] | None, compiler: dict[str, Any]) -> None:
        self.key = key
        self.compiler = compiler
        self.waiters: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.result: JobResult | None = None
        self.failure: WorkerFailure | None = None
        self.ended = 0.0
        self.size = 0


def _who(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info.get(k) for k in ("pid", "rank", "local_rank", "host")}


class Service:
    def __init__(
        self,
        listener: socket.socket,
        files: dict[str, str],
        compat: dict[str, Any],
        grace_s: float,
        workers: int,
        env: dict[str, str],
    ) -> None:
        self.listener = listener
        self.socket_ino = os.stat(files["socket"]).st_ino
        self.files = files
        self.compat = compat
        self.grace_s = grace_s
        self.env = env
        self.cores = sizing.usable_cores()
        self.started = time.time()
        worker_env = {**env, **sizing.service_worker_env(workers, env, self.cores)}
        self.pool = Pool(workers, worker_env, started_by="compile service")
        self.pool.compile_threads = sizing.job_threads(workers, env, self.cores, shared=True)
        self.cap = workers  # grown by clients' hellos: their ranks on this host x their workers
        self._lock = threading.Lock()
        self._connections = 0
        self._last_left = time.time()
        self._clients: list[_Client] = []
        self._flights: dict[tuple[str, str], _Flight] = {}
        self._recent: list[_Flight] = []
        self._busy = 0
        self._clock = 0
        self.compiled = 0
        self.served = 0

    # -- the pool's size ------------------------------------------------------------------------
    def _grow(self, size: int) -> None:
        """Grow the pool to ``size`` (never shrinks); every worker's share of the cores follows."""
        if size <= self.pool.size:
            return
        self.pool.env = {**self.env, **sizing.service_worker_env(size, self.env, self.cores)}
        self.pool.compile_threads = sizing.job_threads(size, self.env, self.cores, shared=True)
        self.pool.resize(size)
        log(f"{size} worker(s) now, {self.pool.compile_threads or 'the user-set'} compile threads each")

    # -- connections ----------------------------------------------------------------------------
    def serve(self) -> None:
        self.listener.settimeout(_POLL_S)
        while True:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                if self._idle_past_grace() and self._close_listener():
                    return
                continue
            self._accepted(conn)

    def _accepted(self, conn: socket.socket) -> None:
        conn.setblocking(True)
        with self._lock:
            self._connections += 1
        threading.Thread(target=self._handle, args=(conn,), name="sandbox-service-client", daemon=True).start()

    def _idle_past_grace(self) -> bool:
        with self._lock:
            return self._connections == 0 and time.time() - self._last_left >= self.grace_s

    def _close_listener(self) -> bool:
        """Stop listening, under the start lock so that no client starts a new service meanwhile
        or connects to this one after it decided to go; False if a client is on its way."""
        with open(self.files["lock"], "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.listener.setblocking(False)
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                conn = None
            if conn is not None:  # a connection waiting in the backlog: a client, stay
                self.listener.settimeout(_POLL_S)
                self._accepted(conn)
                return False
            try:  # still ours (a service that replaced this one owns the path now otherwise)
                if os.stat(self.files["socket"]).st_ino == self.socket_ino:
                    os.unlink(self.files["socket"])
            except OSError:
                pass
            self.listener.close()
        return True

    def _handle(self, conn: socket.socket) -> None:
        client = _Client(conn)
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", creds)
            if uid != os.getuid():  # the folder is private already; a second lock on the door
                return
            while True:
                msg = protocol.recv(client.fd)
                op = msg.get("op")
                if op == "hello":
                    if not self._hello(client, msg):
                        return
                elif op == "compile" and client.welcomed:
                    threading.Thread(target=self._compile, args=(client, msg), daemon=True).start()
                elif op == "status":
                    client.send({"op": "status", "seq": msg.get("seq"), **self.status()})
                elif op == "resize" and client.welcomed:
                    workers = max(1, int(msg.get("workers") or 1))
                    with self._lock:
                        self.cap = max(self.cap, workers)
                    self._grow(workers)
                else:
                    return
        except (protocol.ChannelClosed, OSError, EOFError, ValueError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
                self._connections -= 1
                if self._connections == 0:
                    self._last_left = time.time()
            if client.welcomed:
                log(f"client {client.info.get('pid')} (rank {client.info.get('rank')}) left")

    def _hello(self, client: _Client, msg: dict[str, Any]) -> bool:
        if msg.get("compat") != self.compat:
            mine, theirs = self.compat.get("versions"), (msg.get("compat") or {}).get("versions")
            what = "versions" if mine != theirs else "environment or user"
            client.send({"op": "refused", "reason": f"the compile service {os.getpid()} runs with other {what}"})
            log(f"refused client {(msg.get('client') or {}).get('pid')}: other {what}")
            return False
        client.info = dict(msg.get("client") or {})
        client.welcomed = True
        workers = max(1, int(msg.get("workers") or 1))
        with self._lock:
            self._clients.append(client)
            # Ranks whose graphs differ (each on its own GPU) compile side by side: the pool may
            # grow to as many workers as each rank would have had of its own.
            self.cap = max(self.cap, workers * max(1, int(msg.get("ranks_on_host") or 1)))
        self._grow(workers)
        client.send(
            {
                "op": "welcome",
                "pid": os.getpid(),
                "workers": self.pool.size,
                "compile_threads": self.pool.compile_threads,
            }
        )
        log(f"client {client.info.get('pid')} (rank {client.info.get('rank')}) joined")
        return True

    # -- one compile ----------------------------------------------------------------------------
    def _clock_for(self, client: _Client, value: int) -> int:
        """One cache clock for the workers: it ticks when any client's own clock ticked (that
        client cleared Inductor's in-memory caches), not when jobs of two clients alternate."""
        with self._lock:
            if client.clock is not None and client.clock != value:
                self._clock += 1
            client.clock = value
            return self._clock

    def _join(self, key: tuple[str, str] | None, who: dict[str, Any]) -> tuple[_Flight, str]:
        with self._lock:
            now = time.time()
            self._recent = [f for f in self._recent if now - f.ended < RECENT_S]
            if key is not None:
                flight = self._flights.get(key) or next((f for f in self._recent if f.key == key), None)
                if flight is not None:
                    flight.waiters.append(who)
                    return flight, "waited"
            flight = _Flight(key, who)
            if key is not None:
                self._flights[key] = flight
            self._busy += 1
            grow = self._busy > self.pool.size and self.pool.size < self.cap
        if grow:
            self._grow(self.pool.size + 1)
        return flight, "compiled"

    def _compile(self, client: _Client, msg: dict[str, Any]) -> None:
        t0 = time.time()
        who = _who(client.info)
        flight_key = (msg.get("flight") or {}).get("key")
        key = (flight_key, json.dumps(sorted((msg.get("env") or {}).items()))) if flight_key else None
        flight, role = self._join(key, who)
        if role == "compiled":
            job = {k: v for k, v in msg.items() if k not in ("seq", "client", "flight", "timeout_s", "memory_limit_mb")}
            job["cache_clock"] = self._clock_for(client, msg.get("cache_clock", 0))
            try:
                flight.result = self.pool.run(job, msg.get("timeout_s"), msg.get("memory_limit_mb"))
                flight.size = len(flight.result.reply.get("output") or b"")
            except WorkerFailure as wf:
                flight.failure = wf
            except Exception as e:  # noqa: BLE001 - the client gets a failure, the service goes on
                flight.failure = WorkerFailure("error", f"compile service: {type(e).__name__}: {e}")
            with self._lock:
                self._busy -= 1
                flight.ended = time.time()
                if key is not None:
                    self._flights.pop(key, None)
                    if flight.result is not None:
                        self._recent.append(flight)
                        while sum(f.size for f in self._recent) > RECENT_MAX_BYTES and self._recent:
                            self._recent.pop(0)
                self.compiled += 1
            flight.done.set()
        else:
            flight.done.wait()
            with self._lock:
                self.served += 1
        client.send(self._answer(flight, role, msg.get("seq"), t0))

    def _answer(self, flight: _Flight, role: str, seq: Any, t0: float) -> dict[str, Any]:
        with self._lock:
            served = list(flight.waiters)
        single_flight: dict[str, Any] = {
            "role": role,
            "via": "service",
            "key": flight.key[0] if flight.key else None,
            "service_pid": os.getpid(),
            "compiled_by": flight.compiler,
            "served": served if role == "compiled" else [],
        }
        if role == "waited":
            single_flight["waited_s"] = round(time.time() - t0, 6)
        out: dict[str, Any] = {"op": "result", "seq": seq, "single_flight": single_flight}
        if flight.result is not None:
            r = flight.result
            reply = r.reply if role == "compiled" else {k: v for k, v in r.reply.items() if k != "torch_tools"}
            out.update(
                ok=True,
                reply=reply,
                worker_pid=r.worker_pid,
                waited_s=r.waited_s,
                sent_at=r.sent_at,
                received_at=r.received_at,
            )
        else:
            wf = flight.failure or WorkerFailure("error", "compile service: the compile ended without a result")
            out.update(ok=False, failure=asdict(wf.failure), torch_tools=wf.torch_tools if role == "compiled" else None)
        return out

    # -- what clients and tests may ask ---------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            clients = [dict(c.info) for c in self._clients]
            flights = [
                {"key": k[0], "compiler": f.compiler, "waiters": len(f.waiters)} for k, f in self._flights.items()
            ]
            connections = self._connections
        return {
            "pid": os.getpid(),
            "started": self.started,
            "connections": connections,
            "clients": clients,
            "flights": flights,
            "workers": self.pool.workers(),
            "size": self.pool.size,
            "cap": self.cap,
            "compile_threads": self.pool.compile_threads,
            "restarts": self.pool.restarts,
            "in_flight": self.pool.in_flight(),
            "compiled": self.compiled,
            "served": self.served,
        }


def listen(files: dict[str, str]) -> socket.socket:
    """Bind under a temporary name, listen, then move it into place: a client that finds the
    socket can connect at once."""
    tmp = f"{files['socket']}.{os.getpid()}"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(tmp)
    os.chmod(tmp, 0o600)
    listener.listen(64)
    os.replace(tmp, files["socket"])
    return listener


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.isolation.service")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--grace-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    # The compatibility the starting client computed, on stdin (the environment's values
    # stay out of the process list); the versions part is checked against this interpreter's own.
    compat = json.loads(sys.stdin.read() or "{}")
    folder = os.path.dirname(args.socket)
    files = service_key.paths(folder, compat)
    if files["socket"] != args.socket or compat.get("versions") != service_key.versions():
        log("started with a compatibility that is not this interpreter's; not serving")
        return 3
    listener = listen(files)
    with open(os.open(files["info"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump({"pid": os.getpid(), "started": time.time(), "socket": files["socket"]}, f)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    service = Service(listener, files, compat, args.grace_s, max(1, args.workers), dict(os.environ))
    log(f"serving on {files['socket']} with {args.workers} worker(s)")
    try:
        service.serve()
        log(f"no client for {args.grace_s:g} s: exiting ({service.compiled} compiled, {service.served} served)")
    finally:
        service.pool.shutdown()
        try:  # the description, unless a service that replaced this one wrote its own
            with open(files["info"]) as f:
                if json.load(f).get("pid") == os.getpid():
                    os.unlink(files["info"])
        except (OSError, ValueError):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
