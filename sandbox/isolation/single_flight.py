"""One compile per graph across hosts, through the Redis that Inductor's remote caches use.

On one host the compile service (``service.py``) makes a graph compile once for every rank
that asks for it at the same moment. Across hosts a lease in Redis does: the process that
sets ``sandbox:single-flight:v1:<version>:lease:<FX graph cache key>`` (``SET NX PX``)
compiles, renews the lease while it does (every third of ``SANDBOX_LEASE_S``), and then
publishes the worker's reply under the matching ``result:`` key for a while; the others poll
for that reply and load it as if their own worker had sent it. A holder that dies stops
renewing: its lease expires within ``SANDBOX_LEASE_S`` and a waiter takes over. A holder whose
compile fails releases the lease without a result: the waiters then compile on their own.

Inductor's remote FX graph cache keeps pickled compiled graphs in the same Redis and loads them;
the published replies are pickles of the same kind, so trusting them is trusting that cache.
Also builds the report's ``single_flight`` entry (docs/REPORT.md).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from sandbox import env as sandbox_env
from sandbox.isolation.pool import JobResult, WorkerFailure
from sandbox.torch_adapter.remote_cache import remote_cache_server as server
from sandbox.version import __version__

log = logging.getLogger("sandbox")

PREFIX = f"sandbox:single-flight:v1:{__version__}:"
RESULT_TTL_S = 300.0  # waiters pick the reply up at once; later processes hit Inductor's caches
MAX_RESULT_BYTES = 256 * 2**20
POLL_S = 0.2

_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def wanted(remote_fx_cache_on: bool) -> bool:
    """SANDBOX_LEASE: ``on``; ``auto`` (default) while Inductor's FX graph remote cache is on."""
    choice = sandbox_env.get("SANDBOX_LEASE").lower()
    return choice == "on" or (choice == "auto" and remote_fx_cache_on)


def lease_seconds() -> float:
    try:
        return max(1.0, float(sandbox_env.get("SANDBOX_LEASE_S")))
    except ValueError:
        return 30.0


class Leases:
    """This process's side of the leases: one Redis connection, made at the first graph that needs it."""

    def __init__(self, who: dict[str, Any], lease_s: float | None = None) -> None:
        self.who = who
        self.lease_s = lease_seconds() if lease_s is None else lease_s
        self._client: Any = None
        self._lock = threading.Lock()

    def _redis(self) -> Any:
        with self._lock:
            if self._client is None:
                import redis  # the optional package Inductor's remote caches use: only when leases are on

                kw = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0}
                url = os.environ.get("TORCHINDUCTOR_REDIS_URL")
                self._client = (
                    redis.Redis.from_url(url, **kw)
                    if url
                    else redis.Redis(
                        host=os.environ.get("TORCHINDUCTOR_REDIS_HOST", "localhost"),
                        port=int(os.environ.get("TORCHINDUCTOR_REDIS_PORT", "6379")),
                        **kw,
                    )
                )
            return self._client

    def run(self, key: str, compile: Callable[[], JobResult], max_wait_s: float | None) -> JobResult:
        """``compile()`` once across the hosts sharing the Redis: here while holding the lease,
        or the holder's published reply. The reply's ``single_flight["lease"]`` says which."""
        t0 = time.time()
        lease_key, result_key, served_key = (PREFIX + part + key for part in ("lease:", "result:", "served:"))
        holder_id = json.dumps({**self.who, "token": uuid.uuid4().hex}, sort_keys=True)
        ms = int(self.lease_s * 1000)
        holder: dict[str, Any] | None = None
        try:
            r = self._redis()
            while True:
                raw = r.get(result_key)
                if raw is not None:
                    return self._served(raw, t0, holder)
                if r.set(lease_key, holder_id, nx=True, px=ms):
                    break
                current = r.get(lease_key)
                if holder is None and current is not None:
                    holder = _parse(current)
                    r.sadd(served_key, json.dumps(self.who, sort_keys=True))
                    r.pexpire(served_key, int(RESULT_TTL_S * 1000))
                if max_wait_s is not None and time.time() - t0 > max_wait_s:
                    result = compile()
                    return _with_lease(result, {"role": "alone", "reason": "waited past the time limit", **_since(t0)})
                time.sleep(POLL_S)
        except Exception as e:  # noqa: BLE001 - Redis down or odd: compile here, as without leases
            if isinstance(e, WorkerFailure):
                raise
            reason = f"Redis at {server()}: {type(e).__name__}: {e}"[:300]
            log.debug("sandbox: no compile lease: %s", reason)
            return _with_lease(compile(), {"role": "alone", "reason": reason})
        return self._hold(r, key, (lease_key, result_key, served_key), holder_id, compile, t0, holder)

    def _hold(
        self,
        r: Any,
        key: str,
        keys: tuple[str, str, str],
        holder_id: str,
        compile: Callable[[], JobResult],
        t0: float,
        previous: dict[str, Any] | None,
    ) -> JobResult:
        lease_key, result_key, served_key = keys
        ms = int(self.lease_s * 1000)
        acquired = time.time()
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease_s / 3):
                try:
                    r.eval(_RENEW, 1, lease_key, holder_id, ms)
                except Exception:  # noqa: BLE001 - a missed renewal may let another host take over; no harm
                    log.debug("sandbox: renewing the compile lease failed", exc_info=True)

        threading.Thread(target=renew, name="sandbox-lease-renewal", daemon=True).start()
        lease: dict[str, Any] = {"role": "held", "server": server(), "lease_s": self.lease_s}
        if previous is not None:  # the holder we waited for went away: its lease expired
            lease.update(role="took_over", previous_holder=previous, waited_s=round(acquired - t0, 6))
            lease["took_over_at"] = acquired
        try:
            result = compile()
        except BaseException:
            stop.set()
            _quietly(r.eval, _RELEASE, 1, lease_key, holder_id)
            raise
        stop.set()
        published = self._publish(r, result_key, result)
        _quietly(r.eval, _RELEASE, 1, lease_key, holder_id)
        served = [_parse(m) for m in (_quietly(r.smembers, served_key) or [])]
        lease.update(published=published, served=[s for s in served if s])
        return _with_lease(result, lease)

    def _publish(self, r: Any, result_key: str, result: JobResult) -> bool:
        reply = {k: v for k, v in result.reply.items() if k not in ("torch_tools", "single_flight")}
        data = pickle.dumps({"reply": reply, "worker_pid": result.worker_pid, "holder": self.who}, protocol=5)
        if len(data) > MAX_RESULT_BYTES:
            return False
        return bool(_quietly(r.set, result_key, data, px=int(RESULT_TTL_S * 1000)))

    def _served(self, raw: bytes, t0: float, holder: dict[str, Any] | None) -> JobResult:
        entry = pickle.loads(raw)
        now = time.time()
        reply = dict(entry["reply"])
        compiled_by = dict(entry.get("holder") or holder or {})
        compiled_by["worker_pid"] = entry.get("worker_pid")
        reply["single_flight"] = {
            "role": "waited",
            "via": "redis",
            "compiled_by": compiled_by,
            "served": [],
            "waited_s": round(now - t0, 6),
        }
        # The worker that compiled it runs on another host: no worker of this one served the graph.
        return JobResult(reply, None, now - t0, now, now)  # type: ignore[arg-type]


def _since(t0: float) -> dict[str, float]:
    return {"waited_s": round(time.time() - t0, 6)}


def _parse(raw: Any) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(value, dict):
        return None
    value.pop("token", None)
    return value


def _quietly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception:  # noqa: BLE001 - best effort: the lease expires on its own
        log.debug("sandbox: a compile lease operation failed", exc_info=True)
        return None


def _with_lease(result: JobResult, lease: dict[str, Any]) -> JobResult:
    sf = dict(result.reply.get("single_flight") or {})
    sf["lease"] = lease
    result.reply["single_flight"] = sf
    return result


def describe(
    flight: dict[str, Any], info: dict[str, Any] | None, broken: str | None, who: dict[str, Any]
) -> dict[str, Any] | None:
    """The report's ``single_flight`` entry (docs/REPORT.md) from what the service or the lease
    said about this graph (``info``), what the job knew (``flight``: its key, why it has none,
    what makes it differ by rank), why the service is not in use (``broken``) and who this
    process is. None where no sharing was in play."""
    if not info and broken is None:
        return None
    out = dict(info or {})
    lease = out.get("lease") or {}
    if not out.get("role"):  # no service answered: this process's own workers compiled it
        out["role"] = "compiled" if lease.get("role") in ("held", "took_over") else "alone"
        out["via"] = "redis" if out["role"] == "compiled" else None
    if out["role"] != "waited":
        out.setdefault("compiled_by", who)
        if lease.get("role") == "took_over":
            out["waited_s"] = lease.get("waited_s")
        if lease.get("served"):
            out["served"] = [*(out.get("served") or []), *lease["served"]]
    out["key"] = flight.get("key")
    if flight.get("key") is None:
        out["role"] = "alone"
        out["reason"] = flight.get("why_not") or "no FX graph cache key"
    elif out["role"] == "alone":
        out["reason"] = lease.get("reason") or broken or "compiled without a service or a lease"
    if broken is not None:
        out["service_error"] = broken
    if flight.get("rank_specific"):
        out["rank_specific"] = flight["rank_specific"]
    return out
