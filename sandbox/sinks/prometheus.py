"""Prometheus metrics from reports: what a platform team scrapes and alerts on.

Every metric is derived from the reports (plus two live values of the worker pool, read
at scrape time through the function the runtime hands in: compiles in flight, worker
restarts). Names follow Prometheus
conventions (base units, ``_seconds``, ``_total``) and every label has a bounded set of
values: no graph, report or run ids. ``docs/REPORT.md`` documents the report fields they
come from; the README lists the metrics.

Exposition is opt-in: an HTTP endpoint (``metrics_port`` / ``SANDBOX_METRICS_PORT``, bound
to 127.0.0.1 unless ``SANDBOX_METRICS_ADDR`` says otherwise; local rank N serves on the
base port + N), a registry the application passes (``sandbox.enable_metrics(registry)``),
and a push to a Pushgateway at exit (``SANDBOX_PUSHGATEWAY``) for short-lived jobs. A port
already taken or a Pushgateway that is down costs one warning, never an exception.

Cost per report: a few dict lookups and ``observe``/``inc`` calls on pre-bound label
children (docs/decisions/prometheus-prebound-children.md).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any, NamedTuple

from sandbox.record import stages
from sandbox.record.report import CACHE_HIT, FAILED, FAILURE_KINDS, ISOLATED, CompileReport
from sandbox.sinks.base import Sink
from sandbox.version import __version__

log = logging.getLogger("sandbox")

# 10 ms .. 30 min: a cache hit takes milliseconds, a cold compile of a large model minutes,
# and the default timeout_s is 1800 s.
COMPILE_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
)
# Stages and the wait for a worker also take a millisecond or less (send, transfer); fewer
# buckets, as there is a series per stage.
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)

GRAPH_KINDS = ("forward", "backward", "inference")
OUTCOMES = ("isolated", "cache_hit", "in_process", "failed")
DEVICE_TYPES = ("cpu", "cuda", "xpu", "mps", "hpu", "mtia")
KERNEL_KINDS = ("cpp", "triton", "template", "extern")
CACHE_RESULTS = {
    "fx_graph": ("hit", "miss", "bypass"),
    "aot_autograd": ("hit", "miss", "bypass", "guard_miss"),
    "async_compile": ("hit", "miss"),
    # Inductor's remote (Redis) caches; "unavailable": the server could not be reached
    "fx_graph_remote": ("hit", "miss", "unavailable", "error"),
    "aot_autograd_remote": ("hit", "miss", "unavailable", "error"),
}
REMOTE_CACHES = ("fx_graph_remote", "aot_autograd_remote")
# A report's single_flight (docs/REPORT.md): its role, and through what the compile was shared.
ROLES = ("compiled", "waited", "alone")
VIAS = ("service", "redis", "cache_dir")
# The fixed set of stage names with a series of their own: the sandbox's own stages and
# Inductor's main phases. Any other stage name (Inductor has dozens, and they change
# between releases) is not observed, so the label set stays bounded.
STAGES = (
    *stages.OWN,
    # Inductor's main phases (in the worker, or in the parent for a graph compiled there)
    "inductor_compile",
    "fx_codegen_and_compile",
    "_recursive_post_grad_passes",
    "GraphLowering.run",
    "Scheduler.__init__",
    "Scheduler.codegen",
    "GraphLowering.codegen",
    "GraphLowering.compile_to_fn",
    "compile_file",
    "async_compile.wait",
    "PyCodeCache.load_by_key_path",
)

_OTHER = "other"
SHARED = [(role, via) for role in (*ROLES, _OTHER) for via in (*VIAS, "none")]

# The base port the docs and configs suggest (SANDBOX_METRICS_PORT=9780: ranks 0..7 of a host
# on 9780..9787). Nothing listens unless a port is set.
SUGGESTED_BASE_PORT = 9780


def _bounded(value: Any, allowed: Iterable[str]) -> str:
    return value if value in allowed else _OTHER


def _process_device_type() -> str:
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            return "cuda"
    except Exception:  # noqa: BLE001
        pass
    return "cpu"


def device_type(report: CompileReport) -> str:
    """The device the graph was compiled for, from its kernels: C++ kernels run on the CPU,
    a Triton kernel names its device (``DeviceProperties(type='cuda', ...)``). A graph
    without generated kernels (extern calls only, an AOTAutograd cache hit) gets the
    process's: ``cuda`` once CUDA is initialised, else ``cpu``."""
    for k in report.kernels:
        kind = k.get("kind")
        if kind == "cpp":
            return "cpu"
        if kind in ("triton", "template"):
            src = k.get("source") or ""
            i = src.find("DeviceProperties(type='")
            if i != -1:
                j = src.find("'", i + 23)
                return _bounded(src[i + 23 : j], DEVICE_TYPES)
            if kind == "triton":
                return "cuda"
    return _process_device_type()


def _versions() -> dict[str, str]:
    def version(*names: str) -> str:
        for name in names:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return "none"

    return {
        "version": __version__,
        "torch": version("torch"),
        "triton": version("triton", "pytorch-triton", "pytorch-triton-rocm", "pytorch-triton-xpu"),
        "python": sys.version.split()[0],
    }


class PoolStats(NamedTuple):
    """What the worker pool says at scrape time (the runtime reads it; this sink never sees the pool)."""

    restarts: int  # workers replaced after a failure, over this process's life
    in_flight: list[float]  # unix time each graph now in flight was handed to the pool


def no_pool() -> PoolStats:
    return PoolStats(0, [])


class _Live:
    """Values read at scrape (or push) time: compiles in flight, worker restarts, build info."""

    def __init__(self, stats: Callable[[], PoolStats]) -> None:
        self._stats = stats
        self._versions = _versions()

    def _families(self, with_values: bool) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # loaded once metrics are on

        stats = self._stats() if with_values else no_pool()
        restarts = CounterMetricFamily(
            "sandbox_worker_restarts",
            "Workers replaced after a failed compile (crash, timeout, oom, error).",
            value=stats.restarts if with_values else None,
        )
        in_flight = GaugeMetricFamily(
            "sandbox_compiles_in_flight",
            "Graphs handed to the worker pool and not back yet (waiting for a worker, or compiling in one).",
        )
        oldest = GaugeMetricFamily(
            "sandbox_oldest_compile_in_flight_start_time_seconds",
            "Unix time at which the oldest graph now in flight was handed to the worker pool; absent when none is.",
        )
        info = GaugeMetricFamily(
            "sandbox_build_info",
            "Versions of the sandbox, torch, Triton ('none' when absent) and Python; always 1.",
            labels=list(self._versions),
        )
        if with_values:
            in_flight.add_metric([], len(stats.in_flight))
            if stats.in_flight:
                oldest.add_metric([], min(stats.in_flight))
            info.add_metric(list(self._versions.values()), 1)
        return [restarts, in_flight, oldest, info]

    def collect(self) -> list[Any]:
        return self._families(True)

    def describe(self) -> list[Any]:
        return self._families(False)


class Metrics:
    """The sandbox's metrics: ``metrics(report)`` counts one report. Registered nowhere by
    itself: ``register(registry)`` adds them to a registry (any number of them)."""

    def __init__(self, stats: Callable[[], PoolStats] = no_pool) -> None:
        from prometheus_client import Counter, Histogram  # loaded once metrics are on

        self.compile_duration = Histogram(
            "sandbox_compile_duration_seconds",
            "Time from a graph entering the sandbox to its report (cache lookup, serialize, wait, compile, load).",
            ["graph_kind", "outcome", "device_type"],
            buckets=COMPILE_BUCKETS,
            registry=None,
        )
        self.stage_duration = Histogram(
            "sandbox_compile_stage_duration_seconds",
            "Duration of the named compile stages (a fixed set: the sandbox's own and Inductor's main phases).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=None,
        )
        self.worker_wait = Histogram(
            "sandbox_worker_wait_seconds",
            "Time an isolated compile waited for a free, ready worker.",
            buckets=STAGE_BUCKETS,
            registry=None,
        )
        self.shared = Counter(
            "sandbox_single_flight_compiles",
            "Compiles that could be shared (compile service, Redis lease) by role: compiled (this process "
            "compiled it), waited (another process's compile served it: a single-flight hit), alone (not shared).",
            ["role", "via"],
            registry=None,
        )
        self.shared_wait = Histogram(
            "sandbox_single_flight_wait_seconds",
            "Time a graph waited for another process's compile of it (the compile service or a Redis lease).",
            ["via"],
            buckets=COMPILE_BUCKETS,
            registry=None,
        )
        self.cache_lookups = Counter(
            "sandbox_cache_lookups",
            "Compile cache lookups by cache (fx_graph, aot_autograd, async_compile, fx_graph_remote, "
            "aot_autograd_remote) and result.",
            ["cache", "result"],
            registry=None,
        )
        self.remote_saved = Counter(
            "sandbox_remote_cache_saved_seconds",
            "Compile time saved by remote cache hits: the compile time their entries recorded, by cache.",
            ["cache"],
            registry=None,
        )
        self.failures = Counter(
            "sandbox_compile_failures",
            "Failed compiles by kind (crash, timeout, oom, error).",
            ["kind"],
            registry=None,
        )
        self.kernels = Counter(
            "sandbox_kernels_generated",
            "Kernels in the compiled modules by kind (cpp, triton, template, extern); cache hits not counted.",
            ["kind"],
            registry=None,
        )
        self.live = _Live(stats)
        self.collectors: list[Any] = [
            self.compile_duration,
            self.stage_duration,
            self.worker_wait,
            self.shared,
            self.shared_wait,
            self.cache_lookups,
            self.remote_saved,
            self.failures,
            self.kernels,
            self.live,
        ]
        # Label children bound once: every series with a known label value exists from the
        # start (at 0), so rate()/increase() see the first event, and a report costs dict lookups.
        self._stages = {name: self.stage_duration.labels(name) for name in STAGES}
        self._lookups = {
            (cache, result): self.cache_lookups.labels(cache, result)
            for cache, results in CACHE_RESULTS.items()
            for result in (*results, _OTHER)
        }
        self._failures = {kind: self.failures.labels(kind) for kind in (*FAILURE_KINDS, _OTHER)}
        self._remote_saved = {cache: self.remote_saved.labels(cache) for cache in REMOTE_CACHES}
        self._kernels = {kind: self.kernels.labels(kind) for kind in (*KERNEL_KINDS, _OTHER)}
        self._shared = {(role, via): self.shared.labels(role, via) for role, via in SHARED}
        self._shared_wait = {via: self.shared_wait.labels(via) for via in VIAS}
        self._durations: dict[tuple[str, str, str], Any] = {}
        device = _process_device_type()
        for kind in GRAPH_KINDS:
            for outcome in OUTCOMES:
                self._duration((kind, outcome, device))
        self._registries: list[Any] = []

    def register(self, registry: Any) -> None:
        if any(r is registry for r in self._registries):
            return
        for c in self.collectors:
            registry.register(c)
        self._registries.append(registry)

    def _duration(self, key: tuple[str, str, str]) -> Any:
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = self.compile_duration.labels(*key)
        return child

    def __call__(self, r: CompileReport) -> None:
        outcome = _bounded(r.outcome, OUTCOMES)
        key = (_bounded(r.graph_kind, GRAPH_KINDS), outcome, device_type(r))
        self._duration(key).observe(max(0.0, r.duration_s))

        failed = outcome == FAILED
        flight = r.single_flight if isinstance(r.single_flight, dict) else None
        waited = False
        if flight:
            role = flight.get("role") if flight.get("role") in ROLES else _OTHER
            via = flight.get("via") if flight.get("via") in VIAS else "none"
            self._shared[role, via].inc()
            waited = role == "waited"
            if waited and not failed and via != "none":
                self._shared_wait[via].observe(max(0.0, float(flight.get("waited_s") or 0.0)))
        children = self._stages
        for s in r.stages:
            child = children.get(s.name)
            # A failed graph's wait_for_worker spans the wait until the failure, not a wait;
            # a waited graph's, the wait for another process's compile (single_flight_wait).
            if child is not None and not (failed and s.name == "wait_for_worker"):
                child.observe(max(0.0, s.end - s.start))
                if s.name == "wait_for_worker" and outcome == ISOLATED and not waited:
                    self.worker_wait.observe(max(0.0, s.end - s.start))

        caches = r.caches
        if caches:
            lookups = self._lookups
            fx = caches.get("fx_graph")
            if fx and fx.get("state"):
                (lookups.get(("fx_graph", fx["state"])) or lookups["fx_graph", _OTHER]).inc()
            aot = caches.get("aot_autograd")
            # One AOTAutograd lookup serves a forward and its backward: counted on the forward.
            if aot and aot.get("state") and r.graph_kind != "backward":
                (lookups.get(("aot_autograd", aot["state"])) or lookups["aot_autograd", _OTHER]).inc()
            async_compile = caches.get("async_compile")
            if async_compile:
                for result in ("hit", "miss"):
                    n = async_compile.get(result)
                    if n:
                        lookups["async_compile", result].inc(n)
            # A remote lookup is on the report of the graph that made it (the AOTAutograd one
            # on the forward of a pair), so each counts once.
            for cache in REMOTE_CACHES:
                remote = caches.get(cache)
                if remote and remote.get("state"):
                    (lookups.get((cache, remote["state"])) or lookups[cache, _OTHER]).inc()
                    if remote.get("time_saved_s"):
                        self._remote_saved[cache].inc(max(0.0, float(remote["time_saved_s"])))

        if failed and r.failure is not None:
            (self._failures.get(r.failure.kind) or self._failures[_OTHER]).inc()

        if r.kernels and outcome != CACHE_HIT:
            kernels = self._kernels
            for k in r.kernels:
                (kernels.get(k.get("kind")) or kernels[_OTHER]).inc()


# --- exposition: the endpoint, the application's registry, the Pushgateway ----------------------


def local_rank() -> int:
    try:
        return max(0, int(os.environ.get("LOCAL_RANK", "0") or 0))
    except ValueError:
        return 0


def rank_port(base: int) -> int:
    """The port this process serves on: the base port + ``LOCAL_RANK`` (0 when unset)."""
    return base + local_rank()


def grouping_key() -> dict[str, str]:
    key = {"instance": socket.gethostname()}
    if os.environ.get("LOCAL_RANK") not in (None, ""):
        key["local_rank"] = str(local_rank())
    return key


PUSH_TIMEOUT_S = 5.0


class PrometheusSink(Sink):
    """Counts every report into the sandbox's own registry, and exposes it where asked:
    an HTTP endpoint, the application's registry, a Pushgateway push at shutdown."""

    name = "prometheus"

    def __init__(self, stats: Callable[[], PoolStats] = no_pool) -> None:
        from prometheus_client import CollectorRegistry  # loaded once metrics are on

        self._lock = threading.Lock()
        self.metrics = Metrics(stats)
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics.register(self.registry)
        self.servers: dict[tuple[str, int], Any] = {}
        self._failed_ports: set[tuple[str, int]] = set()
        self._push: dict[str, Any] = {}  # gateway, job, grouping_key, pid
        self._push_warned = False

    def consume(self, report: CompileReport) -> None:
        self.metrics(report)

    def register(self, registry: Any) -> None:
        """Also count into ``registry`` (e.g. ``prometheus_client.REGISTRY``, which the application serves)."""
        with self._lock:
            self.metrics.register(registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> Any:
        """Serve the sandbox's registry on ``addr``:``port`` (once); None, with one warning, if it cannot."""
        key = (addr, port)
        with self._lock:
            if key in self.servers:
                return self.servers[key]
            if key in self._failed_ports:
                return None
            from prometheus_client import start_http_server  # loaded once metrics are on

            try:
                server, _thread = start_http_server(port, addr=addr, registry=self.registry)
            except (OSError, ValueError) as e:
                self._failed_ports.add(key)
                why = "already in use" if getattr(e, "errno", None) in (98, 48) else f"{type(e).__name__}: {e}"
                warnings.warn(
                    f"sandbox: the Prometheus metrics endpoint could not start on {addr}:{port} ({why}); compiles "
                    f"and reports are unaffected. Pick a free base port with SANDBOX_METRICS_PORT (or "
                    f"options={{'metrics_port': ...}}); local rank N serves on the base port + N.",
                    RuntimeWarning,
                    stacklevel=4,
                )
                return None
            self.servers[key] = server
            log.info("sandbox: serving Prometheus metrics on http://%s:%d/metrics", addr, port)
            return server

    def push_at_exit(self, gateway: str, job: str | None = None) -> None:
        """Push the sandbox's registry to ``gateway`` at shutdown (set once; the first wins)."""
        with self._lock:
            if not self._push:
                self._push.update(gateway=gateway, job=job or "sandbox", grouping_key=grouping_key(), pid=os.getpid())

    def push(self, timeout: float = PUSH_TIMEOUT_S) -> bool:
        """Push the metrics to the configured Pushgateway now; False (one warning) on failure."""
        if not self._push:
            return False
        from prometheus_client import push_to_gateway  # loaded once metrics are on

        try:
            push_to_gateway(
                self._push["gateway"],
                job=self._push["job"],
                registry=self.registry,
                grouping_key=self._push["grouping_key"],
                timeout=timeout,
            )
            return True
        except Exception as e:  # noqa: BLE001 - never break the job, at exit least of all
            if not self._push_warned:
                self._push_warned = True
                warnings.warn(
                    f"sandbox: could not push compile metrics to the Pushgateway at {self._push['gateway']} "
                    f"({type(e).__name__}: {e}); the job is unaffected. Check SANDBOX_PUSHGATEWAY.",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return False

    def shutdown(self) -> None:
        if self._push and self._push.get("pid") == os.getpid():  # never from a forked child
            self.push()
