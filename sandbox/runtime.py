"""The composition root: this process's Run, its reports, the sinks and the worker pool.

The backend and the public API call this module; nothing below it imports it. It makes
the sinks that the resolved ``Options`` ask for (the run store, OpenTelemetry, Prometheus,
torch's structured trace), hands every published report to each of them and to the
``sandbox.on_report`` listeners, and owns the pool the isolated compiles run in. All of it
is one ``Runtime`` object per process; a forked child (a DataLoader worker) starts with
fresh locks and no sinks of its own.
"""

from __future__ import annotations

import _imp
import atexit
import dataclasses
import functools
import logging
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

from sandbox import env
from sandbox.isolation import pool, service_client, single_flight, sizing
from sandbox.isolation.parent_warmup import ParentWarmUp
from sandbox.options import Options
from sandbox.record.environment import describe_run
from sandbox.record.report import CompileReport, Run
from sandbox.sinks.base import Sink
from sandbox.sinks.prometheus import PoolStats, PrometheusSink, rank_port
from sandbox.sinks.store import StoreSink
from sandbox.sinks.torch_trace import TorchTraceSink
from sandbox.torch_adapter import caches, seam

log = logging.getLogger("sandbox")

__all__ = ["Runtime", "current"]


def in_worker() -> bool:
    """This process is a worker: reports, sinks and pools stay off here."""
    return env.get("SANDBOX_IN_WORKER") == "1"


def worker_env(options: Options, workers: int, shared: bool = False) -> dict[str, str]:
    """The environment a worker starts with, from this process's and the resolved options;
    ``shared``: the host's compile service's, which sizes its workers itself."""
    out = dict(os.environ)
    if not shared:
        # Ranks on this host x workers x Inductor compile threads <= cores (isolation/sizing.py).
        out.update(sizing.worker_env(workers, out))
    # Async mode: the training process runs its steps eagerly meanwhile and would starve
    # an idle-class warm-up; the worker warms up at normal priority instead.
    if options.async_:
        out.setdefault("SANDBOX_WORKER_WARMUP", "normal")
    # The worker imports this package by module name: make sure it can, wherever it lives.
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p]
    if here not in parts:
        out["PYTHONPATH"] = os.pathsep.join([here, *parts])
    out.pop("SANDBOX_IN_WORKER", None)
    return out


def _metrics_key(options: Options) -> tuple:
    return (options.metrics_port, options.metrics_addr, options.pushgateway, options.run_name)


class Runtime:
    """One per process: what the backend needs between compiles, and every sink."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._configuring = threading.Lock()
        self._reports: list[CompileReport] = []
        self._listeners: list[Callable[[CompileReport], None]] = []
        self._sinks: dict[str, Sink] = {}
        self._run: Run | None = None
        self._metrics_applied: set[tuple] = set()
        self._tracing = False
        self._exit_hook = False
        self._seam = False
        self._frontend: threading.Thread | None = None
        self._restarts_before = 0  # worker restarts of the pools this process had before the current one
        self._last_pool: pool.Pool | None = None
        self.cache_clock = caches.CacheClock()
        self.parent_warm_up = ParentWarmUp()
        self._leases: single_flight.Leases | None = None

    # -- the run and its reports ---------------------------------------------------------------
    def run(self, options: Options | None = None) -> Run:
        """This process's Run, described on first use (with the first compile's options)."""
        with self._lock:
            if self._run is None or self._run.pid != os.getpid():
                self._run = describe_run(options)
            return self._run

    def publish(self, report: CompileReport) -> None:
        with self._lock:
            report.graph_index = len(self._reports)
            if report.job is None and self._run is not None and report.run_id == self._run.run_id:
                report.job = self._run.job
            self._reports.append(report)
            sinks = list(self._sinks.values())
            listeners = list(self._listeners)
        for sink in sinks:
            self._guarded(sink.consume, report, sink.name)
        for fn in listeners:
            self._guarded(fn, report, repr(fn))

    def republish(self, report: CompileReport) -> None:
        """A published report was completed later (GPU kernel details after the graph's
        first run): sinks that keep reports take it again. Listeners hold the same object."""
        for sink in list(self._sinks.values()):
            self._guarded(sink.update, report, sink.name)

    @staticmethod
    def _guarded(fn: Callable[[CompileReport], None], report: CompileReport, who: str) -> None:
        try:
            fn(report)
        except Exception:  # a sink or listener must never break the user's job
            log.warning("sandbox: report consumer %s failed", who, exc_info=True)

    def reports(self) -> list[CompileReport]:
        with self._lock:
            return list(self._reports)

    def clear_reports(self) -> None:
        with self._lock:
            self._reports.clear()

    def on_report(self, fn: Callable[[CompileReport], None]) -> Callable[[CompileReport], None]:
        with self._lock:
            self._listeners.append(fn)
        return fn

    # -- sinks ---------------------------------------------------------------------------------
    def sink(self, name: str) -> Sink | None:
        return self._sinks.get(name)

    def add_sink(self, sink: Sink, replay: bool = False) -> Sink:
        """Hand ``sink`` every report from now on (with ``replay``, those so far too), once per name."""
        with self._lock:
            if sink.name in self._sinks:
                return self._sinks[sink.name]
            self._sinks[sink.name] = sink
            past = list(self._reports) if replay else []
            if not self._exit_hook:
                self._exit_hook = True
                atexit.register(self.shutdown)
        for report in past:
            self._guarded(sink.consume, report, sink.name)
        return sink

    def configure(self, options: Options) -> None:
        """Turn on what ``options`` ask for, once per process: the store, tracing, metrics."""
        run = self.run(options)
        if in_worker():
            return
        with self._configuring:  # one store writer (a thread and a spool file) per process
            if "torch_trace" not in self._sinks:
                self.add_sink(TorchTraceSink())  # reports into TORCH_TRACE's log, when it is on
            if options.store != "off" and "store" not in self._sinks:
                self.add_sink(StoreSink(options.store, run))
        if options.trace:
            self.enable_tracing()
        if (options.metrics_port or options.pushgateway) and _metrics_key(options) not in self._metrics_applied:
            self.enable_metrics(options)

    def enable_tracing(self, provider: Any = None) -> None:
        """Send every report from now on to OpenTelemetry as spans."""
        with self._configuring:  # one tracer provider of the sandbox's own, at most
            if self._tracing or in_worker():
                return
            try:
                from sandbox.sinks.otel import OtelSink  # imports OpenTelemetry: only when tracing is on

                sink = OtelSink(provider, self._run)  # the Run once described; never described here
            except ImportError as e:
                warnings.warn(
                    f"sandbox: tracing is on but OpenTelemetry is not installed ({e}); "
                    f"pip install opentelemetry-sdk opentelemetry-exporter-otlp",
                    RuntimeWarning,
                    stacklevel=4,
                )
                return
            self._tracing = True
            self.add_sink(sink)

    @property
    def tracing(self) -> bool:
        return self._tracing

    def enable_metrics(self, options: Options, registry: Any = None) -> Any:
        """Prometheus metrics from every report (those so far included): the endpoint and the
        Pushgateway push that ``options`` ask for, ``registry`` too. Returns the sandbox's registry."""
        if in_worker():
            return None
        self._metrics_applied.add(_metrics_key(options))
        try:
            with self._configuring:
                sink = self.sink("prometheus") or self.add_sink(PrometheusSink(self.pool_stats), replay=True)
        except ImportError as e:
            warnings.warn(
                f"sandbox: metrics are on but prometheus_client is missing ({e}); pip install prometheus-client",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        assert isinstance(sink, PrometheusSink)
        if registry is not None:
            sink.register(registry)
        if options.metrics_port:
            sink.serve(rank_port(int(options.metrics_port)), options.metrics_addr or "127.0.0.1")
        if options.pushgateway:
            sink.push_at_exit(options.pushgateway, options.run_name)
        return sink.registry

    def flush(self, timeout_s: float | None = 30.0) -> bool:
        """Block until every sink has what was published so far out (the store: committed
        or spooled); False if the timeout passed first."""
        ok = True
        for sink in list(self._sinks.values()):
            try:
                ok = sink.flush(timeout_s) and ok
            except Exception:  # noqa: BLE001 - telemetry never breaks the job
                log.warning("sandbox: flushing %s failed", sink.name, exc_info=True)
                ok = False
        return ok

    def shutdown(self) -> None:
        """At exit: every sink flushes and lets go, the store last (it may take longest)."""
        sinks = sorted(self._sinks.values(), key=lambda s: s.name == "store")
        for sink in sinks:
            try:
                sink.shutdown()
            except Exception:  # noqa: BLE001 - at exit least of all
                log.debug("sandbox: shutting down %s failed", sink.name, exc_info=True)

    # -- the pool ------------------------------------------------------------------------------
    def get_pool(self, options: Options, size: int | None = None, started_by: str = "a graph") -> pool.Pool:
        """The pool, started (by ``started_by``: import torch, torch.compile, warmup(), a
        graph) or grown to ``size`` workers (default: the options') if need be."""
        size = size or options.workers
        p = pool.current_pool()
        share = service_client.wanted(options.service)
        if p is None or p.closed or p.size < size or (share and isinstance(p, pool.Pool)):
            with self._lock:
                p = pool.current_pool()
                if share and isinstance(p, pool.Pool) and not p.closed:
                    # Started before these options asked for the host's service (at import torch):
                    # its workers go, the service takes over.
                    p.shutdown()
                if p is None or p.closed:
                    if share:
                        # The host's ranks share one compile service; this process's own pool
                        # is the fallback, started only if the service cannot be used.
                        own = functools.partial(self._own_pool, options, started_by="fallback from the service")
                        env = worker_env(options, size, shared=True)
                        p = service_client.ServicePool(size, env, own, started_by, sizing.ranks_on_host())
                    else:
                        p = self._own_pool(options, size, started_by)
                    pool.adopt(p)
                elif p.size < size:
                    if isinstance(p, pool.Pool):
                        p.env = worker_env(options, size)  # workers started from now on get the smaller share
                        p.compile_threads = sizing.job_threads(size)  # ... and those running now, at their next job
                    p.resize(size)
        if isinstance(p, pool.Pool) and options.async_ and "SANDBOX_WORKER_WARMUP" not in p.env:
            # Started before these options were known (at import torch): workers that replace
            # these warm up at normal priority, as async mode wants.
            p.env = worker_env(options, p.size)
        return p

    @staticmethod
    def _own_pool(options: Options, size: int, started_by: str) -> pool.Pool:
        p = pool.Pool(size, worker_env(options, size), started_by=started_by)
        p.compile_threads = sizing.job_threads(size)
        return p

    def leases(self) -> single_flight.Leases:
        """One compile per graph across hosts (Inductor's Redis), used where a graph asks for it."""
        with self._lock:
            if self._leases is None:
                self._leases = single_flight.Leases(service_client.identity())
            return self._leases

    def pool_stats(self) -> PoolStats:
        """Worker restarts over this process's life and the compiles in flight now."""
        with self._lock:
            p = pool.current_pool()
            if p is not self._last_pool:
                if self._last_pool is not None:
                    self._restarts_before += self._last_pool.restarts
                self._last_pool = p
            restarts = self._restarts_before + (p.restarts if p is not None else 0)
        return PoolStats(restarts, p.in_flight() if p is not None else [])

    def ensure_seam(self, route: Callable[[], Any]) -> None:
        seam.install_seam(route)
        with self._lock:
            if not self._seam:
                caches.register_cache_clock(self.cache_clock)
                caches.install_fx_key_tap()  # a cache-miss graph's key: the key its compile is shared by
                self._seam = True

    def warm_gpu_workers(self, started: Any) -> bool:
        """From ``sandbox.warmup()`` on a GPU machine (SANDBOX_WORKER_GPU_WARMUP=warmup, the
        default): the workers start CUDA, Triton and Triton's compile pool now, while the program
        loads its data, instead of inside the first GPU compile (docs/decisions/gpu-worker-warm-up.md).
        A compile service's workers are left as they are. True if the workers were asked."""
        if env.get("SANDBOX_WORKER_GPU_WARMUP").lower() != "warmup" or not sizing.gpu_machine():
            return False
        ask = getattr(started, "warm_gpu", None)
        return bool(ask()) if callable(ask) else False

    # -- this process's own share of Inductor's imports ----------------------------------------
    def warm_up_frontend(self, first_compile: bool = False) -> bool:
        """Once per process, from ``sandbox.warmup()``: import the modules this process's own
        part of a compile needs (``seam.FRONTEND_MODULES``) on a background thread while the
        program loads its data. On by default without an NVIDIA GPU, where it pays off, and in
        async mode (``first_compile``), whose first step is this process's share of a compile
        and little else; that mode also pays the first cache miss's one-time costs there
        (``seam.prepare_first_compile``) after the imports (docs/decisions/frontend-imports.md).
        SANDBOX_WARMUP_IMPORTS=1 or 0 decides either way; ``prepare`` runs the thread and prepares
        the first cache miss in blocking mode too. True if the thread was started."""
        if self._frontend is not None or in_worker():
            return False
        setting = env.get("SANDBOX_WARMUP_IMPORTS").lower()
        if setting in ("0", "false", "no", "off"):
            return False
        if not setting and sizing.gpu_machine() and not first_compile:
            return False
        first_compile = first_compile or setting == "prepare"
        holding = threading.Event()

        def imports() -> None:
            # The interpreter's import lock, held for the whole run: torch's modules import
            # each other in cycles, and two threads importing them at once can be handed a
            # half-initialised module. warmup() returns once this thread holds the lock, so
            # no import of the program's is half-way through when these start.
            _imp.acquire_lock()
            holding.set()
            try:
                failed = seam.import_frontend()
                if failed:
                    log.debug("sandbox: could not import ahead of time: %s", failed)
            except Exception:  # noqa: BLE001 - the first compile imports them then
                log.debug("sandbox: importing the compile frontend ahead of time failed", exc_info=True)
            finally:
                _imp.release_lock()
            if first_compile:  # outside the import lock: the program's own imports go on meanwhile
                try:
                    seam.prepare_first_compile(sizing.likely_graph_device())
                except Exception:  # noqa: BLE001 - the first compile pays for it then
                    log.debug("sandbox: preparing the first compile ahead of time failed", exc_info=True)

        self._frontend = threading.Thread(target=imports, name="sandbox-frontend-imports", daemon=True)
        self._frontend.start()
        holding.wait(10.0)
        return True

    def join_frontend(self, timeout: float = 120.0) -> None:
        """Wait for warm_up_frontend's imports: the compile that follows imports the same
        modules, and must not do so beside them."""
        thread = self._frontend
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)

    def after_fork_in_child(self) -> None:
        """A forked child (a DataLoader worker) starts with fresh locks and without the
        parent's store writer: locks held by the parent's threads at fork time would never
        be released here, and the writer's thread did not cross the fork."""
        self._lock = threading.Lock()
        self._configuring = threading.Lock()
        self._sinks.pop("store", None)


_current = Runtime()
os.register_at_fork(after_in_child=_current.after_fork_in_child)


def current() -> Runtime:
    """This process's runtime."""
    return _current


def with_metrics(options: Options, port: int | None, addr: str | None, pushgateway: str | None) -> Options:
    """``options`` with the metrics settings of ``sandbox.enable_metrics``'s arguments, where given."""
    changes: dict[str, Any] = {}
    if port is not None:
        changes["metrics_port"] = port
    if addr:
        changes["metrics_addr"] = addr
    if pushgateway:
        changes["pushgateway"] = pushgateway
    return dataclasses.replace(options, **changes)
