"""Process-wide state: this process's Run, its reports, the listeners, the pool."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from sandbox.isolation import compat, pool, sizing
from sandbox.telemetry import torch_tools
from sandbox.telemetry.report import CompileReport, Run

log = logging.getLogger("sandbox")

_lock = threading.Lock()
_reports: list[CompileReport] = []
_listeners: list[Callable[[CompileReport], None]] = []
_run: Run | None = None
cache_clock = compat.CacheClock()
_clock_registered = False


def run(options: object = None) -> Run:
    """This process's Run, described on first use (with the first compile's options)."""
    global _run
    with _lock:
        if _run is None or _run.pid != os.getpid():
            from sandbox.telemetry.environment import describe_run

            _run = describe_run(options)
        return _run


_store_sink: object = None


def configure(options: object) -> None:
    """Turn on what ``options`` asks for, once per process: tracing, metrics, the store."""
    global _store_sink
    run(options)
    torch_tools.enable()  # reports into TORCH_TRACE's log, when it is on
    if getattr(options, "trace", False):
        enable_tracing()
    if getattr(options, "metrics_port", None) or getattr(options, "pushgateway", None):
        if _metrics_key(options) not in _metrics_applied:
            enable_metrics(options)
    location = getattr(options, "store", None)
    with _lock:
        if _store_sink is not None or location == "off" or in_worker():
            return
        from sandbox.sinks.store import StoreSink

        _store_sink = StoreSink(location, _run)  # type: ignore[arg-type]
        _listeners.append(_store_sink)  # type: ignore[arg-type]


def flush(timeout: float | None = 30.0) -> bool:
    """Block until every report so far is in the store or the spool (True), or the timeout passed."""
    sink = _store_sink
    return sink.flush(timeout) if sink is not None else True  # type: ignore[attr-defined]


def ensure_seam(route: Callable) -> None:
    global _clock_registered
    compat.install_seam(route)
    with _lock:
        if not _clock_registered:
            compat.register_cache_clock(cache_clock)
            _clock_registered = True


def worker_env(workers: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    # Ranks on this host x workers x Inductor compile threads <= cores (isolation/sizing.py).
    env.update(sizing.worker_env(workers, env))
    # Async mode: the training process runs its steps eagerly meanwhile and would starve
    # an idle-class warm-up; the worker warms up at normal priority instead.
    if env.get("SANDBOX_ASYNC", "").strip().lower() in ("1", "true", "yes", "on"):
        env.setdefault("SANDBOX_WORKER_WARMUP", "normal")
    # The worker imports this package by module name: make sure it can, wherever it lives.
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if here not in parts:
        env["PYTHONPATH"] = os.pathsep.join([here, *parts])
    env.pop("SANDBOX_IN_WORKER", None)
    return env


def get_pool(size: int, started_by: str = "a graph") -> pool.Pool:
    """The pool, started (by ``started_by``: import torch, torch.compile, warmup(), a
    graph) or grown to ``size`` workers if need be."""
    p = pool.current_pool()
    if p is None or p.closed or p.size < size:
        with _lock:
            p = pool.current_pool()
            if p is None or p.closed:
                p = pool.Pool(size, worker_env(size), started_by=started_by)
                pool.adopt(p)
            elif p.size < size:
                p.env = worker_env(size)  # workers started from now on get the smaller share
                p.resize(size)
    return p


_frontend_thread: threading.Thread | None = None


def warm_up_frontend() -> bool:
    """Once per process, from ``sandbox.warmup()``: import the modules this process's own
    part of a compile needs (Inductor's compile_fx and the partitioner;
    compat.FRONTEND_MODULES) on a background thread, while the program loads its data,
    instead of inside the first step. torch itself is fully imported by then (this module
    imports it through compat); resolving the backend and the backend wait for the thread
    before dynamo traces or compiles anything (join_frontend).
    On by default on a machine without an NVIDIA GPU, off with one: on an H100 host,
    where the model's set-up right after ``warmup()`` initialises CUDA, the imports beside
    it made the first call after ``torch.compile`` later, not sooner (warm cache 1.41x of
    in-process against 0.98x without; bench/compile_overhead.py). SANDBOX_WARMUP_IMPORTS=1
    or 0 decides either way. True if the thread was started."""
    global _frontend_thread
    if _frontend_thread is not None or in_worker():
        return False
    setting = os.environ.get("SANDBOX_WARMUP_IMPORTS", "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    if not setting and sizing.gpu_machine():
        return False

    holding = threading.Event()

    def run() -> None:
        # The interpreter's import lock, held for the whole run: any other thread's import of
        # a module not imported yet waits until these are done (modules already imported
        # do not). torch's own modules import each other in cycles (torch._dynamo and
        # torch._inductor both ways), so two threads importing them at once can each wait
        # for a module the other is half-way through, and Python then hands one of them the
        # half-initialised module: the user's torch.compile right after warmup() failed
        # that way (ImportError: cannot import name 'IndentedBuffer' from
        # 'torch._inductor.utils'). warmup() returns only once this thread holds the lock,
        # so no import of the program's can be half-way through when these start.
        import _imp

        _imp.acquire_lock()
        holding.set()
        try:
            failed = compat.import_frontend()
            if failed:
                log.debug("sandbox: could not import ahead of time: %s", failed)
        except Exception:  # noqa: BLE001 - the first compile imports them then
            log.debug("sandbox: importing the compile frontend ahead of time failed", exc_info=True)
        finally:
            _imp.release_lock()

    _frontend_thread = threading.Thread(target=run, name="sandbox-frontend-imports", daemon=True)
    _frontend_thread.start()
    holding.wait(10.0)
    return True


def join_frontend(timeout: float = 120.0) -> None:
    """Wait for warm_up_frontend's imports (if any are still running): the compile that
    follows imports the same modules, and must not do so beside them."""
    _join(_frontend_thread, timeout)


def _join(thread: threading.Thread | None, timeout: float) -> None:
    """Wait for ``thread`` if it is running and is not the calling thread."""
    if thread is not None and thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout)


class ParentWarmUp:
    """This process's own share of loading a worker's result, paid in the background
    while it waits for the worker's first compile rather than inside the load:
    for a CPU graph, Inductor's CPU-ISA probe (the worker builds the probe programs;
    Inductor's file lock makes this process reuse them; nothing waits for it); for a GPU
    graph, Inductor's ptxas choice and Triton's driver (compat.prepare_gpu_load), which the
    load then waits for (``join``), so that the two never start the driver side by side."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._gpu: threading.Thread | None = None
        self.gpu_result: dict | None = None

    def start(self, cpu: bool = True, gpu: bool = False) -> None:
        with self._lock:
            if cpu and self._probe is None:
                self._probe = threading.Thread(target=self._run_probe, name="sandbox-isa-probe", daemon=True)
                self._probe.start()
            if gpu and self._gpu is None:
                self._gpu = threading.Thread(target=self._run_gpu, name="sandbox-gpu-load-prep", daemon=True)
                self._gpu.start()

    def started(self) -> dict[str, bool]:
        """Which of the two has been started in this process."""
        return {"cpu_isa_probe": self._probe is not None, "gpu_load": self._gpu is not None}

    def join(self, timeout: float = 120.0) -> None:
        _join(self._gpu, timeout)

    @staticmethod
    def _run_probe() -> None:
        try:
            compat.probe_cpu_isa()
        except Exception:
            log.debug("sandbox: background ISA probe failed", exc_info=True)

    def _run_gpu(self) -> None:
        try:
            self.gpu_result = compat.prepare_gpu_load()
        except Exception:
            log.debug("sandbox: background GPU load preparation failed", exc_info=True)


parent_warm_up = ParentWarmUp()


def publish(report: CompileReport) -> None:
    with _lock:
        report.graph_index = len(_reports)
        if report.job is None and _run is not None and report.run_id == _run.run_id:
            report.job = _run.job
        _reports.append(report)
        listeners = list(_listeners)
    for fn in listeners:
        try:
            fn(report)
        except Exception:  # a listener must never break the user's job
            log.warning("sandbox: report listener %r failed", fn, exc_info=True)


def republish(report: CompileReport) -> None:
    """A published report was completed later (GPU kernel details after the graph's
    first run): the store writes the whole of it again (an upsert by report id).
    Listeners of ``on_report`` saw it once already and hold the same object."""
    sink = _store_sink
    if sink is None:
        return
    try:
        sink(report)  # type: ignore[operator]
    except Exception:
        log.warning("sandbox: could not store the completed report", exc_info=True)


_tracing = False


def enable_tracing(provider: object = None) -> None:
    """Send every report (from now on) to OpenTelemetry as spans."""
    global _tracing
    if _tracing:
        return
    from sandbox.sinks import otel

    sink = otel.enable(provider)
    if sink is not None:
        _tracing = True
        on_report(sink)


_metrics_applied: set[tuple] = set()


def _metrics_key(options: object) -> tuple:
    return tuple(getattr(options, k, None) for k in ("metrics_port", "metrics_addr", "pushgateway", "run_name"))


def enable_metrics(options: object = None, registry: object = None) -> object:
    """Prometheus metrics from every report (those so far included): the endpoint and the
    Pushgateway push that ``options`` ask for, ``registry`` too. Returns the sandbox's registry."""
    if in_worker():
        return None
    from sandbox.sinks import prometheus

    try:
        reg = prometheus.enable(
            registry=registry,
            port=getattr(options, "metrics_port", None),
            addr=getattr(options, "metrics_addr", None) or "127.0.0.1",
            pushgateway=getattr(options, "pushgateway", None),
            job=getattr(options, "run_name", None),
        )
    except ImportError as e:
        import warnings

        warnings.warn(
            f"sandbox: metrics are on but prometheus_client is missing ({e}); pip install prometheus-client",
            RuntimeWarning,
            stacklevel=2,
        )
        _metrics_applied.add(_metrics_key(options))
        return None
    _metrics_applied.add(_metrics_key(options))
    return reg


def subscribe(fn: Callable[[CompileReport], None]) -> list[CompileReport]:
    """``on_report(fn)``, and the reports published before it: together, each report exactly once."""
    with _lock:
        _listeners.append(fn)
        return list(_reports)


def reports() -> list[CompileReport]:
    with _lock:
        return list(_reports)


def on_report(fn: Callable[[CompileReport], None]) -> Callable[[CompileReport], None]:
    with _lock:
        _listeners.append(fn)
    return fn


def clear_reports() -> None:
    with _lock:
        _reports.clear()


def in_worker() -> bool:
    return os.environ.get("SANDBOX_IN_WORKER") == "1"


def _after_fork_in_child() -> None:
    """A forked child (a DataLoader worker) starts with fresh locks and no store writer:
    locks held by the parent's threads at fork time would never be released here."""
    global _lock, _store_sink
    _lock = threading.Lock()
    if _store_sink is not None:
        if _store_sink in _listeners:
            _listeners.remove(_store_sink)  # type: ignore[arg-type]
        _store_sink = None


os.register_at_fork(after_in_child=_after_fork_in_child)
