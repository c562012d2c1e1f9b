"""Tests of Inductor's remote caches (Redis) (``sandbox/torch_adapter/remote_cache.py``):
the server named, the tap on lookups (against a real redis-server), a missing redis package.

One test per touch point of a private PyTorch API, each naming the symbols it relies on.
Written against torch 2.13.0: when a torch release moves or changes one of these symbols,
the test for it fails here, by name, instead of deep inside a user's compile."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sandbox.torch_adapter import remote_cache


def test_remote_cache_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.13.0: ``RedisRemoteCacheBackend`` connects with TORCHINDUCTOR_REDIS_URL, else
    TORCHINDUCTOR_REDIS_HOST / _PORT; the sandbox names the same server, without a password."""
    import inspect

    from torch._inductor.remote_cache import RedisRemoteCacheBackend

    source = inspect.getsource(RedisRemoteCacheBackend.__init__)
    assert all(
        name in source for name in ("TORCHINDUCTOR_REDIS_URL", "TORCHINDUCTOR_REDIS_HOST", "TORCHINDUCTOR_REDIS_PORT")
    )
    monkeypatch.setenv("TORCHINDUCTOR_REDIS_URL", "redis://cache:s3cret@10.0.0.5:6380/2")
    assert remote_cache.remote_cache_server() == "redis://10.0.0.5:6380/2"
    monkeypatch.delenv("TORCHINDUCTOR_REDIS_URL")
    monkeypatch.setenv("TORCHINDUCTOR_REDIS_HOST", "redis.internal")
    monkeypatch.setenv("TORCHINDUCTOR_REDIS_PORT", "7000")
    assert remote_cache.remote_cache_server() == "redis.internal:7000"


def test_remote_cache_tap_against_a_real_redis(redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.13.0: ``RedisRemoteCache._get`` / ``_put`` (called by ``RemoteCache.get`` / ``put``)
    are wrapped once; a hit carries the entry's ``time_taken_ms``; a failed connection sets
    ``RedisRemoteCacheBackend._redis`` to None and Inductor answers a miss, which the tap
    records as ``unavailable``. Against a real redis-server, keys as Inductor writes them."""
    from torch._inductor.remote_cache import RemoteAOTAutogradCache, RemoteFxGraphCache

    monkeypatch.setenv("TORCHINDUCTOR_REDIS_URL", redis_server.url)
    remote_cache.install_remote_cache_tap()
    remote_cache.install_remote_cache_tap()  # once only
    remote_cache.take_remote_cache_events()
    fx = RemoteFxGraphCache("fx-graph-v1")
    assert fx.get("sandbox-compat-key") is None
    fx.put("sandbox-compat-key", {"data": "eA==", "time_taken_ms": 1234})
    assert fx.get("sandbox-compat-key")["time_taken_ms"] == 1234
    assert RemoteAOTAutogradCache("autograd-experimental").get("sandbox-compat-key") is None
    taken = remote_cache.take_remote_cache_events()
    assert [(e["cache"], e["op"], e["result"]) for e in taken] == [
        ("fx_graph", "get", "miss"),
        ("fx_graph", "put", "ok"),
        ("fx_graph", "get", "hit"),
        ("aot_autograd", "get", "miss"),
    ]
    assert taken[2]["time_taken_ms"] == 1234 and all(e["server"] == redis_server.url for e in taken)
    assert redis_server.client().get("pt2:fx-graph-v1::sandbox-compat-key:c1") is not None
    assert remote_cache.take_remote_cache_events() == []

    # Another thread's lookups are its own.
    threading.Thread(target=lambda: fx.get("sandbox-compat-key")).start()
    time.sleep(0.5)
    assert remote_cache.take_remote_cache_events() == []

    redis_server.stop()
    down = RemoteFxGraphCache("fx-graph-v1")
    assert down.get("sandbox-compat-key") is None  # Inductor itself: a silent miss
    assert down.backend._redis is None
    down.put("sandbox-compat-key", {"data": "eA==", "time_taken_ms": 1})
    taken = remote_cache.take_remote_cache_events()
    assert [(e["op"], e["result"]) for e in taken] == [("get", "unavailable"), ("put", "unavailable")]


def test_remote_caches_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.13.0: ``torch._inductor.remote_cache.redis`` is None when the package is missing
    (``create_cache`` then returns no cache); ``torch._inductor.config.fx_graph_remote_cache`` /
    ``torch._functorch.config.enable_remote_autograd_cache`` turn the caches on. The missing package is simulated by
    setting that module global to None: the package cannot be uninstalled under a running test."""
    from torch._functorch import config as functorch_config
    from torch._inductor import config
    from torch._inductor import remote_cache as inductor_remote_cache

    with config.patch(fx_graph_remote_cache=True), functorch_config.patch(enable_remote_autograd_cache=False):
        assert remote_cache.remote_caches_missing() == {}
        monkeypatch.setattr(inductor_remote_cache, "redis", None)
        missing = remote_cache.remote_caches_missing()
        assert set(missing) == {"fx_graph"} and "pip install redis" in missing["fx_graph"]
        assert (
            inductor_remote_cache.create_cache("fx-graph-v1", False, "FbRemoteFxGraphCache", "RemoteFxGraphCache")
            is None
        )


def test_fx_graph_remote_cache_on() -> None:
    """torch 2.13.0: ``torch._inductor.config.fx_graph_remote_cache`` (None by default, off)
    decides whether a graph's compile takes a lease across hosts (SANDBOX_LEASE=auto)."""
    from torch._inductor import config

    with config.patch(fx_graph_remote_cache=None):
        assert remote_cache.fx_graph_remote_cache_on() is False
    with config.patch(fx_graph_remote_cache=True):
        assert remote_cache.fx_graph_remote_cache_on() is True
