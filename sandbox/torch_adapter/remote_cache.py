"""Inductor's remote caches (Redis): every get and put, recorded per thread.

Private symbols touched here: torch._inductor.remote_cache: RedisRemoteCache (the base of
RemoteFxGraphCache and RemoteAOTAutogradCache) and its ``_get`` / ``_put`` (RemoteCache.get/put call
them on the instance); RedisRemoteCacheBackend._redis, which Inductor sets to None when a connection
fails and which then answers every get with None - a miss, silently; the module's ``redis`` (None
when the package is missing: create_cache then logs a warning and there is no remote cache at all).
The entries FxGraphCache._save_graph and AOTAutogradCache.save write carry ``time_taken_ms``, the
compile time a hit saves. torch._inductor.config.fx_graph_remote_cache,
torch._functorch.config.enable_remote_autograd_cache (TORCHINDUCTOR_FX_GRAPH_REMOTE_CACHE,
TORCHINDUCTOR_AUTOGRAD_REMOTE_CACHE).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger("sandbox")

_patch_lock = threading.Lock()


REMOTE_CACHES = {"RemoteFxGraphCache": "fx_graph", "RemoteAOTAutogradCache": "aot_autograd"}
_remote_events = threading.local()
_MAX_PENDING_REMOTE_EVENTS = 256


def _pending_remote_events() -> list[dict[str, Any]]:
    events = getattr(_remote_events, "events", None)
    if events is None:
        events = _remote_events.events = []
    return events


def remote_cache_server() -> str:
    """Where Inductor's Redis caches connect, as Inductor reads it: TORCHINDUCTOR_REDIS_URL
    (without its password), else TORCHINDUCTOR_REDIS_HOST:TORCHINDUCTOR_REDIS_PORT."""
    url = os.environ.get("TORCHINDUCTOR_REDIS_URL")
    if url:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return parts._replace(netloc=netloc).geturl()
    host = os.environ.get("TORCHINDUCTOR_REDIS_HOST", "localhost")
    return f"{host}:{os.environ.get('TORCHINDUCTOR_REDIS_PORT', '6379')}"


def _connection_lost(cache: Any) -> bool:
    backend = getattr(cache, "backend", None)
    return backend is not None and hasattr(backend, "_redis") and backend._redis is None


def _remote_event(cache: Any, op: str, t0: float, result: str, **extra: Any) -> None:
    event = {
        "cache": REMOTE_CACHES.get(type(cache).__name__, type(cache).__name__),
        "op": op,
        "result": result,
        "seconds": time.time() - t0,
        "server": remote_cache_server(),
    }
    event.update(extra)
    events = _pending_remote_events()
    events.append(event)
    if len(events) > _MAX_PENDING_REMOTE_EVENTS:  # lookups nobody takes (another backend's compiles)
        del events[: len(events) - _MAX_PENDING_REMOTE_EVENTS]


def install_remote_cache_tap() -> None:
    """Wrap ``RedisRemoteCache._get`` / ``_put`` once, so that each remote get and put of
    this thread is recorded: hit (with the entry's compile time), miss, unavailable (the
    connection failed: Inductor then reports a miss) or error. Taken by
    :func:`take_remote_cache_events`."""
    from torch._inductor import remote_cache

    cls = remote_cache.RedisRemoteCache
    with _patch_lock:
        if getattr(cls._get, "_sandbox_tap", False):
            return
        original_get, original_put = cls._get, cls._put

        def _get(self: Any, key: str, sample: Any) -> Any:
            t0 = time.time()
            try:
                value = original_get(self, key, sample)
            except Exception as e:
                _remote_event(self, "get", t0, "error", message=f"{type(e).__name__}: {e}"[:500])
                raise
            if value is not None:
                taken = value.get("time_taken_ms") if isinstance(value, dict) else None
                _remote_event(self, "get", t0, "hit", time_taken_ms=taken if isinstance(taken, (int, float)) else None)
            elif _connection_lost(self):
                _remote_event(self, "get", t0, "unavailable")
            else:
                _remote_event(self, "get", t0, "miss")
            return value

        def _put(self: Any, key: str, value: Any, sample: Any) -> None:
            t0 = time.time()
            try:
                original_put(self, key, value, sample)
            except Exception as e:
                _remote_event(self, "put", t0, "error", message=f"{type(e).__name__}: {e}"[:500])
                raise
            _remote_event(self, "put", t0, "unavailable" if _connection_lost(self) else "ok")

        _get._sandbox_tap = True  # type: ignore[attr-defined]
        cls._get, cls._put = _get, _put  # type: ignore[method-assign]


def take_remote_cache_events() -> list[dict[str, Any]]:
    """This thread's remote cache gets and puts since the last call (oldest first):
    ``{"cache", "op", "result", "seconds", "server", "time_taken_ms"?, "message"?}``."""
    install_remote_cache_tap()
    events = _pending_remote_events()
    taken = list(events)
    events.clear()
    return taken


def remote_caches_missing() -> dict[str, str]:
    """Remote caches that are turned on but cannot exist, and why: ``{cache: reason}``
    (Inductor only logs a warning and compiles without them)."""
    from torch._functorch import config as functorch_config
    from torch._inductor import config, remote_cache

    if remote_cache.redis is not None:
        return {}
    on = {"fx_graph": config.fx_graph_remote_cache, "aot_autograd": functorch_config.enable_remote_autograd_cache}
    return {cache: "the redis package is not installed: pip install redis" for cache, enabled in on.items() if enabled}


def fx_graph_remote_cache_on() -> bool:
    """Whether Inductor's FX graph remote cache is on for the compile in progress (its config,
    patches included)."""
    from torch._inductor import config

    return bool(config.fx_graph_remote_cache)
