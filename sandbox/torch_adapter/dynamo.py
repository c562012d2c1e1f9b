"""Dynamo's state around a compile: counters, compile ids, the user's code location, the compile lock,
and why dynamo compiled a graph (where it ended, which guard failed, which input dims are symbolic).

Private symbols touched here: torch._dynamo.utils.counters, torch._guards.CompileContext,
TracingContext, torch._dynamo.convert_frame.compile_lock;
torch._functorch.config.force_non_lazy_backward_lowering, enable_autograd_cache; the GraphModule's
``compile_subgraph_reason`` (torch._dynamo.output_graph.GraphCompileReason), the metrics context's
``recompile_reason`` (torch._dynamo.utils.get_metrics_context, MetricsContext._metrics), the
placeholders' ``meta["example_value"]``; torch._dynamo.exc.ShortenTraceback (errors that reach the user
as themselves).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch

log = logging.getLogger("sandbox")


def counters_snapshot() -> dict[str, dict[str, int]]:
    from torch._dynamo.utils import counters

    return {group: dict(c) for group, c in counters.items()}


def counter_deltas(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for group, values in after.items():
        prev = before.get(group, {})
        d = {k: v - prev.get(k, 0) for k, v in values.items() if v != prev.get(k, 0)}
        if d:
            out[group] = d
    return out


def apply_counter_deltas(deltas: dict[str, dict[str, int]]) -> None:
    """Add a worker's counter deltas to this process's ``counters``, as if compiled here."""
    from torch._dynamo.utils import counters

    for group, values in deltas.items():
        for key, n in values.items():
            counters[group][key] += n


def current_compile_id() -> str | None:
    cid = torch._guards.CompileContext.current_compile_id()
    return str(cid) if cid is not None else None


def code_location() -> tuple[str | None, str | None, int | None]:
    """(co_name, filename, first line) of the user frame dynamo is compiling
    (``torch._dynamo.symbolic_convert.InstructionTranslator.current_tx``)."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
    except Exception:
        tx = None
    code = getattr(tx, "f_code", None)
    if code is None:
        return None, None, None
    return code.co_name, code.co_filename, code.co_firstlineno


@contextlib.contextmanager
def compile_lock_released() -> Iterator[None]:
    """Let other threads' dynamo compiles proceed while this thread only waits for a worker.

    Dynamo holds the re-entrant ``convert_frame.compile_lock`` for a whole frame
    compile; waiting on a worker needs none of the state it guards. One piece of
    process-global state spans the wait: ``_compile_fx_inner`` opens
    ``TritonBundler`` (class attributes; ``begin_compile`` asserts none is open)
    before ``fx_codegen_and_compile`` and closes it after. This thread's bundle is
    set aside while the lock is released and put back once it is re-acquired, so
    whoever holds the lock owns the bundler.
    """
    from torch._dynamo.convert_frame import compile_lock
    from torch._inductor.triton_bundler import TritonBundler

    if not compile_lock._is_owned():  # type: ignore[attr-defined]
        yield
        return
    fields = ("_entries", "_static_autotuners", "_winners")
    bundle = {f: getattr(TritonBundler, f, None) for f in fields if hasattr(TritonBundler, f)}
    for f in bundle:
        setattr(TritonBundler, f, None)
    state = compile_lock._release_save()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        compile_lock._acquire_restore(state)  # type: ignore[attr-defined]
        for f, value in bundle.items():
            setattr(TritonBundler, f, value)


@contextlib.contextmanager
def compile_context(compile_id: str | None) -> Iterator[None]:
    """Enter dynamo's compile context under ``compile_id`` (worker side), so the
    worker's events carry the parent's compile id."""
    if not compile_id:
        yield
        return
    from torch._guards import CompileContext, CompileId

    try:
        cid = CompileId.from_string(compile_id)
    except Exception:
        yield
        return
    with torch._guards.compile_context(CompileContext(cid)):
        yield


def non_lazy_backward() -> Any:
    """AOTAutograd compiles the backward graph right after the forward graph
    (``force_non_lazy_backward_lowering``), not at the first backward call."""
    return torch._functorch.config.patch(force_non_lazy_backward_lowering=True)


def no_autograd_cache() -> Any:
    """AOTAutograd neither looks its cache up nor writes it (``enable_autograd_cache``): each graph of
    the compile goes through Inductor's inner compile, where an FX graph cache hit still loads it."""
    return torch._functorch.config.patch(enable_autograd_cache=False)


def autograd_cache_on() -> bool:
    """Whether AOTAutograd looks its local cache up and writes it (``enable_autograd_cache``): a
    process that waited for another's compile of a graph loads the pair from there."""
    return bool(torch._functorch.config.enable_autograd_cache)


# Why dynamo compiled this graph -------------------------------------------------------------

REASON_CHARS = 500
MAX_FRAMES = 5
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _one_line(text: str, limit: int = REASON_CHARS) -> str:
    """``text`` with its whitespace runs (newlines included) collapsed, cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def compile_reason(gm: Any) -> dict[str, Any] | None:
    """Why dynamo ended the graph where it did (``gm.compile_subgraph_reason``, set on the
    GraphModule a backend receives): ``{"graph_break", "reason", "frames"}``, the user's frames
    innermost last, those inside torch left out. None outside dynamo."""
    try:
        why = getattr(gm, "compile_subgraph_reason", None)
        if why is None:
            return None
        frames = [
            {"file": f.filename, "line": f.lineno, "function": f.name}
            for f in (why.user_stack or [])
            if not str(f.filename).startswith(_TORCH_DIR)
        ]
        return {
            "graph_break": bool(why.graph_break),
            "reason": _one_line(why.reason),
            "frames": frames[-MAX_FRAMES:],
        }
    except Exception:  # a record of why is a nicety: never fail a compile for it
        log.debug("sandbox: no compile reason", exc_info=True)
        return None


def recompile_reason() -> str | None:
    """The guard failure that made dynamo compile this frame again, as dynamo wrote it
    (``"<earlier compile id>: <guard failure>"``); None on a frame's first compile, or outside
    a dynamo compile. ``convert_frame._compile`` puts it into the metrics context before it
    calls the backend."""
    try:
        from torch._dynamo.utils import get_metrics_context

        ctx = get_metrics_context()
        if not ctx.in_progress():
            return None
        reason = ctx._metrics.get("recompile_reason")
        return _one_line(reason) if reason else None
    except Exception:  # a record of why is a nicety: never fail a compile for it
        log.debug("sandbox: no recompile reason", exc_info=True)
        return None


def symbolic_inputs(gm: Any) -> dict[int, Any]:
    """Per input index of dynamo's graph, the traced (fake) value of each input whose shape
    is symbolic (dynamic shapes); the example inputs a backend gets hold concrete sizes."""
    out: dict[int, Any] = {}
    try:
        for i, node in enumerate(gm.graph.find_nodes(op="placeholder")):
            shape = getattr(node.meta.get("example_value"), "shape", None)
            if shape is not None and not all(isinstance(d, int) for d in shape):
                out[i] = node.meta["example_value"]
    except Exception:  # a record of why is a nicety: never fail a compile for it
        log.debug("sandbox: no symbolic inputs", exc_info=True)
    return out


_TO_USER: dict[type, type] = {}


def _no_real_stack(self: BaseException) -> Any:
    raise AttributeError("real_stack")


def raise_to_user(error: BaseException) -> None:
    """Raise ``error`` from a backend so that it reaches the user's ``torch.compile``'d call as itself.

    Dynamo wraps whatever a backend raises in ``BackendCompilerFailed`` with its own frames, except a
    ``ShortenTraceback``, which it re-raises with those frames cut. A subclass of both the error's
    type and ShortenTraceback keeps ``except OptionError`` working and the traceback short.
    """
    from torch._dynamo.exc import ShortenTraceback

    cls = type(error)
    sub = _TO_USER.get(cls)
    if sub is None:
        sub = type(
            cls.__name__, (cls, ShortenTraceback), {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        )
        sub.__init__ = BaseException.__init__  # type: ignore[method-assign]
        sub.remove_dynamo_frames = lambda self: self.with_traceback(None)  # type: ignore[attr-defined]
        # Dynamo appends "from user code" and a TORCHDYNAMO_VERBOSE hint to errors that carry a
        # ``real_stack``, which its tracing contexts attach on the way out: this one never has one.
        sub.real_stack = property(_no_real_stack, lambda self, value: None)  # type: ignore[attr-defined]
        sub.__str__ = lambda self: str(self.args[0]).rstrip("\n") if self.args else ""  # and a newline to args[0]
        _TO_USER[cls] = sub
    shown = sub(*error.args)
    shown.first_useful_frame = None  # type: ignore[attr-defined]
    raise shown from None
