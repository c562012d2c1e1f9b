"""OpenTelemetry spans from reports: one span per graph, a child span per stage.

The worker needs no SDK: its stages come back as timed events, and spans are made
here with the recorded timestamps, under the caller's span when there was one.
The application's own TracerProvider is used when it set one; otherwise a private
provider exports over OTLP configured by the standard ``OTEL_*`` variables (never
installed globally: a library does not take over the application's telemetry).
A collector that is down or slow costs a bounded export in a background thread,
one warning, and never an exception in the user's code.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import uuid
from typing import Any

from sandbox.env import VARIABLES
from sandbox.env import get as env_get
from sandbox.record import context, stages
from sandbox.record.report import FAILED, CompileReport, Run
from sandbox.sinks.base import Sink

log = logging.getLogger("sandbox")

_ATTR_PREFIX = "sandbox."


def _timeout_s() -> float:
    """SANDBOX_OTLP_TIMEOUT_S: how long one export may take, retries included."""
    try:
        return max(float(env_get("SANDBOX_OTLP_TIMEOUT_S")), 0.1)
    except ValueError:
        return float(VARIABLES["SANDBOX_OTLP_TIMEOUT_S"].default)


def _exit_s() -> float:
    """SANDBOX_OTLP_EXIT_S: how long the exit may wait for the last spans to go out."""
    try:
        return max(float(env_get("SANDBOX_OTLP_EXIT_S")), 0.0)
    except ValueError:
        return float(VARIABLES["SANDBOX_OTLP_EXIT_S"].default)


# Set while the sandbox's own exporter runs in this thread: the OTLP exporter's log lines (one per
# retry) are then dropped, since the sandbox says it once, in its own words.
_exporting = threading.local()


class _OwnExportOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_exporting, "active", False)


def _quiet(exporter: Any) -> None:
    """Drop the exporter's own retry and failure lines while the sandbox exports (not the application's)."""
    for cls in type(exporter).__mro__:
        logger = logging.getLogger(cls.__module__)
        if not any(isinstance(f, _OwnExportOnly) for f in logger.filters):
            logger.addFilter(_OwnExportOnly())


def _ns(t: float) -> int:
    return int(t * 1e9)


def _report_attributes(r: CompileReport) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "sandbox.run_id": r.run_id,
        "sandbox.report_id": r.report_id,
        "sandbox.graph_kind": r.graph_kind,
        "sandbox.outcome": r.outcome,
        "sandbox.graph_index": r.graph_index,
        "torch.compile.compile_id": r.compile_id or "",
        "torch.compile.chromium_id": r.chromium_id or "",
        "code.function": r.co_name or "",
        "code.filepath": r.filename or "",
        "code.lineno": r.line or 0,
    }
    optional = {
        "sandbox.reason": r.reason,
        "sandbox.fallback": r.fallback,
        "sandbox.worker_pid": r.worker_pid,
        "sandbox.rank": r.rank,
        "sandbox.local_rank": r.local_rank,
        "sandbox.world_size": r.world_size,
        "sandbox.job": getattr(r, "job", None),
        "torch.compile.graph.nodes": r.graph.get("nodes"),
        "torch.compile.graph.ops": r.graph.get("ops"),
        "torch.compile.graph.inputs": r.graph.get("inputs"),
        "torch.compile.kernels": len(r.kernels) if r.kernels else None,
        "torch.compile.fx_graph_cache": (r.caches.get("fx_graph") or {}).get("state"),
        "torch.compile.aot_autograd_cache": (r.caches.get("aot_autograd") or {}).get("state"),
        # Compiled in the background: eager calls meanwhile, when the compiled graph took over.
        "sandbox.background": getattr(r, "background", None),
        "sandbox.eager_calls": getattr(r, "eager_calls", None) if getattr(r, "background", None) else None,
        "sandbox.background_s": getattr(r, "background_s", None),
        "sandbox.ready_at": getattr(r, "ready_at", None),
        "sandbox.switched_at": getattr(r, "switched_at", None),
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    return attrs


class _GuardedExporter:
    """Wraps a SpanExporter: failures become one warning, never an exception."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.warned = False
        self._lock = threading.Lock()
        _quiet(inner)

    def warn(self, why: str) -> None:
        """One line, once per process: a logging warning (Python prints it as a bare line when the
        application configured no logging, and in the application's format when it did)."""
        with self._lock:
            if self.warned:
                return
            self.warned = True
        log.warning(
            "sandbox: could not export compile spans over OTLP (%s); compiles and reports are unaffected. "
            "Check OTEL_EXPORTER_OTLP_ENDPOINT or turn tracing off (SANDBOX_TRACE=0).",
            why,
        )

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult  # optional dependency: tracing only

        _exporting.active = True
        try:
            result = self.inner.export(spans)
        except Exception as e:  # noqa: BLE001
            self.warn(f"{type(e).__name__}: {e}")
            return SpanExportResult.FAILURE
        finally:
            _exporting.active = False
        if result != SpanExportResult.SUCCESS:
            self.warn(f"the collector did not accept them ({result.name})")
        return result

    def shutdown(self) -> None:
        _exporting.active = True
        try:
            self.inner.shutdown()
        except Exception:
            pass
        finally:
            _exporting.active = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return bool(self.inner.force_flush(timeout_millis))
        except Exception:
            return False


def _exporter_from_env() -> Any:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    ).strip()
    if protocol == "grpc":
        # The exporters are optional dependencies: imported only when tracing exports over OTLP.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[no-redef]
    else:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: expected 'grpc' or 'http/protobuf'")
    # Bound each export, retries included, by SANDBOX_OTLP_TIMEOUT_S: the SDK's
    # BatchSpanProcessor ignores its export_timeout_millis; only the exporter's own
    # timeout (10 s by default) bounds an export. The OTEL_* timeout variables still win.
    if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT"):
        return OTLPSpanExporter()
    return OTLPSpanExporter(timeout=_timeout_s())


def _application_provider() -> Any | None:
    from opentelemetry import trace  # optional dependency: tracing only

    provider = trace.get_tracer_provider()
    if type(provider).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider"):
        return None
    return provider


def resource_attributes(run: Run | None) -> dict[str, Any]:
    """The private provider's resource: ``service.name``, and what tells one process of a
    job from the others: ``service.instance.id`` (this process's run id, the ``run_id`` of
    its reports and of its run in the store), ``host.name``, ``process.pid``, and under
    torchrun ``sandbox.job`` / ``sandbox.rank`` / ``sandbox.local_rank`` /
    ``sandbox.world_size``. ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` win."""
    if run is not None and run.pid != os.getpid():
        run = None
    attrs: dict[str, Any] = {
        "service.name": os.environ.get("OTEL_SERVICE_NAME", "torch-compile-sandbox"),
        "service.instance.id": run.run_id if run is not None else uuid.uuid4().hex,
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
    }
    dist = context.distributed()
    job = run.job if run is not None else None
    for key, value in (
        ("sandbox.job", job),
        ("sandbox.rank", dist["rank"]),
        ("sandbox.local_rank", dist["local_rank"]),
        ("sandbox.world_size", dist["world_size"]),
    ):
        if value is not None:
            attrs[key] = value
    from_env = {}
    for item in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = item.partition("=")
        if key.strip() and value:
            from_env[key.strip()] = value.strip()
    return {k: v for k, v in attrs.items() if k not in from_env or k == "service.name"}


class OtelSink(Sink):
    """Turns each report into spans. ``provider=None``: the application's, else a private OTLP one."""

    name = "otel"

    def __init__(self, provider: Any = None, run: Run | None = None) -> None:
        from opentelemetry import trace  # optional dependency: tracing only

        self._own = None
        if provider is None:
            provider = _application_provider()
        if provider is None:
            from opentelemetry.sdk.resources import Resource  # optional dependency: tracing only
            from opentelemetry.sdk.trace import TracerProvider  # optional dependency: tracing only
            from opentelemetry.sdk.trace.export import BatchSpanProcessor  # optional dependency: tracing only

            resource = Resource.create(resource_attributes(run))
            # Not shut down by the SDK's own exit hook, which waits out every retry to a dead collector:
            # shutdown() below bounds the exit by SANDBOX_OTLP_EXIT_S.
            provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            timeout_ms = int(_timeout_s() * 1000)
            self._exporter = _GuardedExporter(_exporter_from_env())
            provider.add_span_processor(BatchSpanProcessor(self._exporter, export_timeout_millis=timeout_ms))
            self._own = provider
        self.provider = provider
        self.tracer = trace.get_tracer("sandbox", tracer_provider=provider)

    def consume(self, report: CompileReport) -> None:
        # Dynamo saves Python's global ``random`` state before a frame compile and puts it
        # back afterwards (eval_frame_cpp.cpp); the SDK's RandomIdGenerator draws span and
        # trace ids from that state. Ids drawn while a graph compiles would be drawn again by
        # the next graph's spans (or the application's next span): draw ours from fresh
        # entropy and leave the global state as it was.
        state = random.getstate()
        random.seed()
        try:
            self._emit(report)
        finally:
            random.setstate(state)

    def _emit(self, report: CompileReport) -> None:
        from opentelemetry import trace  # optional dependency: tracing only
        from opentelemetry.trace import (  # optional dependency: tracing only
            NonRecordingSpan,
            SpanContext,
            Status,
            StatusCode,
            TraceFlags,
        )

        ctx = None
        if report.trace_id and report.parent_span_id:
            parent = SpanContext(
                trace_id=int(report.trace_id, 16),
                span_id=int(report.parent_span_id, 16),
                is_remote=False,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
            ctx = trace.set_span_in_context(NonRecordingSpan(parent))
        start = report.started_at
        end = report.started_at + report.duration_s
        # A graph compiled in the background: the span covers the compile and the switch.
        end = max([end, *(s.end for s in report.stages), getattr(report, "switched_at", None) or end])
        root = self.tracer.start_span(
            f"torch.compile {report.graph_kind} graph",
            context=ctx,
            kind=trace.SpanKind.INTERNAL,
            attributes=_report_attributes(report),
            start_time=_ns(start),
        )
        if report.outcome == FAILED and report.failure is not None:
            f = report.failure
            event = {"sandbox.failure.kind": f.kind, "exception.message": f.message[:1000]}
            if f.exit_code is not None:
                event["sandbox.failure.exit_code"] = f.exit_code
            if f.signal:
                event["sandbox.failure.signal"] = f.signal
            if f.worker_pid:
                event["sandbox.worker_pid"] = f.worker_pid
            root.add_event("sandbox.failure", event, timestamp=_ns(end))
            root.set_status(Status(StatusCode.ERROR, f"{f.kind}: {f.message[:200]}"))
        if getattr(report, "switched_at", None):
            root.add_event(
                "sandbox.switch", {"sandbox.eager_calls": report.eager_calls}, timestamp=_ns(report.switched_at)
            )
        spans: dict[int, Any] = {}
        for i, _depth, parent in stages.walk(report.stages):
            stage = report.stages[i]
            spans[i] = self.tracer.start_span(
                stage.name,
                context=trace.set_span_in_context(root if parent is None else spans[parent]),
                attributes={"sandbox.stage.origin": stage.origin, "sandbox.graph_kind": report.graph_kind},
                start_time=_ns(stage.start),
            )
        for i, span in spans.items():
            span.end(end_time=_ns(report.stages[i].end))
        root.end(end_time=_ns(end))

    def flush(self, timeout_s: float | None = None) -> bool:
        try:
            return bool(self.provider.force_flush(int((_timeout_s() if timeout_s is None else timeout_s) * 1000)))
        except Exception:  # noqa: BLE001 - telemetry never breaks the job
            return False

    def shutdown(self) -> None:
        """Deliver what is left within SANDBOX_OTLP_EXIT_S, then let the process go: an export still
        retrying is left to its daemon thread, and said once."""
        if self._own is not None:
            own, self._own = self._own, None

            def close() -> None:
                try:
                    own.shutdown()
                except Exception:  # noqa: BLE001 - telemetry never breaks the job
                    pass

            closing = threading.Thread(target=close, name="sandbox-otel-shutdown", daemon=True)
            closing.start()
            closing.join(_exit_s())
            if closing.is_alive():
                self._exporter.warn(f"the last spans were not delivered within {_exit_s():g} s of exit")
