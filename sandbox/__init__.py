"""The compile sandbox: ``torch.compile(model, backend="sandbox")``.

Every graph that misses the compile caches is compiled in an isolated,
pre-started worker process; every graph yields a :class:`CompileReport`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.isolation import pool
from sandbox.options import OptionError, Options
from sandbox.record.report import CompileReport, Run
from sandbox.sinks.perfetto import write_chrome_trace
from sandbox.version import __version__ as __version__

__all__ = [
    "CompileReport",
    "OptionError",
    "Options",
    "Run",
    "SandboxCompileError",
    "UnpicklableGraphError",
    "enable_metrics",
    "enable_tracing",
    "export_trace",
    "flush",
    "on_report",
    "pending",
    "reports",
    "shutdown",
    "warmup",
    "workers",
]


def reports() -> list[CompileReport]:
    """This process's reports, one per compiled graph, oldest first."""
    return _runtime().reports()


sandbox_reports = reports


def on_report(fn: Callable[[CompileReport], None]) -> Callable[[CompileReport], None]:
    """Call ``fn(report)`` for every new report (usable as a decorator)."""
    return _runtime().on_report(fn)


def warmup(workers: int | None = None, wait: bool = False, timeout: float | None = None) -> None:
    """Start the workers now (they warm up in the background; ``wait=True`` blocks until ready).

    Call it early - before building the model or loading data - so the workers pay
    Inductor's one-time costs while the program does something else. This process's own
    share of them (importing Inductor's compile front end) is paid meanwhile too, on a
    background thread, on machines without an NVIDIA GPU and in async mode
    (``SANDBOX_WARMUP_IMPORTS=1`` or ``0`` decides either way). On a GPU machine the workers also
    start CUDA, Triton and Triton's compile pool now rather than at their first GPU job
    (``SANDBOX_WORKER_GPU_WARMUP=job`` leaves them to it).
    """
    rt = _runtime()
    options = Options.resolve()
    started = rt.get_pool(options, workers, started_by="sandbox.warmup()")
    rt.warm_gpu_workers(started)
    rt.warm_up_frontend(first_compile=options.async_)
    if wait:
        started.wait_ready(timeout)


def workers() -> list[dict[str, Any]]:
    """The live workers: pid, ready, jobs served, resident memory (bytes, with children), and
    the C++ builds a killed compile had cut short that each removed at its start (``repaired_builds``)."""
    p = pool.current_pool()
    return p.workers() if p else []


def pending() -> int:
    """How many of this process's graphs still run as is (async mode): compiling in a worker,
    or loaded and waiting for their next call to swap in. Each swap is its report's
    ``switched_at``; a report is published at its swap."""
    from sandbox.isolation import deferred  # imports torch: only when asked

    return deferred.pending()


def export_trace(path: str, reports: list[CompileReport] | None = None) -> str:
    """Write a Chrome/Perfetto trace JSON of ``reports`` (default: this process's)."""
    return write_chrome_trace(path, sandbox_reports() if reports is None else reports)


def enable_tracing(tracer_provider: Any = None) -> None:
    """Export every compile as OpenTelemetry spans (same as ``options={"trace": True}``)."""
    _runtime().enable_tracing(tracer_provider)


def enable_metrics(
    registry: Any = None, port: int | None = None, addr: str | None = None, pushgateway: str | None = None
) -> Any:
    """Prometheus metrics of every compile (those so far included); returns the sandbox's own
    ``CollectorRegistry``.

    ``registry``: also register them in this registry (e.g. ``prometheus_client.REGISTRY``, which
    your application already serves). ``port``: serve them on ``addr`` (default ``127.0.0.1``) at
    ``port`` + ``LOCAL_RANK``. ``pushgateway``: push them there at exit. Unset arguments come from
    ``SANDBOX_METRICS_PORT``, ``SANDBOX_METRICS_ADDR``, ``SANDBOX_PUSHGATEWAY``.
    """
    from sandbox import runtime  # imports torch's compile stack: only once metrics are asked for

    options = runtime.with_metrics(Options.resolve(), port, addr, pushgateway)
    return runtime.current().enable_metrics(options, registry)


def flush(timeout: float | None = 30.0) -> bool:
    """Block until every sink has every report so far: committed to the run store, or kept in
    the local spool while the store is unreachable (uploaded once it is back); spans handed
    to the exporter; False on timeout."""
    return _runtime().flush(timeout)


def shutdown() -> None:
    """Stop the workers now (they stop at exit anyway)."""
    pool.shutdown()


def _runtime() -> Any:
    # The runtime imports torch's compile stack: `import sandbox` stays light for the CLI
    # and the dashboard, and pays for it at the first call that needs it.
    from sandbox import runtime

    return runtime.current()


def __getattr__(name: str) -> Any:
    if name in ("SandboxCompileError", "UnpicklableGraphError"):
        from sandbox.isolation import scheme  # imports torch: only when the errors are asked for

        return getattr(scheme, name)
    raise AttributeError(name)
