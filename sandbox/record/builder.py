"""Fill one CompileReport while its graph compiles.

The parent's own stages (serialize, wait for a worker, send, transfer, load) come
from the isolated compile; Inductor's stages come as chromium begin/end events,
from the parent (cache lookup, load) and from the worker (everything in between),
all timestamped on the host's one wall clock.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from sandbox.record import context, gpu_kernels, kernels, profiled_steps, stages
from sandbox.record.report import CACHE_HIT, FAILED, CompileReport, Failure, Stage
from sandbox.torch_adapter import dynamo, remote_cache, triton
from sandbox.torch_adapter import events as torch_events

MAX_INPUTS = 64
MAX_CALLS = 64  # distinct callables named in graph["calls"]


def _dims(values: Any) -> list[Any]:
    """Sizes or strides as JSON: an int as it is, a symbolic one as its expression (``"s0"``)."""
    return [d if isinstance(d, int) else str(d) for d in values]


def _input_entry(x: Any, meta: tuple | None, traced: Any) -> dict[str, Any]:
    """One input of the signature; ``traced`` is its symbolic value, when its shape is symbolic."""
    if meta is not None:
        shape, stride, dtype, device, requires_grad = meta
        entry: dict[str, Any] = {"kind": "tensor"}
        if traced is not None:
            shape, stride = tuple(traced.shape), tuple(traced.stride())
        entry["shape"], entry["stride"] = _dims(shape), _dims(stride)
        entry["dtype"] = str(dtype).removeprefix("torch.")
        entry["device"], entry["requires_grad"] = device, bool(requires_grad)
        entry["dynamic"] = [i for i, d in enumerate(shape) if not isinstance(d, int)]
        return entry
    kind = type(x).__name__
    if kind in ("bool", "int", "float"):
        return {"kind": kind, "value": x}
    if kind in ("SymInt", "SymFloat", "SymBool"):
        return {"kind": kind.lower(), "value": str(x)}
    return {"kind": "other", "type": kind}


def graph_signature(
    code: str | None, example_inputs: Sequence[Any], symbolic: dict[int, Any] | None = None
) -> tuple[str | None, list[dict[str, Any]]]:
    """What dynamo captured, in one walk over its inputs: the graph hash and the input signature.

    The hash covers the graph's ``code`` and, per input, what the static-shape guards check (shape,
    stride, dtype, device, requires_grad): ranks that traced the same code with the same inputs
    get the same hash (None without the code). The signature lists the first ``MAX_INPUTS`` inputs
    (docs/REPORT.md, Causes); ``symbolic`` holds the traced values of inputs whose shape is symbolic
    (``dynamo.symbolic_inputs``).
    """
    symbolic = symbolic or {}
    inputs: list[dict[str, Any]] = []
    h: Any = hashlib.sha256(code.encode()) if isinstance(code, str) else None
    for i, x in enumerate(example_inputs):
        try:
            if hasattr(x, "shape") and hasattr(x, "stride"):
                meta: tuple | None = (tuple(x.shape), tuple(x.stride()), x.dtype, x.device.type, x.requires_grad)
            else:
                meta = None
            if h is not None:
                h.update(repr(meta if meta is not None else (type(x).__name__, x)).encode())
            if i < MAX_INPUTS:
                inputs.append(_input_entry(x, meta, symbolic.get(i)))
        except Exception:  # an odd input: the hash is dropped, the signature says what it is
            h = None
            if i < MAX_INPUTS:
                inputs.append({"kind": "other", "type": type(x).__name__})
    if len(example_inputs) > MAX_INPUTS:
        inputs.append({"kind": "more", "count": len(example_inputs) - MAX_INPUTS})
    return (h.hexdigest() if h is not None else None), inputs


def recompile(compile_id: str | None, reason: str | None) -> dict[str, Any] | None:
    """``{"frame", "count", "reason"}`` when dynamo's compile id ``"frame/count"`` is a frame's
    second or later compile (count >= 1); an attempt suffix (``"0/1_1"``, a restart) is no recompile
    of its own. None for a first compile."""
    if not compile_id:
        return None
    frame, _, rest = compile_id.lstrip("!").rpartition("/")
    frame = frame.rpartition("/")[2]  # compiled autograd's "!<ca id>/<frame>/<count>"
    count = rest.partition("_")[0]
    if not (frame.isdigit() and count.isdigit()) or int(count) == 0:
        return None
    return {"frame": int(frame), "count": int(count), "reason": reason}


def graph_calls(gm: Any) -> dict[str, int]:
    """What the user's code calls in the graph dynamo captured (``relu``, ``linear``, ``mul``,
    ``sin``), counted: a comparison names the call that changed even where a cache served the
    graph and there are no kernels to compare."""
    calls: dict[str, int] = {}
    try:
        for node in gm.graph.nodes:
            if node.op == "call_function":
                name = getattr(node.target, "__name__", None) or str(node.target)
            elif node.op == "call_method":
                name = str(node.target)
            else:
                continue
            if name in calls or len(calls) < MAX_CALLS:
                calls[name] = calls.get(name, 0) + 1
    except Exception:  # a nicety: never fail a compile for it
        return {}
    return dict(sorted(calls.items()))


def dynamo_graph(gm: Any, example_inputs: Sequence[Any], compile_id: str | None) -> dict[str, Any]:
    """Everything a backend call records once for every report of its graph: the graph hash, the
    input signature, why dynamo ended the graph there, and the guard that failed on a recompile."""
    try:
        code = gm.code  # the graph's Python code, generated at the first read: the hash's share of the work
    except Exception:  # a hash is a nicety: never fail a compile for it
        code = None
    graph_hash, inputs = graph_signature(code, example_inputs, dynamo.symbolic_inputs(gm))
    return {
        "hash": graph_hash,
        "calls": graph_calls(gm),
        "inputs": inputs,
        "compile_reason": dynamo.compile_reason(gm),
        "recompile": recompile(compile_id, dynamo.recompile_reason()),
    }


def _end_args(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for e in reversed(events):
        if e.get("ph") == "E" and e.get("name") == name:
            return e.get("args") or {}
    return {}


class ReportBuilder:
    """One report in the making; ``finish()`` publishes it."""

    def __init__(
        self,
        run_id: str,
        graph_kind: str,
        compile_id: str | None,
        location: tuple,
        publish: Callable[[CompileReport], None],
        republish: Callable[[CompileReport], None] | None = None,
    ) -> None:
        co_name, filename, line = location
        self.t0 = time.time()
        self._publish = publish
        self._republish = republish or (lambda report: None)
        span = context.caller_span()
        self.report = CompileReport(
            run_id=run_id,
            compile_id=compile_id,
            graph_kind=graph_kind,
            outcome=CACHE_HIT,
            co_name=co_name,
            filename=filename,
            line=line,
            started_at=self.t0,
            chromium_id=torch_events.chromium_logger_id(),
            trace_id=span.get("trace_id"),
            parent_span_id=span.get("parent_span_id"),
            **context.distributed(),
        )
        self.counters_before = dynamo.counters_snapshot()
        self.events: list[dict[str, Any]] = []
        # Events of the backend call around this graph's compile: AOTAutograd's cache lookup, for a forward
        self.lookup_events: list[dict[str, Any]] = []
        # Inductor's remote (Redis) cache gets and puts for this graph (remote_cache.take_remote_cache_events)
        self.remote_events: list[dict[str, Any]] = []
        self.modules_before = triton.loaded_module_count()
        self.worker_triton: tuple[dict[str, Any], list[dict[str, Any]]] = ({}, [])
        self.profile_steps: tuple[int, ...] = ()  # option profile_steps: calls of the compiled graph to profile

    # -- filled by the isolated compile ------------------------------------------------
    def stage(
        self, name: str, start: float, end: float, origin: str = "parent", parent: str | None = "fx_codegen_and_compile"
    ) -> None:
        self.report.stages.append(Stage(name, start, end, origin, parent))

    def worker_events(self, events: list[dict[str, Any]], parent: str) -> None:
        self.report.stages.extend(stages.from_events(events, "worker", parent))

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
        self.report.graph.update(
            {
                "nodes": len(nodes),
                "ops": sum(1 for n in nodes if n.op in ("call_function", "call_method", "call_module")),
                "inputs": len(example_inputs),
            }
        )

    def worker_reply(self, reply: dict[str, Any]) -> None:
        self.report.metrics.update(reply.get("metrics", {}))
        inductor = reply.get("counters", {}).get("inductor", {})
        hits, misses = inductor.get("async_compile_cache_hit", 0), inductor.get("async_compile_cache_miss", 0)
        if hits or misses:
            self.report.caches["async_compile"] = {"hit": hits, "miss": misses}
        self.report.worker_chromium_id = reply.get("chromium_id")
        self.worker_triton = (reply.get("triton_kernels") or {}, reply.get("autotune_choices") or [])

    def single_flight(self, info: dict[str, Any] | None) -> None:
        """Who compiled this graph for whom (the compile service's or the lease's answer)."""
        if info is not None:
            self.report.single_flight = info

    # -- filled by the backend -------------------------------------------------------------
    def compiled(self, output: Any) -> None:
        self.report.kernels = kernels.inventory(getattr(output, "source_code", None))
        gpu_kernels.attach_worker_details(self.report, *self.worker_triton)
        if self.profile_steps:  # wrapped first: the first-run wrapper, outside it, puts this one back
            profiled_steps.watch_steps(output, self.report, self.profile_steps, self._republish)
        gpu_kernels.watch_first_run(output, self.report, self.modules_before, self._republish)

    def aot_cache(self, state: dict[str, Any]) -> None:
        if state:
            self.report.caches["aot_autograd"] = dict(state)

    def dynamo_graph(self, captured: dict[str, Any]) -> None:
        """The causes its backend call captured once (``dynamo_graph()``), on this report of the graph."""
        r = self.report
        if captured.get("hash"):
            r.graph["hash"] = captured["hash"]
        if captured.get("calls"):
            r.graph["calls"] = dict(captured["calls"])
        r.inputs = list(captured.get("inputs") or [])
        r.compile_reason = captured.get("compile_reason")
        r.recompile = captured.get("recompile")

    def finish(self) -> CompileReport:
        r = self.report
        r.duration_s = time.time() - self.t0
        r.counters = dynamo.counter_deltas(self.counters_before, dynamo.counters_snapshot())
        parent_stages = stages.from_events(self.events, "parent", None)
        r.stages = parent_stages + r.stages
        end = _end_args(self.events, "inductor_compile")
        fx: dict[str, Any] = {}
        if end.get("cache_state"):
            fx["state"] = end["cache_state"]
            fx["key"] = end.get("key")
        for k in ("cache_bypass_reason", "cache_bypass_hard"):
            if end.get(k) is not None:
                fx["bypass_reason" if k == "cache_bypass_reason" else k] = end[k]
        if not fx:
            inductor = r.counters.get("inductor", {})
            for result in ("hit", "miss", "bypass"):
                if inductor.get(f"fxgraph_cache_{result}"):
                    fx["state"] = result
        if fx:
            r.caches["fx_graph"] = fx
        _add_cache_lookup_stage(r, parent_stages)
        r.cache_keys = torch_events.cache_keys(self.events)
        aot = torch_events.cache_keys(self.lookup_events).get("aot_autograd")
        if aot is not None:
            r.cache_keys["aot_autograd"] = aot
        self.remote_events += remote_cache.take_remote_cache_events()
        r.caches.update(remote_cache_states(self.remote_events, r, remote_cache.remote_caches_missing()))
        if r.outcome == CACHE_HIT and r.reason is None:
            r.reason = "fx_graph_cache" if fx.get("state") == "hit" else "aot_autograd_cache"
        self._publish(r)
        return r


def remote_cache_states(events: list[dict[str, Any]], r: CompileReport, missing: dict[str, str]) -> dict[str, Any]:
    """``caches["fx_graph_remote"]`` / ``caches["aot_autograd_remote"]`` from one graph's remote
    cache events (docs/REPORT.md). A remote cache that is on but cannot exist (``missing``)
    is ``unavailable`` for a graph that consulted the local cache of the same kind."""
    out: dict[str, Any] = {}
    for cache in ("fx_graph", "aot_autograd"):
        gets = [e for e in events if e.get("cache") == cache and e.get("op") == "get"]
        puts = [e for e in events if e.get("cache") == cache and e.get("op") == "put"]
        entry: dict[str, Any] = {}
        if gets:
            results = [e["result"] for e in gets]
            state = next((s for s in ("hit", "error", "unavailable") if s in results), "miss")
            entry["state"] = state
            entry["lookup_s"] = round(sum(e.get("seconds") or 0.0 for e in gets), 6)
            hit = next((e for e in gets if e["result"] == "hit"), None)
            if hit is not None and hit.get("time_taken_ms") is not None:
                entry["time_saved_s"] = hit["time_taken_ms"] / 1000.0
        if puts:
            entry["put"] = next((s for s in ("error", "unavailable") if any(e["result"] == s for e in puts)), "ok")
        if entry:
            entry["server"] = (gets or puts)[0].get("server")
            message = next((e["message"] for e in gets + puts if e.get("message")), None)
            if message:
                entry["message"] = message
            out[f"{cache}_remote"] = entry
        elif (
            cache in missing
            and (r.caches.get(cache) or {}).get("state") in ("hit", "miss", "guard_miss")
            and (cache == "fx_graph" or r.graph_kind != "backward")
        ):
            out[f"{cache}_remote"] = {"state": "unavailable", "message": missing[cache]}
    return out


def _add_cache_lookup_stage(r: CompileReport, parent_stages: list[Stage]) -> None:
    """The time between Inductor's entry and its codegen (or its end, on a hit) is the
    FX graph cache lookup."""
    outer = next((s for s in parent_stages if s.name == "inductor_compile"), None)
    if outer is None:
        return
    codegen = next((s for s in parent_stages if s.name == "fx_codegen_and_compile"), None)
    end = codegen.start if codegen else outer.end
    r.stages.append(Stage("cache_lookup", outer.start, end, "parent", "inductor_compile"))
