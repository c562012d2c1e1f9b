"""The dynamo backend: ``torch.compile(model, backend="sandbox")``.

Inductor's ``compile_fx`` with an ``inner_compile`` that marks the compile as the
sandbox's (a ContextVar), so the one replaced ``fx_codegen_and_compile`` routes
the cache-miss graphs of this compile - and only of this compile - to a worker.
The lazily compiled backward goes through the same ``inner_compile``.
"""

from __future__ import annotations

import contextvars
import logging
import time
import warnings
from typing import Any, Sequence

from sandbox import runtime
from sandbox.isolation import compat
from sandbox.isolation.scheme import EagerFallback, IsolatedCompile
from sandbox.options import Options
from sandbox.telemetry.report import CACHE_HIT, FAILED, IN_PROCESS, CompileReport, Failure, Stage

log = logging.getLogger("sandbox")

_active: contextvars.ContextVar[IsolatedCompile | None] = contextvars.ContextVar("sandbox_active", default=None)


def _route() -> IsolatedCompile | None:
    return _active.get()


class ReportBuilder:
    """Fills one CompileReport while its graph compiles; published once, at the end."""

    def __init__(self, graph_kind: str, compile_id: str | None, location: tuple) -> None:
        co_name, filename, line = location
        self.t0 = time.time()
        self.report = CompileReport(
            run_id=runtime.run().run_id,
            compile_id=compile_id,
            graph_kind=graph_kind,
            outcome=CACHE_HIT,
            co_name=co_name,
            filename=filename,
            line=line,
            started_at=self.t0,
        )
        self.counters_before = compat.counters_snapshot()

    def stage(self, name: str, start: float, end: float, origin: str = "parent") -> None:
        self.report.stages.append(Stage(name, start, end, origin))

    def worker_events(self, events: list[dict], parent: str) -> None:
        """Turn the worker's chromium begin/end events into nested stages."""
        open_stages: list[tuple[str, float]] = []
        for e in events:
            ts = (e.get("ts") or 0) / 1e6
            if e.get("ph") == "B":
                open_stages.append((e["name"], ts))
            elif e.get("ph") == "E":
                for i in range(len(open_stages) - 1, -1, -1):
                    if open_stages[i][0] == e["name"]:
                        name, start = open_stages.pop(i)
                        enclosing = open_stages[i - 1][0] if i > 0 else parent
                        self.report.stages.append(Stage(name, start, ts, "worker", enclosing))
                        break

    def set_outcome(self, outcome: str, reason: str | None = None, worker_pid: int | None = None) -> None:
        self.report.outcome = outcome
        self.report.reason = reason
        self.report.worker_pid = worker_pid

    def fail(self, failure: Failure, fallback: str | None) -> None:
        self.report.outcome = FAILED
        self.report.failure = failure
        self.report.fallback = fallback
        self.report.worker_pid = failure.worker_pid

    def graph_size(self, gm: Any, example_inputs: Sequence[Any]) -> None:
        nodes = list(gm.graph.nodes)
        self.report.graph = {
            "nodes": len(nodes),
            "ops": sum(1 for n in nodes if n.op in ("call_function", "call_method", "call_module")),
            "inputs": len(example_inputs),
        }

    def worker_counters(self, deltas: dict) -> None:
        self.report.caches.setdefault("worker", {})
        for key in ("async_compile_cache_hit", "async_compile_cache_miss"):
            if key in deltas.get("inductor", {}):
                self.report.caches["worker"][key] = deltas["inductor"][key]

    def finish(self) -> CompileReport:
        r = self.report
        r.duration_s = time.time() - self.t0
        r.counters = compat.counter_deltas(self.counters_before, compat.counters_snapshot())
        inductor = r.counters.get("inductor", {})
        for result in ("hit", "miss", "bypass"):
            if inductor.get(f"fxgraph_cache_{result}"):
                r.caches["fx_graph"] = result
        if r.outcome == CACHE_HIT and r.reason is None:
            r.reason = "fx_graph_cache" if r.caches.get("fx_graph") == "hit" else "nothing to compile"
        runtime.publish(r)
        return r


def _graph_kind(kwargs: dict) -> str:
    if kwargs.get("is_backward"):
        return "backward"
    return "inference" if kwargs.get("is_inference") else "forward"


def sandbox_backend(gm: Any, example_inputs: Sequence[Any], mode: str | None = None, options: dict | None = None) -> Any:
    """The backend registered as ``"sandbox"``."""
    opts = Options.resolve(mode, options)
    runtime.ensure_seam(_route)
    runtime.get_pool(opts.workers)  # started already on resolve; resized if options ask for more
    location = compat.code_location()
    forward_compile_id = compat.current_compile_id()
    inner_calls = 0

    def inner_compile(gm: Any, example_inputs: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        nonlocal inner_calls
        inner_calls += 1
        kind = _graph_kind(kwargs)
        builder = ReportBuilder(kind, compat.current_compile_id() or forward_compile_id, location)
        scheme = IsolatedCompile(opts, builder, runtime.get_pool, runtime.cache_clock)
        token = _active.set(scheme)
        try:
            out = compat.compile_fx_inner(gm, example_inputs, *args, **kwargs)
            if not scheme.called and compat.counters_snapshot().get("inductor", {}).get("fxgraph_cache_hit", 0) == builder.counters_before.get("inductor", {}).get("fxgraph_cache_hit", 0):
                if builder.report.outcome == CACHE_HIT:
                    builder.set_outcome(IN_PROCESS, reason="empty graph: nothing to compile, runs as is")
            return out
        except Exception as e:
            fallback = _find(e, EagerFallback)
            if fallback is None:
                if builder.report.outcome != FAILED:
                    builder.fail(Failure("error", f"{type(e).__name__}: {e}"), fallback=None)
                raise
            warnings.warn(
                f"sandbox: {kind} graph {builder.report.compile_id} at {builder.report.where} runs uncompiled "
                f"(eager): its compile failed ({fallback.failure.kind}: {fallback.failure.message}). "
                f"Set on_failure='raise' to stop instead, or 'in_process' to compile it in this process.",
                RuntimeWarning,
                stacklevel=2,
            )
            return compat.eager_callable(gm)
        finally:
            _active.reset(token)
            builder.finish()

    counters_before = compat.counters_snapshot()
    t0 = time.time()
    compiled = compat.compile_fx(gm, example_inputs, inner_compile=inner_compile, config_patches=dict(opts.inductor))
    if inner_calls == 0:
        _report_aot_cache_hit(gm, example_inputs, forward_compile_id, location, counters_before, t0)
    return compiled


def _report_aot_cache_hit(gm: Any, example_inputs: Sequence[Any], compile_id: str | None, location: tuple, before: dict, t0: float) -> None:
    """An AOTAutograd cache hit loads the compiled graphs without any inner compile."""
    import torch

    deltas = compat.counter_deltas(before, compat.counters_snapshot())
    aot = deltas.get("aot_autograd", {})
    training = torch.is_grad_enabled() and any(getattr(x, "requires_grad", False) for x in example_inputs)
    kinds = ["forward", "backward"] if training else ["inference"]
    for kind in kinds:
        b = ReportBuilder(kind, compile_id, location)
        b.counters_before = before
        b.t0 = t0
        b.report.started_at = t0
        b.set_outcome(CACHE_HIT, reason="aot_autograd_cache" if aot.get("autograd_cache_hit") else "no compile needed")
        b.report.caches["aot_autograd"] = "hit" if aot.get("autograd_cache_hit") else "none"
        b.finish()


def _find(e: BaseException | None, cls: type) -> Any:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, cls):
            return e
        e = getattr(e, "inner_exception", None) or e.__cause__ or e.__context__
    return None


def __getattr__(name: str) -> Any:
    # The entry point names ``sandbox.backend:resolved``: resolving the backend
    # (at ``torch.compile(...)``) starts the workers in the background, so the first
    # graph does not wait for a cold interpreter.
    if name == "resolved":
        if not runtime.in_worker():
            try:
                runtime.get_pool(Options.resolve().workers)
            except Exception:
                log.warning("sandbox: could not pre-start workers; they start on first compile", exc_info=True)
        return sandbox_backend
    raise AttributeError(name)
