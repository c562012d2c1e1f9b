"""torch's own debugging tools across the boundary: TORCH_TRACE, TORCH_LOGS, TORCH_COMPILE_DEBUG, profiler.

Private symbols touched here: torch._logging._internal.trace_log (the "torch.__trace" logger behind
TORCH_TRACE and tlparse), trace_structured; torch._logging.structured.intern_string;
torch._inductor.compile_fx_ext._LoggerState (its ``loggers``); torch._inductor.virtualized.V
(``V.debug``, the DebugContext of the graph being compiled, its ``_path``);
torch._dynamo.config.debug_dir_root; torch._guards.CompileId, CompileContext.current_trace_id;
torch._logging._internal.log_state.artifact_names, loggers' ``artifact_name``, the trace record's
``metadata``/``payload`` (TorchLogsFormatter); torch.autograd._profiler_enabled. Written against
torch 2.13.0; not run on 2.11 here (the symbols are older than 2.11).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

log = logging.getLogger("sandbox")


def trace_logger() -> logging.Logger:
    """The logger TORCH_TRACE writes through (one handler per trace file; none when off)."""
    from torch._logging._internal import trace_log

    return trace_log


def tracing() -> bool:
    """True when this process writes a structured trace (``trace_structured``'s own test)."""
    return bool(trace_logger().handlers)


def intern_string(s: str) -> int:
    """This process's id for ``s`` in the trace's string table (writes its ``str`` record once)."""
    from torch._logging.structured import intern_string as intern

    return intern(s)


def trace_artifact(name: str, payload: str, compile_id: str | None) -> None:
    """One ``artifact`` record (JSON payload) in the structured trace, under ``compile_id``."""
    from torch._guards import CompileId
    from torch._logging._internal import trace_structured

    cid = None
    if compile_id:
        try:
            cid = CompileId.from_string(compile_id)
        except Exception:
            cid = None
    # Outside any compile (a graph finished later, in async mode) the record still gets the
    # graph's compile id, as attempt 0, from a compile context of its own.
    outside = cid is not None and torch._guards.CompileContext.current_trace_id() is None
    with torch._guards.compile_context(torch._guards.CompileContext(cid)) if outside else contextlib.nullcontext():
        trace_structured(
            "artifact",
            metadata_fn=lambda: {"name": name, "encoding": "json"},
            payload_fn=lambda: payload,
            expect_trace_id=False,
            compile_id=cid,
        )


def no_stock_log_capture() -> Any:
    """A ``_LoggerState`` that captures nothing: the sandbox carries the worker's log
    records itself (``sandbox/isolation/torch_tools.py``), every torch logger, in order."""
    from torch._inductor import compile_fx_ext as ext

    state = ext._LoggerState.__new__(ext._LoggerState)
    state.loggers = {}
    return state


def debug_dir() -> str | None:
    """The TORCH_COMPILE_DEBUG folder of the graph this thread is compiling, or None
    (``V.debug`` is the DebugContext that ``compile_fx_inner`` entered)."""
    from torch._inductor.virtualized import V

    try:
        path = getattr(V.debug, "_path", None)
    except Exception:
        return None
    return path if isinstance(path, str) else None


@contextlib.contextmanager
def debug_dir_root(root: str) -> Iterator[None]:
    """Worker side: TORCH_COMPILE_DEBUG folders go under ``root`` meanwhile."""
    from torch._dynamo import config as dynamo_config

    previous = dynamo_config.debug_dir_root
    dynamo_config.debug_dir_root = root
    try:
        yield
    finally:
        dynamo_config.debug_dir_root = previous


def profiler_enabled() -> bool:
    """True while a ``torch.profiler`` (or autograd profiler) records this process."""
    return bool(torch.autograd._profiler_enabled())


def debug_config() -> dict[str, Any]:
    """Inductor's ``trace.*`` settings (what TORCH_COMPILE_DEBUG writes): they are not part
    of the portable config that crosses with a graph. ``trace.debug_dir`` stays here."""
    from torch._inductor import config

    return {
        k: v
        for k, v in config.get_config_copy().items()
        if k.startswith("trace.")
        and k not in ("trace.debug_dir", "trace.upload_tar")
        and (v is None or isinstance(v, (bool, int, float, str)))
    }


@contextlib.contextmanager
def inductor_config(patch: dict[str, Any]) -> Iterator[None]:
    from torch._inductor import config

    with config.patch({**patch, "trace.debug_dir": None} if patch else {}):
        yield


def current_trace_fields() -> dict[str, int]:
    """The structured trace's compile-id fields of the compile in progress here
    (``CompileContext.current_trace_id()``: frame, compile, attempt), or {}."""
    trace_id = torch._guards.CompileContext.current_trace_id()
    if trace_id is None:
        return {}
    cid = trace_id.compile_id
    out = {"attempt": trace_id.attempt}
    for name in ("compiled_autograd_id", "frame_id", "frame_compile_id"):
        value = getattr(cid, name, None)
        if value is not None:
            out[name] = value
    return out


def enabled_artifacts() -> list[str]:
    """The TORCH_LOGS artifacts this process has on (``torch._logging._internal.log_state``),
    for artifact loggers that exist only in the worker (a module this process never imported)."""
    from torch._logging._internal import log_state

    return sorted(log_state.artifact_names)


def artifact_name(logger: logging.Logger) -> str | None:
    """The TORCH_LOGS artifact a logger serves (``getArtifactLogger`` sets ``artifact_name``), or None."""
    name = getattr(logger, "artifact_name", None)
    return name if isinstance(name, str) else None


def trace_record_parts(record: logging.LogRecord) -> tuple[Any, str | None]:
    """A ``torch.__trace`` record's metadata and payload (``trace_structured`` passes them as ``extra``)."""
    return getattr(record, "metadata", {}), getattr(record, "payload", None)


def make_trace_record(fields: dict[str, Any], metadata: Any, payload: str | None) -> logging.LogRecord:
    """A record that torch's trace handler (``TorchLogsFormatter(trace=True)``) writes as it
    writes its own: the line prefix from ``fields``, then the metadata and the payload."""
    record = logging.makeLogRecord(fields)
    record.metadata = metadata  # type: ignore[attr-defined]
    record.payload = payload  # type: ignore[attr-defined]
    return record
