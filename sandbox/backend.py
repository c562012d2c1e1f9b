"""The dynamo backend: ``torch.compile(model, backend="sandbox")``.

Inductor's ``compile_fx`` with an ``inner_compile`` that marks the compile as the
sandbox's (a ContextVar), so the one replaced ``fx_codegen_and_compile`` routes
the cache-miss graphs of this compile - and only of this compile - to a worker.
The lazily compiled backward goes through the same ``inner_compile``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from sandbox import prestart, runtime
from sandbox.isolation import deferred, graph_flight, service_client
from sandbox.isolation.scheme import (
    EagerFallback,
    IsolatedCompile,
    SandboxCompileError,
    UnpicklableGraphError,
    input_devices,
)
from sandbox.options import OptionError, Options
from sandbox.record.builder import ReportBuilder, dynamo_graph
from sandbox.record.report import CACHE_HIT, FAILED, IN_PROCESS, Failure
from sandbox.torch_adapter import caches, dynamo, events, remote_cache, seam, warmup

log = logging.getLogger("sandbox")

_active: contextvars.ContextVar[IsolatedCompile | None] = contextvars.ContextVar("sandbox_active", default=None)


def _route() -> IsolatedCompile | None:
    return _active.get()


def _graph_kind(kwargs: dict) -> str:
    if kwargs.get("is_backward"):
        return "backward"
    return "inference" if kwargs.get("is_inference") else "forward"


def _builder(kind: str, compile_id: str | None, location: tuple, publish: Any = None) -> ReportBuilder:
    rt = runtime.current()
    return ReportBuilder(rt.run().run_id, kind, compile_id, location, publish or rt.publish, rt.republish)


def _training(example_inputs: Sequence[Any]) -> bool:
    return torch.is_grad_enabled() and any(getattr(x, "requires_grad", False) for x in example_inputs)


def _background(opts: Options, training: bool) -> str | None:
    """How this frame's graphs compile: ``deferred.ASYNC`` (eager until compiled),
    ``deferred.WAIT`` (forward and backward side by side in two workers, each waited for
    at its first call) or None (waited for inside the compile)."""
    if opts.async_:
        return deferred.ASYNC
    if opts.workers > 1 and training and opts.on_failure != "in_process":
        return deferred.WAIT
    return None


_AOT_RESULTS = ("hit", "miss", "bypass", "guard_miss")


def _aot_state(before: dict, after: dict) -> dict[str, Any]:
    aot = dynamo.counter_deltas(before, after).get("aot_autograd", {})
    for result in _AOT_RESULTS:
        if aot.get(f"autograd_cache_{result}"):
            return {"state": result}
    return {}


def sandbox_backend(
    gm: Any, example_inputs: Sequence[Any], mode: str | None = None, options: dict | None = None
) -> Any:
    """The backend registered as ``"sandbox"``."""
    try:
        opts = Options.resolve(mode, options)
    except OptionError as e:
        dynamo.raise_to_user(e)  # as itself, not wrapped by dynamo: `except sandbox.OptionError` catches it
    rt = runtime.current()
    rt.join_frontend()  # sandbox.warmup()'s background imports, if still running
    rt.ensure_seam(_route)
    rt.configure(opts)
    if prestart.wanted_at_compile():  # off: the first graph that misses the caches starts them
        rt.get_pool(opts, started_by="torch.compile")  # started already; resized if options ask for more
    location = dynamo.code_location()
    forward_compile_id = dynamo.current_compile_id()
    captured = dynamo_graph(gm, example_inputs, forward_compile_id)  # hash, inputs, why: once per graph
    counters_before = dynamo.counters_snapshot()
    remote_cache.take_remote_cache_events()  # remote cache lookups made before this compile are not its own
    aot_state: dict[str, Any] = {}
    inner_calls = 0
    training = _training(example_inputs)
    background = _background(opts, training)
    pair = deferred.Pair()
    flight = graph_flight.Flight("off")  # the graph's gate, set below, before compile_fx
    built: list[ReportBuilder] = []  # this compile's reports, for the processes its gate served
    if background:
        caches.install_deferred_cache_save()

    def inner_compile(gm: Any, example_inputs: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        nonlocal inner_calls, aot_state
        inner_calls += 1
        kind = _graph_kind(kwargs)
        if kind != "backward":
            aot_state = _aot_state(counters_before, dynamo.counters_snapshot())

        def publish(report: Any) -> None:
            # A graph compiling in the background is reported when its compiled graph takes over.
            if isinstance(scheme.deferred, deferred.DeferredGraph) and report.outcome != FAILED:
                scheme.deferred.hold(report)
            else:
                rt.publish(report)

        builder = _builder(kind, dynamo.current_compile_id() or forward_compile_id, location, publish)
        built.append(builder)
        builder.aot_cache(aot_state)
        builder.profile_steps = opts.profile_steps
        pending = remote_cache.take_remote_cache_events()
        if kind != "backward":
            builder.remote_events = pending  # the AOTAutograd remote lookup, made for this forward
            builder.lookup_events = lookup_events  # ... and its local lookup's key (captured around compile_fx)
        builder.dynamo_graph(captured)
        if kind != "backward":  # waited at the graph's gate, then missed AOTAutograd's cache
            _carry_wait(builder, flight, t0, first=True)
        scheme = IsolatedCompile(opts, builder, rt.get_pool, rt.cache_clock, rt.parent_warm_up, rt.leases())
        if background == deferred.ASYNC or (background and kind != "inference"):
            scheme.defer = functools.partial(deferred.DeferredGraph, how=background, pair=pair, publish=rt.publish)
        token = _active.set(scheme)
        try:
            with events.capture_chromium_events() as builder.events:
                out = seam.compile_fx_inner(gm, example_inputs, *args, **kwargs)
            setattr(pair, "backward" if kind == "backward" else "forward", out)
            if not isinstance(out, deferred.DeferredGraph):
                builder.compiled(out)
            if not scheme.called and dynamo.counters_snapshot().get("inductor", {}).get(
                "fxgraph_cache_hit", 0
            ) == builder.counters_before.get("inductor", {}).get("fxgraph_cache_hit", 0):
                if builder.report.outcome == CACHE_HIT:
                    builder.set_outcome(IN_PROCESS, reason="empty graph: nothing to compile, runs as is")
            return out
        except Exception as e:
            fallback = _find(e, EagerFallback)
            if fallback is None:
                if builder.report.outcome != FAILED:
                    builder.fail(Failure("error", f"{type(e).__name__}: {e}"), fallback=None)
                own = _find(e, (SandboxCompileError, UnpicklableGraphError))
                if own is not None and own is not e:
                    raise own from None  # Inductor wrapped it in InductorError: the user catches ours
                raise
            warnings.warn(
                f"sandbox: {kind} graph {builder.report.compile_id} at {builder.report.where} runs uncompiled "
                f"(eager): its compile failed ({fallback.failure.kind}: {fallback.failure.message}). "
                f"Set on_failure='raise' to stop instead, or 'in_process' to compile it in this process.",
                RuntimeWarning,
                stacklevel=2,
            )
            return seam.eager_callable(gm)
        finally:
            _active.reset(token)
            builder.finish()

    t0 = time.time()
    patches = dict(opts.inductor)
    if background == deferred.ASYNC:
        # Inductor's own random ops ignore the seed when run eagerly: with Inductor's
        # fallback (eager) random ops, results do not depend on when the switch happens.
        patches.setdefault("fallback_random", True)
    # With a second worker, AOTAutograd hands over the backward graph right after the
    # forward one, and both compile side by side.
    lowering = dynamo.non_lazy_backward() if background and training and opts.workers > 1 else contextlib.nullcontext()
    # Profiled calls need each graph's code and kernels: with profile_steps the AOTAutograd cache
    # (which loads a pair without it) is passed by, and the FX graph cache serves each graph instead.
    uncached = dynamo.no_autograd_cache() if opts.profile_steps else contextlib.nullcontext()
    # Ranks of a host that reach this graph at once: the first compiles it, the others wait and
    # load the pair from AOTAutograd's cache without tracing it (isolation/graph_flight.py).
    gated = graph_flight.wanted(
        service_client.wanted(opts.service), bool(background), opts.profile_steps, dynamo.autograd_cache_on()
    )
    key = graph_flight.graph_key(gm, example_inputs, patches) if gated else None
    who = service_client.identity() if gated else {}
    if gated and training:
        # The pair reaches AOTAutograd's cache once both graphs are compiled: the backward is
        # compiled inside the gate, right after the forward, not at the first backward call.
        lowering = dynamo.non_lazy_backward()
    # AOTAutograd looks its cache up inside compile_fx, before any inner_compile: its key is
    # captured here (each inner_compile captures its own graph's events).
    with (
        graph_flight.gate(key, who, opts.timeout_s) as gated_flight,
        lowering,
        uncached,
        events.capture_chromium_events() as lookup_events,
    ):
        flight = gated_flight  # inner_compile reads it
        if input_devices(example_inputs)[0]:
            _take_isa_answers()
        compiled = seam.compile_fx(gm, example_inputs, inner_compile=inner_compile, config_patches=patches)
    for b in built if flight.role == "held" else ():
        entry = graph_flight.served_entry(flight, b.report.single_flight, who)
        if entry is not None:
            b.report.single_flight = entry
            rt.republish(b.report)
    if inner_calls == 0:
        _report_aot_cache_hit(
            example_inputs, forward_compile_id, location, counters_before, t0, captured, lookup_events, flight
        )
    return compiled


def _take_isa_answers() -> None:
    """A CPU graph loaded from the caches (after a wait at the graph's gate, or in a warm job) runs
    Inductor's CPU instruction-set probe at its load. Where a worker recorded the probe's answers
    on this cache dir, they are taken instead: no probe process starts here, where each imports
    torch on older releases (docs/decisions/cpu-isa-probe.md)."""
    try:
        warmup.take_recorded_isa_answers()
    except Exception:  # noqa: BLE001 - Inductor's load then runs its own probe
        log.debug("sandbox: taking the recorded ISA answers failed", exc_info=True)


def _carry_wait(b: ReportBuilder, flight: graph_flight.Flight, t0: float, first: bool) -> None:
    """A report of a graph this process waited for at the graph's gate: the pair's first report
    starts before the wait and carries it (a ``wait_for_worker`` stage); the second starts after."""
    if flight.role != "waited" or flight.waited_until is None:
        return
    b.t0 = b.report.started_at = t0 if first else flight.waited_until
    if first:
        b.stage("wait_for_worker", t0, flight.waited_until, parent=None)
    b.single_flight(graph_flight.single_flight_entry(flight, first=first))


def _report_aot_cache_hit(
    example_inputs: Sequence[Any],
    compile_id: str | None,
    location: tuple,
    before: dict,
    t0: float,
    captured: dict[str, Any] | None = None,
    lookup_events: list[dict[str, Any]] | None = None,
    flight: graph_flight.Flight | None = None,
) -> None:
    """An AOTAutograd cache hit loads the compiled graphs without any inner compile; after a wait
    at the graph's gate, the pair's first report carries the wait (a stage and ``single_flight``)."""
    state = _aot_state(before, dynamo.counters_snapshot())
    remote = remote_cache.take_remote_cache_events()
    fx_loads = [e for e in remote if e.get("cache") == "fx_graph"]
    training = torch.is_grad_enabled() and any(getattr(x, "requires_grad", False) for x in example_inputs)
    for i, kind in enumerate(["forward", "backward"] if training else ["inference"]):
        b = _builder(kind, compile_id, location)
        b.counters_before = before
        b.t0 = b.report.started_at = t0
        if flight is not None:
            _carry_wait(b, flight, t0, first=i == 0)
        b.aot_cache(state)
        # The pair's one AOTAutograd remote lookup goes to its first report; the FX graph
        # cache loads that followed it, one per graph, in order.
        b.remote_events = ([e for e in remote if e.get("cache") != "fx_graph"] if i == 0 else []) + fx_loads[i : i + 1]
        b.lookup_events = (lookup_events or []) if i == 0 else []  # the pair's one AOTAutograd key, likewise
        b.dynamo_graph(captured or {})
        b.set_outcome(CACHE_HIT, reason="aot_autograd_cache" if state.get("state") == "hit" else "no compile needed")
        b.finish()


def _find(e: BaseException | None, cls: type | tuple[type, ...]) -> Any:
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
        rt = runtime.current()
        rt.join_frontend()  # dynamo's trace comes next: no imports beside sandbox.warmup()'s
        if not runtime.in_worker() and prestart.wanted_at_compile():  # an invalid SANDBOX_PRESTART raises here
            try:
                rt.get_pool(Options.resolve(), started_by="torch.compile")
            except OptionError:
                pass  # a bad SANDBOX_* value: reported once, as itself, when the backend first runs
            except Exception:
                log.warning("sandbox: could not pre-start workers; they start on first compile", exc_info=True)
        return sandbox_backend
    raise AttributeError(name)
