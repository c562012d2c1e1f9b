"""The compile sandbox: ``torch.compile(model, backend="sandbox")``.

Every graph that misses the compile caches is compiled in an isolated,
pre-started worker process; every graph yields a :class:`CompileReport`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.options import OptionError, Options
from sandbox.telemetry.report import CompileReport, Run

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
    "reports",
    "shutdown",
    "warmup",
    "workers",
]
__version__ = "0.1.0"


def reports() -> list[CompileReport]:
    """This process's reports, one per compiled graph, oldest first."""
    from sandbox import runtime

    return runtime.reports()


sandbox_reports = reports


def on_report(fn: Callable[[CompileReport], None]) -> Callable[[CompileReport], None]:
    """Call ``fn(report)`` for every new report (usable as a decorator)."""
    from sandbox import runtime

    return runtime.on_report(fn)


def warmup(workers: int | None = None, wait: bool = False, timeout: float | None = None) -> None:
    """Start the workers now (they warm up in the background; ``wait=True`` blocks until ready).

    Call it early - before building the model or loading data - so the workers pay
    Inductor's one-time costs while the program does something else. This process's own
    share of them (importing Inductor's compile front end) is paid meanwhile too, on a
    background thread, on machines without an NVIDIA GPU (``SANDBOX_WARMUP_IMPORTS=1`` or
    ``0`` decides either way).
    """
    from sandbox import runtime

    pool = runtime.get_pool(workers or Options.resolve().workers, started_by="sandbox.warmup()")
    runtime.warm_up_frontend()
    if wait:
        pool.wait_ready(timeout)


def workers() -> list[dict[str, Any]]:
    """The live workers: pid, ready, jobs served, resident memory (bytes, with children)."""
    from sandbox.isolation import pool

    p = pool.current_pool()
    return p.workers() if p else []


def export_trace(path: str, reports: list[CompileReport] | None = None) -> str:
    """Write a Chrome/Perfetto trace JSON of ``reports`` (default: this process's)."""
    from sandbox.sinks.perfetto import write_chrome_trace

    return write_chrome_trace(path, sandbox_reports() if reports is None else reports)


def enable_tracing(tracer_provider: Any = None) -> None:
    """Export every compile as OpenTelemetry spans (same as ``options={"trace": True}``)."""
    from sandbox import runtime

    runtime.enable_tracing(tracer_provider)


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
    from types import SimpleNamespace

    from sandbox import runtime

    env = Options.resolve()
    opts = SimpleNamespace(
        metrics_port=env.metrics_port if port is None else port,
        metrics_addr=addr or env.metrics_addr,
        pushgateway=pushgateway or env.pushgateway,
        run_name=env.run_name,
    )
    return runtime.enable_metrics(opts, registry)


def flush(timeout: float | None = 30.0) -> bool:
    """Block until every report so far is committed to the run store, or kept in the local spool
    while the store is unreachable (uploaded once it is back); False on timeout."""
    from sandbox import runtime

    return runtime.flush(timeout)


def shutdown() -> None:
    """Stop the workers now (they stop at exit anyway)."""
    from sandbox.isolation import pool

    pool.shutdown()


def __getattr__(name: str) -> Any:
    if name in ("SandboxCompileError", "UnpicklableGraphError"):
        from sandbox.isolation import scheme

        return getattr(scheme, name)
    raise AttributeError(name)
