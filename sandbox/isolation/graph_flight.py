"""One compile per graph on a host, decided before AOTAutograd traces it.

The compile service and the Redis lease (``single_flight``) share a compile by its FX graph
cache key, which exists only once AOTAutograd has traced and partitioned the graph: every rank
that reaches a graph at the same moment still traces it, keys it and serializes it before it
learns that another rank is compiling it. That work is each further rank's share of a compile.

Here the first process to reach a dynamo graph takes an exclusive ``flock`` on a file named by
the graph in Inductor's cache folder and compiles as usual; a process that finds the file
locked waits for the lock, then lets AOTAutograd look its cache up, where the first process's
compile now sits, and loads the pair without tracing it. The kernel drops the lock of a holder
that dies, so a waiter never waits for a dead process; one whose wait outlasts the compile
timeout compiles on its own, as it would without this.

The key is the sandbox's guess at AOTAutograd's own (the graph's code, its inputs' and
attributes' metadata, the grad mode, the config patches, the versions): a wrong guess costs a
wait, never a wrong graph, since what a waiter loads is looked up by AOTAutograd's real key, and
a graph AOTAutograd's cache passes by compiles as it does today.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from sandbox.torch_adapter import caches
from sandbox.version import __version__

log = logging.getLogger("sandbox")

FOLDER = "graph-flight"
POLL_S = 0.05
_WHO_KEYS = {"pid": int, "rank": int, "local_rank": int, "host": str}
_MAX_WHO_BYTES = 4096
_held_lock = threading.Lock()
_held_here: set[str] = set()  # keys this process is at the gate for, on any thread


@dataclass
class Flight:
    """What the gate did for one graph: ``held`` (this process compiles it), ``waited`` (another
    process held it; ``holder`` says who, as far as its file says), or ``off`` (no gate)."""

    role: str
    key: str | None = None
    waited_s: float = 0.0
    waited_until: float | None = None
    holder: dict[str, Any] | None = None
    served: list[dict[str, Any]] = field(default_factory=list)  # with held: the processes that waited
    reason: str | None = None


def graph_key(gm: Any, example_inputs: Sequence[Any], patches: Mapping[str, Any]) -> str | None:
    """The dynamo graph's key, or None where it cannot be made (then there is no gate)."""
    try:
        h = hashlib.sha256()
        h.update(f"{__version__}|{torch.__version__}|{torch.is_grad_enabled()}\n".encode())
        h.update(str(gm.code).encode())
        for x in example_inputs:
            h.update(_describe(x).encode())
        for name, t in [*gm.named_parameters(), *gm.named_buffers()]:
            h.update(f"{name}={_describe(t)}".encode())
        h.update(repr(sorted((str(k), repr(v)) for k, v in patches.items())).encode())
        return h.hexdigest()
    except Exception:  # noqa: BLE001 - no key, no gate: the graph compiles as it would without one
        log.debug("sandbox: no key for a graph's flight", exc_info=True)
        return None


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return (
            f"T({tuple(str(d) for d in x.shape)},{tuple(str(s) for s in x.stride())},{x.dtype},"
            f"{x.device},{x.requires_grad})"
        )
    return f"{type(x).__name__}({x!s})"


@contextlib.contextmanager
def gate(key: str | None, who: Mapping[str, Any], timeout_s: float | None) -> Iterator[Flight]:
    """Hold the graph's lock while this process compiles it, or wait until its holder is done.

    Yields the :class:`Flight`. Any failure of the lock itself (a read-only cache folder, a file
    system without locks) leaves the graph to compile without a gate."""
    if key is None:
        yield Flight("off", reason="no key for the graph")
        return
    with _held_lock:
        mine = key in _held_here
        _held_here.add(key)
    if mine:
        # Another thread of this process holds it (compiling with dynamo's compile lock let go):
        # waiting here could wait for a thread that waits for this one's compile lock.
        yield Flight("off", key=key, reason="this process compiles the graph on another thread")
        return
    try:
        with _gate(key, who, timeout_s) as flight:
            yield flight
    finally:
        with _held_lock:
            _held_here.discard(key)


@contextlib.contextmanager
def _gate(key: str, who: Mapping[str, Any], timeout_s: float | None) -> Iterator[Flight]:
    try:
        folder = caches.shared_folder(FOLDER)
        os.makedirs(folder, exist_ok=True)
        fd = os.open(os.path.join(folder, key[:40]), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        yield Flight("off", key=key, reason=f"no lock file: {e.strerror or e}")
        return
    served = os.path.join(folder, key[:40] + ".served")
    served_from = 0  # with held: the waiters' lines before this offset are earlier flights'
    flight = Flight("off", key=key)
    try:
        try:
            if _try_lock(fd):
                _write_who(fd, who)
                flight = Flight("held", key=key)
                served_from = _size(served)
            else:
                _append_who(served, who)
                flight = _wait(fd, key, timeout_s)
        except OSError as e:  # a file system without flock: no gate
            flight = Flight("off", key=key, reason=f"no lock: {e.strerror or e}")
        yield flight
    finally:
        if flight.role == "held":  # who waited for this compile, before they go on
            flight.served = _read_served(served, served_from)
        os.close(fd)  # drops the lock, if this process holds it


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _wait(fd: int, key: str, timeout_s: float | None) -> Flight:
    t0 = time.time()
    deadline = t0 + (timeout_s if timeout_s else 600.0)
    holder = _read_who(fd)
    while True:
        time.sleep(POLL_S)
        if _try_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)  # the others waiting go on as soon as this one does
            t1 = time.time()
            return Flight("waited", key=key, waited_s=round(t1 - t0, 6), waited_until=t1, holder=holder)
        if holder is None:
            holder = _read_who(fd)
        if time.time() > deadline:
            t1 = time.time()
            return Flight(
                "off",
                key=key,
                waited_s=round(t1 - t0, 6),
                waited_until=t1,
                holder=holder,
                reason=f"another process held the graph past {deadline - t0:.0f} s: compiled here",
            )


def _who_json(who: Mapping[str, Any]) -> bytes:
    return json.dumps({k: who.get(k) for k in _WHO_KEYS}).encode()


def _write_who(fd: int, who: Mapping[str, Any]) -> None:
    try:
        data = _who_json(who)
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except (OSError, TypeError, ValueError):
        log.debug("sandbox: could not say who holds a graph", exc_info=True)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _append_who(path: str, who: Mapping[str, Any]) -> None:
    """A waiter says who it is, one line appended at once (O_APPEND), for the holder's report."""
    try:
        line = _who_json(who) + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except (OSError, TypeError, ValueError):
        log.debug("sandbox: could not say who waits for a graph", exc_info=True)


def _read_served(path: str, start: int) -> list[dict[str, Any]]:
    """The waiters that wrote their line since this holder took the lock (untrusted, as below)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            lines = f.read(64 * _MAX_WHO_BYTES).splitlines()
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for line in lines:
        who = _parse_who(line)
        if who is not None and who not in out:
            out.append(who)
    return out


def _read_who(fd: int) -> dict[str, Any] | None:
    """The holder as its file names it: untrusted text, kept only where each field has its type."""
    try:
        return _parse_who(os.pread(fd, _MAX_WHO_BYTES, 0))
    except OSError:
        return None


def _parse_who(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw or b"null")
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    out = {k: value.get(k) if isinstance(value.get(k), t) else None for k, t in _WHO_KEYS.items()}
    if isinstance(out["host"], str):
        out["host"] = out["host"][:255]
    return out if out["pid"] is not None else None


def wanted(service_wanted: bool, background: bool, profile_steps: Any, autograd_cache_on: bool) -> bool:
    """The gate stands where processes share a host's compiles (the compile service is wanted),
    a graph's compile is waited for inside the backend (not async, not two workers side by side),
    and AOTAutograd's cache, where a waiter finds the pair, is looked up (not with profile_steps)."""
    return service_wanted and not background and not profile_steps and autograd_cache_on


def served_entry(flight: Flight, current: dict[str, Any] | None, who: Mapping[str, Any]) -> dict[str, Any] | None:
    """The compiling process's ``single_flight`` once its gate is open: the processes that waited
    at the gate join its ``served`` list (a compile shared only through the gate gets an entry of
    its own). None where nobody waited."""
    if flight.role != "held" or not flight.served:
        return None
    out = (
        dict(current)
        if current
        else {"role": "compiled", "via": "cache_dir", "key": flight.key, "compiled_by": dict(who)}
    )
    out["served"] = [*(out.get("served") or []), *flight.served]
    return out


def single_flight_entry(flight: Flight, first: bool) -> dict[str, Any] | None:
    """The report's ``single_flight`` for a graph this process loaded after waiting at the gate
    (docs/REPORT.md): the pair waited once, so the wait goes to its first graph."""
    if flight.role != "waited":
        return None
    return {
        "role": "waited",
        "via": "cache_dir",
        "key": flight.key,
        "compiled_by": flight.holder,
        "waited_s": flight.waited_s if first else 0.0,
    }
