"""Tests of torch's own debugging tools (``sandbox/torch_adapter/debug_tools.py``):
TORCH_TRACE, TORCH_LOGS, TORCH_COMPILE_DEBUG and the profiler.

One test per touch point of a private PyTorch API, each naming the symbols it relies on.
Written against torch 2.13.0: when a torch release moves or changes one of these symbols,
the test for it fails here, by name, instead of deep inside a user's compile."""

from __future__ import annotations

import time
from typing import Any

import torch

from sandbox.torch_adapter import debug_tools


class _TraceRecords(__import__("logging").Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[Any] = []

    def emit(self, record: Any) -> None:
        self.records.append(record)


def test_trace_logger_tracing_and_artifacts() -> None:
    """torch 2.13.0: ``torch._logging._internal.trace_log`` is the ``torch.__trace`` logger;
    ``trace_structured`` writes only when it has handlers, puts the compile id's frame,
    compile and attempt into the metadata and the payload beside it; ``intern_string``
    (``torch._logging.structured``) writes a ``str`` record the first time only."""
    trace_log = debug_tools.trace_logger()
    assert trace_log.name == "torch.__trace"
    saved = list(trace_log.handlers)
    rec = _TraceRecords()
    try:
        trace_log.handlers[:] = []
        assert not debug_tools.tracing()
        debug_tools.trace_artifact("sandbox_compat_test", "{}", "3/1")  # nobody listens: nothing built
        trace_log.handlers[:] = [rec]
        assert debug_tools.tracing()
        debug_tools.trace_artifact("sandbox_compat_test", '{"a": 1}', "3/1")
        [r] = rec.records
        assert r.metadata["artifact"] == {"name": "sandbox_compat_test", "encoding": "json"}
        assert (r.metadata["frame_id"], r.metadata["frame_compile_id"]) == (3, 1) and r.payload == '{"a": 1}'
        assert r.metadata["attempt"] == 0  # outside a compile: a compile context of its own
        s = f"sandbox-compat-test-{time.time_ns()}"
        first = debug_tools.intern_string(s)
        assert debug_tools.intern_string(s) == first
        strs = [r.metadata["str"] for r in rec.records if "str" in r.metadata]
        assert strs == [[s, first]] or strs == [(s, first)], strs
    finally:
        trace_log.handlers[:] = saved


def test_current_trace_fields() -> None:
    """torch 2.13.0: ``CompileContext.current_trace_id()`` is a ``TraceId(compile_id, attempt)``
    inside ``torch._guards.compile_context``; None outside."""
    from torch._guards import CompileContext, CompileId, compile_context

    assert debug_tools.current_trace_fields() == {}
    ctx = CompileContext(CompileId(frame_id=4, frame_compile_id=2))
    ctx.attempt = 1
    with compile_context(ctx):
        assert debug_tools.current_trace_fields() == {"frame_id": 4, "frame_compile_id": 2, "attempt": 1}


def test_no_stock_log_capture() -> None:
    """torch 2.13.0: ``compile_fx_ext._LoggerState`` is a context manager that attaches a
    queue handler to each logger in ``loggers`` (name -> level) and returns the captured
    records on ``finish()``; with none, it captures nothing and pickles."""
    import logging
    import pickle

    state = pickle.loads(pickle.dumps(debug_tools.no_stock_log_capture()))
    assert state.loggers == {}
    before = list(logging.getLogger("torch._inductor").handlers)
    with state as captured:
        assert logging.getLogger("torch._inductor").handlers == before
        logging.getLogger("torch._inductor").warning("sandbox compat test: not captured by the stock state")
    assert captured.finish() == []


def test_debug_dir_config_and_root(tmp_path: Any) -> None:
    """torch 2.13.0: ``V.debug`` is the ``DebugContext`` entered around a compile, its ``_path``
    the graph's folder under ``torch._dynamo.config.debug_dir_root`` when ``trace.enabled``;
    ``trace.*`` settings are in ``config.get_config_copy()``, not in the portable config."""
    from torch._inductor import config
    from torch._inductor.debug import DebugContext

    assert debug_tools.debug_dir() is None
    cfg = debug_tools.debug_config()
    assert "trace.enabled" in cfg and "trace.debug_dir" not in cfg and "trace.upload_tar" not in cfg
    assert not any(k.startswith("trace.") for k in config.save_config_portable())
    with debug_tools.debug_dir_root(str(tmp_path)), debug_tools.inductor_config({**cfg, "trace.enabled": True}):
        assert debug_tools.debug_config()["trace.enabled"] and config.trace.debug_dir is None
        with DebugContext():
            path = debug_tools.debug_dir()
    assert path is not None and path.startswith(str(tmp_path)) and "torchinductor" in path
    assert not config.trace.enabled or cfg["trace.enabled"]


def test_enabled_artifacts() -> None:
    """torch 2.13.0: ``torch._logging._internal.log_state.artifact_names`` holds the artifacts
    ``set_logs`` / TORCH_LOGS turned on; an artifact logger knows its ``artifact_name``."""
    from torch._logging._internal import getArtifactLogger

    assert "output_code" not in debug_tools.enabled_artifacts()
    torch._logging.set_logs(output_code=True)
    try:
        assert "output_code" in debug_tools.enabled_artifacts()
        assert getArtifactLogger("torch._inductor.sandbox_compat_test", "output_code").artifact_name == "output_code"
    finally:
        torch._logging.set_logs()
    assert "output_code" not in debug_tools.enabled_artifacts()


def test_trace_records_and_artifact_loggers() -> None:
    """torch 2.13.0: ``trace_structured`` hands its handlers a record with ``metadata`` and
    ``payload`` (``extra``); ``TorchLogsFormatter(trace=True)`` writes a made record the same
    way; ``getArtifactLogger`` marks its logger with ``artifact_name``."""
    import logging

    from torch._logging._internal import TorchLogsFormatter, getArtifactLogger

    trace_log = debug_tools.trace_logger()
    saved = list(trace_log.handlers)
    rec = _TraceRecords()
    try:
        trace_log.handlers[:] = [rec]
        debug_tools.trace_artifact("sandbox_compat_test", '{"b": 2}', "1/0")
    finally:
        trace_log.handlers[:] = saved
    metadata, payload = debug_tools.trace_record_parts(rec.records[0])
    assert metadata["artifact"]["name"] == "sandbox_compat_test" and payload == '{"b": 2}'
    fields = {
        "name": "torch.__trace",
        "levelno": 10,
        "levelname": "DEBUG",
        "pathname": "/x/y.py",
        "lineno": 7,
        "created": 1.0,
        "msecs": 0.0,
        "process": 4242,
        "msg": "",
    }
    line = TorchLogsFormatter(trace=True).format(debug_tools.make_trace_record(fields, metadata, payload))
    assert " 4242 " in line and '"sandbox_compat_test"' in line and line.endswith('\t{"b": 2}'), line
    assert (
        debug_tools.artifact_name(getArtifactLogger("torch._inductor.sandbox_compat_test", "output_code"))
        == "output_code"
    )
    assert debug_tools.artifact_name(logging.getLogger("torch._inductor")) is None


def test_profiler_enabled() -> None:
    """torch 2.13.0: ``torch.autograd._profiler_enabled()`` is True inside ``torch.profiler.profile``."""
    assert not debug_tools.profiler_enabled()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        assert debug_tools.profiler_enabled()
    assert not debug_tools.profiler_enabled()
