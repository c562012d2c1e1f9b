"""Every touch of a private PyTorch API, in one place.

Written against torch 2.13.0 (CPU) and checked on torch 2.11 (CUDA). Each public
function here names the private symbols it relies on; ``tests/test_compat.py``
has one test per touch point, so a torch release that moves one fails loudly
there instead of deep inside a compile.

Differences between the supported versions that matter here:
- ``compile_fx.fx_codegen_and_compile`` gained ``compile_region_name`` after
  2.11: the seam takes ``*args, **kwargs`` and passes them through.
- ``compile_fx_inner`` likewise: passed through unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import logging
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger("sandbox")

# --- the seam into Inductor -------------------------------------------------
# torch._inductor.compile_fx: compile_fx, compile_fx_inner, fx_codegen_and_compile
# (looked up as a module global at call time by _compile_fx_inner).


def compile_fx_module() -> Any:
    from torch._inductor import compile_fx as m

    return m


# The modules this process's own part of a compile imports the first time it runs
# (before the graph crosses), warm or cold: Inductor's compile_fx (its lowering and
# select_algorithm come with it) and the partitioner. Not the joint-graph passes' pattern
# modules: only a cache miss needs them, and a run of cache hits would pay for them (on
# an H100, importing them beside the model's set-up made a warm first call after
# warmup() 1.0 s slower). The same module names on torch 2.11.
FRONTEND_MODULES = (
    "torch._inductor.compile_fx",
    "torch._functorch.partitioners",
)


def import_frontend() -> list[str]:
    """Import FRONTEND_MODULES; returns the names that failed (none expected)."""
    failed = []
    for name in FRONTEND_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the first compile imports it then, and reports what fails
            failed.append(name)
    return failed


_user_compile_threads: list[int | None] = []


def compile_fx(gm: Any, example_inputs: Sequence[Any], *, inner_compile: Callable, config_patches: dict | None) -> Any:
    """Inductor's ``compile_fx`` with the sandbox's ``inner_compile``.

    ``compile_threads=1`` for the user's process (``torch._inductor.config``; not part of
    any cache key, and not sent to the worker): it only loads kernels the worker
    compiled, from Triton's cache, so it needs no compile pool of its own (a sidecar
    process and its workers, each a Python with torch). An in-process fallback compile
    gets the user's setting back (``compile_in_process``).
    """
    from torch._inductor import config as inductor_config

    if not _user_compile_threads:
        _user_compile_threads.append(inductor_config.compile_threads)
    patches = {"compile_threads": 1, **(config_patches or {})}
    return compile_fx_module().compile_fx(gm, example_inputs, inner_compile=inner_compile, config_patches=patches)


def compile_fx_inner(gm: Any, example_inputs: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
    return compile_fx_module().compile_fx_inner(gm, example_inputs, *args, **kwargs)


_seam_lock = threading.Lock()
_seam_original: Callable | None = None


def install_seam(route: Callable[[], Any]) -> None:
    """Replace ``compile_fx.fx_codegen_and_compile`` once.

    ``route()`` returns an object with ``codegen_and_compile(gm, example_inputs,
    inputs_to_check, graph_kwargs, compile_region_name)`` while a sandbox compile is
    active on this thread/context, else None: then the stock function runs, so a
    plain ``backend="inductor"`` compile in the same process is untouched.
    """
    global _seam_original
    with _seam_lock:
        m = compile_fx_module()
        if getattr(m.fx_codegen_and_compile, "_sandbox_seam", False):
            return
        original = m.fx_codegen_and_compile
        _seam_original = original

        @functools.wraps(original)
        def fx_codegen_and_compile(
            gm: Any, example_inputs: Any, inputs_to_check: Any, *args: Any, **kwargs: Any
        ) -> Any:
            scheme = route()
            if scheme is None:
                return original(gm, example_inputs, inputs_to_check, *args, **kwargs)
            region = kwargs.pop("compile_region_name", args[0] if args else None)
            return scheme.codegen_and_compile(gm, example_inputs, inputs_to_check, kwargs, region)

        fx_codegen_and_compile._sandbox_seam = True  # type: ignore[attr-defined]
        m.fx_codegen_and_compile = fx_codegen_and_compile


def seam_installed() -> bool:
    return bool(getattr(compile_fx_module().fx_codegen_and_compile, "_sandbox_seam", False))


def compile_in_process(
    gm: Any, example_inputs: Any, inputs_to_check: Any, graph_kwargs: dict, region: str | None
) -> Any:
    """Inductor's own in-process codegen (``_InProcessFxCompile``), with the user's own
    number of compile threads."""
    from torch._inductor import config as inductor_config

    scheme = compile_fx_module()._InProcessFxCompile()
    scheme.compile_region_name = region
    threads = _user_compile_threads[0] if _user_compile_threads else inductor_config.compile_threads
    with inductor_config.patch(compile_threads=threads):
        return scheme.codegen_and_compile(gm, example_inputs, inputs_to_check, graph_kwargs)


def eager_callable(gm: Any) -> Callable:
    """What Inductor itself returns for a graph it does not compile: the FX
    graph's own forward, boxed (``torch._functorch.aot_autograd.make_boxed_func``)."""
    from torch._functorch.aot_autograd import make_boxed_func
    from torch.fx._lazy_graph_module import _LazyGraphModule

    _LazyGraphModule.force_recompile(gm)
    return make_boxed_func(gm.forward)


@functools.cache
def passthrough_error_base() -> type:
    """The base class of the sandbox's own compile errors (``SandboxCompileError``,
    ``UnpicklableGraphError``): ``torch._dynamo.exc.ShortenTraceback``, which dynamo re-raises
    as it is (any other exception from a backend reaches the user wrapped in
    ``BackendCompilerFailed``), so that ``except sandbox.SandboxCompileError`` catches what
    the compiled model raises. Inductor still wraps it in ``InductorError`` on the way out of
    ``compile_fx_inner``; the backend takes it out again. A plain RuntimeError where torch
    has no ShortenTraceback. One class, shared by both errors."""
    try:
        from torch._dynamo.exc import ShortenTraceback
    except ImportError:  # pragma: no cover - torch without it
        return RuntimeError

    class SandboxError(ShortenTraceback):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args, first_useful_frame=None)  # no dynamo frames to cut: keep the traceback

    return SandboxError


def list_mode_options(mode: str) -> dict[str, Any]:
    import torch._inductor

    return dict(torch._inductor.list_mode_options(mode))


def mode_names() -> list[str]:
    import torch._inductor

    return list(torch._inductor.list_mode_options())


def inductor_option_names() -> set[str]:
    import torch._inductor

    return set(torch._inductor.list_options())


# --- the wire ----------------------------------------------------------------
# torch._inductor.compile_fx_ext: _WireProtocolInput/_WireProtocolPickledInput/
# _WireProtocolPickledOutput, _VirtualizedSerializer, _LoggerState,
# _LoweringSerializer, _FakeTensorModeSerializer, _current_fake_mode,
# _graph_contains_triton_kernel_wrappers, _SerializedFxCompile._run_in_child,
# _OutOfProcessFxCompile._postprocess;  torch.fx._graph_pickler: GraphPickler,
# Options, _node_metadata_key_filter_safe.

PICKLE_SAFE_NAMESPACES = ("aten", "prims", "fbgemm")


class Unpicklable(Exception):
    """The graph cannot cross the process boundary; ``str(self)`` says why."""


@dataclass
class WirePayload:
    data: bytes
    constants: Any  # CompiledFxGraphConstantsWithGm: stays in the parent
    imports: list[str] = field(default_factory=list)  # modules defining custom ops
    libraries: list[str] = field(default_factory=list)  # torch.ops.load_library paths


def _foreign(module: str | None, qualname: str | None) -> bool:
    """An object the worker cannot import: defined in the user's script or local to a function."""
    return module in ("__main__", "__mp_main__") or (qualname is not None and "<locals>" in qualname)


@functools.cache
def _stand_in_class(module: str, qualname: str) -> type:
    name = qualname.rsplit(".", 1)[-1]
    return type(name, (), {"__module__": module, "__qualname__": qualname, "_sandbox_stand_in": True})


def _rebuild_class(module: str, qualname: str) -> type:
    return _stand_in_class(module, qualname)


@dataclass(frozen=True)
class StandIn:
    """An instance or function of user code, carried as its name only."""

    module: str
    qualname: str
    text: str

    def __repr__(self) -> str:
        return f"<stand-in for {self.module}.{self.qualname}>"


def _custom_op_origin(namespace: str, opname: str) -> tuple[str | None, str | None]:
    """(module that defines the op, or None; reason it cannot cross, or None)."""
    from torch._library import custom_ops

    opdef = custom_ops.OPDEFS.get(f"{namespace}::{opname}")
    if opdef is not None:
        module = getattr(opdef._init_fn, "__module__", None)
        if module and not _foreign(module, getattr(opdef._init_fn, "__qualname__", None)):
            return module, None
        return (
            None,
            f"custom op {namespace}::{opname} is defined in {module or 'an unknown module'}, which the worker cannot "
            "import",
        )
    for name, mod in list(sys.modules.items()):
        if mod is None:
            continue
        try:
            values = list(vars(mod).values())
        except TypeError:
            continue
        for value in values:
            if isinstance(value, torch.library.Library) and getattr(value, "ns", None) == namespace:
                if name in ("__main__", "__mp_main__"):
                    return (
                        None,
                        f"custom op {namespace}::{opname} is defined in the training script (__main__), which the "
                        "worker cannot import",
                    )
                return name, None
    if getattr(torch.ops, "loaded_libraries", None):
        return None, None  # the worker loads the same shared libraries
    return (
        None,
        f"custom op {namespace}::{opname} is not defined by an importable module (defined in the training script?)",
    )


class _Crossing:
    """Collects what the worker must import for the custom ops a graph uses."""

    def __init__(self) -> None:
        self.imports: set[str] = set()
        self.refused: list[str] = []

    def ops_filter(self, name: str) -> bool:
        parts = name.split(".")
        if len(parts) < 4 or parts[:2] != ["torch", "ops"]:
            return False
        namespace, opname = parts[2], parts[3]
        if namespace in PICKLE_SAFE_NAMESPACES:
            return True
        module, refusal = _custom_op_origin(namespace, opname)
        if refusal:
            self.refused.append(refusal)
            return False
        if module:
            self.imports.add(module)
        return True


_FUNCTION_TYPES = (types.FunctionType, types.MethodType, functools.partial)


def _none() -> None:
    return None


def _make_pickler_class() -> type:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx._graph_pickler import GraphPickler

    class SandboxPickler(GraphPickler):
        """GraphPickler that carries user-defined classes and objects by name."""

        def reducer_override(self, obj: object) -> Any:  # type: ignore[override]
            reduced = super().reducer_override(obj)
            if reduced is not NotImplemented:
                return reduced
            if isinstance(obj, FakeTensorMode):
                # The describer clears fake_mode on a tensor's own description but not
                # on its view base's; the unpickler puts the worker's mode back on both.
                return (_none, ())
            if isinstance(obj, type):
                if _foreign(obj.__module__, obj.__qualname__):
                    return (_rebuild_class, (obj.__module__, obj.__qualname__))
                return NotImplemented
            if isinstance(obj, (torch.fx.GraphModule, torch.Tensor)):
                return NotImplemented
            if isinstance(obj, _FUNCTION_TYPES) and _foreign(obj.__module__, obj.__qualname__):
                return (StandIn, (str(obj.__module__), obj.__qualname__, ""))
            cls = type(obj)
            if cls.__module__ != "builtins" and _foreign(cls.__module__, cls.__qualname__):
                try:
                    text = repr(obj)[:200]
                except Exception:
                    text = ""
                return (StandIn, (cls.__module__, cls.__qualname__, text))
            return NotImplemented

    return SandboxPickler


@functools.lru_cache(maxsize=1)
def _pickler_class() -> type:
    return _make_pickler_class()


def _portable_config(inductor_config: Any) -> dict[str, Any]:
    """``save_config_portable`` as the stock scheme sends it, from the config module's
    cache of the last export plus the keys set since (``readonly_values``, torch 2.13: about
    1.3 ms a graph less; the dict is only pickled, never changed)."""
    try:
        return inductor_config.save_config_portable(readonly_values=True)
    except TypeError:  # torch 2.11: no such parameter
        return inductor_config.save_config_portable()


def _lowering_serializer(ext: Any) -> Any:
    """``compile_fx_ext._LoweringSerializer()``: the same set of forced-fallback lowerings,
    found with ``getattr`` instead of a try/except per lowering (~1 ms a graph less)."""
    from torch._inductor import lowering
    from torch.utils._ordered_set import OrderedSet

    serializer = ext._LoweringSerializer.__new__(ext._LoweringSerializer)
    serializer.fallbacks = OrderedSet(
        str(k) for k, v in lowering.lowerings.items() if getattr(v, "_is_fallback_handler", False)
    )
    return serializer


def serialize_graph(gm: Any, example_inputs: Any, inputs_to_check: Any, graph_kwargs: dict) -> WirePayload:
    """Build Inductor's ``_WireProtocolInput`` and pickle it with the sandbox's pickler.

    Mirrors ``_SerializedFxCompile.serialize_compile`` but keeps the reason a graph
    cannot cross instead of logging it and compiling in the parent.
    """

    from torch._inductor import compile_fx_ext as ext
    from torch._inductor import config as inductor_config
    from torch._inductor.codecache import BypassFxGraphCache, FxGraphCache
    from torch._inductor.output_code import CompiledFxGraphConstantsWithGm
    from torch.fx._graph_pickler import Options

    try:
        FxGraphCache._check_for_hop(gm)
    except BypassFxGraphCache as e:
        raise Unpicklable(f"graph contains a higher-order op that cannot be serialized: {e}") from e
    if ext._graph_contains_triton_kernel_wrappers(gm):
        raise Unpicklable("graph calls user-defined Triton kernels (process-local kernel side table)")

    deterministic_guard = None
    try:
        deterministic_guard = torch.testing._internal.common_utils.DeterministicGuard._current_state()  # type: ignore[attr-defined]
    except AttributeError:
        pass

    crossing = _Crossing()
    wire_input = ext._WireProtocolInput(
        gm,
        example_inputs,
        inputs_to_check,
        graph_kwargs,
        torch._guards.TracingContext.try_get(),
        _portable_config(inductor_config),
        ext._VirtualizedSerializer.serialize(),
        deterministic_guard,
        no_stock_log_capture(),  # the worker's log records travel with torch_tools
        _lowering_serializer(ext),
        ext._FakeTensorModeSerializer(ext._current_fake_mode()),
    )
    try:
        data = _pickler_class().dumps(wire_input, Options(ops_filter=crossing.ops_filter))
    except BypassFxGraphCache as e:
        reason = crossing.refused[0] if crossing.refused else str(e)
        raise Unpicklable(reason) from e
    except Exception as e:  # anything the pickler trips over means: cannot cross
        if os.environ.get("SANDBOX_DEBUG_PICKLE"):
            path = _pickler_class().debug_dumps(wire_input, Options(ops_filter=crossing.ops_filter), verbose=False)
            log.warning("sandbox: unpicklable object at %s", path)
        raise Unpicklable(f"{type(e).__name__}: {str(e)[:300]}") from e
    libraries = sorted(getattr(torch.ops, "loaded_libraries", ()) or ())
    return WirePayload(data, CompiledFxGraphConstantsWithGm(gm), sorted(crossing.imports), libraries)


def run_in_child(data: bytes, extra_env: dict[str, str]) -> bytes:
    """Worker side: Inductor's own ``_SerializedFxCompile._run_in_child``."""
    from torch._inductor.compile_fx_ext import _SerializedFxCompile, _WireProtocolPickledInput

    return _SerializedFxCompile._run_in_child(_WireProtocolPickledInput(data), extra_env).value


def load_output(data: bytes, constants: Any, region: str | None) -> Any:
    """Parent side: unpickle the worker's ``_WireProtocolOutput`` and apply what the
    stock out-of-process scheme applies (metric deltas, output-code hook, warnings
    and log records)."""
    from torch._inductor.compile_fx_ext import _OutOfProcessFxCompile, _WireProtocolPickledOutput
    from torch._inductor.output_code import CompiledFxGraph

    output = _WireProtocolPickledOutput(data).deserialize(constants)
    if isinstance(output.graph, CompiledFxGraph):
        output.graph.compile_region_name = region
    _OutOfProcessFxCompile._postprocess(None, output)  # type: ignore[arg-type]
    return output.graph


# --- caches --------------------------------------------------------------------
# torch._inductor.utils: clear_on_fresh_cache, clear_caches.


class CacheClock:
    """Counts how often the process cleared Inductor's in-memory caches.

    Registered with ``clear_on_fresh_cache`` so ``clear_caches()`` (called by
    ``fresh_cache()``, ``torch._dynamo.reset()`` paths and tests) ticks it. The
    value is sent with each job; a worker clears its own caches when it changed.
    """

    def __init__(self) -> None:
        self.value = 0

    def cache_clear(self) -> None:
        self.value += 1


def register_cache_clock(clock: CacheClock) -> None:
    from torch._inductor.utils import clear_on_fresh_cache

    clear_on_fresh_cache(clock)


def clear_inductor_caches() -> None:
    from torch._inductor.utils import clear_caches

    clear_caches()


# --- dynamo state ----------------------------------------------------------------
# torch._dynamo.utils.counters, torch._guards.CompileContext, TracingContext,
# torch._dynamo.convert_frame.compile_lock.


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


# --- what happens inside a compile ----------------------------------------------------
# torch._dynamo.utils.record_chromium_event_internal (looked up at call time by
# ChromiumEventLogger._log_timed_event), get_chromium_event_logger().id_.


_event_sink: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar(
    "sandbox_events", default=None
)
_tap_lock = threading.Lock()


def _install_event_tap() -> None:
    """Replace ``record_chromium_event_internal`` once with a tap that also hands
    each event to the capture active in the current context (if any)."""
    import torch._dynamo.utils as dynamo_utils

    with _tap_lock:
        if getattr(dynamo_utils.record_chromium_event_internal, "_sandbox_tap", False):
            return
        original = dynamo_utils.record_chromium_event_internal

        def record(event: dict[str, Any]) -> None:
            sink = _event_sink.get()
            if sink is not None:
                sink.append({k: event.get(k) for k in ("name", "ts", "ph", "args")})
            original(event)

        record._sandbox_tap = True  # type: ignore[attr-defined]
        dynamo_utils.record_chromium_event_internal = record


@contextlib.contextmanager
def capture_chromium_events() -> Iterator[list[dict[str, Any]]]:
    """Collect every chromium begin/end/instant event (``dynamo_timed`` stages, cache
    hit/miss/bypass instants) emitted in this context meanwhile."""
    _install_event_tap()
    events: list[dict[str, Any]] = []
    token = _event_sink.set(events)
    try:
        yield events
    finally:
        _event_sink.reset(token)


# torch._inductor.metrics (module globals), torch._dynamo.utils.compilation_time_metrics,
# cumulative_time_spent_ns, _metrics_context_tls / MetricsContext.

# Carried across the stock wire already (CachedMetricsDeltas); the rest are added here.
_STOCK_METRICS = frozenset(
    {
        "generated_kernel_count",
        "generated_cpp_vec_kernel_count",
        "ir_nodes_pre_fusion",
        "cpp_to_dtype_count",
        "num_bytes_accessed",
        "num_matches_for_scatter_upon_const_tensor",
    }
)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_jsonable(x) for x in v]
    return repr(v)[:500]


def inductor_metrics_snapshot() -> dict[str, Any]:
    """Every counter and list in ``torch._inductor.metrics``, as JSON values."""
    from torch._inductor import metrics

    out: dict[str, Any] = {}
    for name, value in vars(metrics).items():
        if name.startswith("_") or name.isupper() or name == "TYPE_CHECKING":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, list)):
            continue
        out[name] = _jsonable(value)
    return out


def inductor_metrics_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in after.items():
        prev = before.get(name)
        if isinstance(value, list):
            out[name] = value[len(prev or []) :]
        elif isinstance(value, (int, float)):
            out[name] = value - (prev or 0)
    return out


def apply_inductor_metrics(delta: dict[str, Any]) -> None:
    """Add the worker's counts that the stock wire drops to this process's metrics."""
    from torch._inductor import metrics

    for name, value in delta.items():
        if name in _STOCK_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(getattr(metrics, name, None), (int, float)):
            setattr(metrics, name, getattr(metrics, name) + value)


def time_metrics_snapshot() -> dict[str, Any]:
    from torch._dynamo.utils import compilation_time_metrics, cumulative_time_spent_ns

    return {
        "compilation_time_metrics": {k: list(v) for k, v in compilation_time_metrics.items()},
        "cumulative_time_spent_ns": dict(cumulative_time_spent_ns),
    }


def time_metrics_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    ctm_b, ctm_a = before["compilation_time_metrics"], after["compilation_time_metrics"]
    cum_b, cum_a = before["cumulative_time_spent_ns"], after["cumulative_time_spent_ns"]
    return {
        "compilation_time_metrics": {
            k: v[len(ctm_b.get(k, [])) :] for k, v in ctm_a.items() if len(v) > len(ctm_b.get(k, []))
        },
        "cumulative_time_spent_ns": {k: v - cum_b.get(k, 0) for k, v in cum_a.items() if v != cum_b.get(k, 0)},
    }


def apply_time_metrics(delta: dict[str, Any]) -> None:
    """Put the worker's ``dynamo_timed`` timings where an in-process compile leaves them."""
    from torch._dynamo.utils import compilation_time_metrics, cumulative_time_spent_ns

    for k, v in delta.get("compilation_time_metrics", {}).items():
        compilation_time_metrics.setdefault(k, []).extend(v)
    for k, v in delta.get("cumulative_time_spent_ns", {}).items():
        cumulative_time_spent_ns[k] += v


@contextlib.contextmanager
def capture_compilation_metrics() -> Iterator[dict[str, Any]]:
    """Worker side: collect what ``dynamo_timed(..., dynamo_compile_column_us=...)``
    adds to CompilationMetrics (e.g. ``inductor_code_gen_cumulative_compile_time_us``,
    ``post_grad_pass_time_us``); outside a dynamo compile those would be dropped."""
    from torch._dynamo import utils as dynamo_utils
    from torch._dynamo.metrics_context import MetricsContext

    captured: dict[str, Any] = {}
    tls = dynamo_utils._metrics_context_tls
    previous = getattr(tls, "metrics_context", None)
    ctx = MetricsContext(on_exit=lambda start, end, metrics, exc_type, exc: captured.update(metrics))
    tls.metrics_context = ctx
    try:
        # Inductor adds some metrics to the outermost timed event: give it one.
        with ctx, dynamo_utils.dynamo_timed("worker_compile", log_pt2_compile_event=True):
            yield captured
    finally:
        if previous is None:
            del tls.metrics_context
        else:
            tls.metrics_context = previous


def apply_compilation_metrics(values: dict[str, Any]) -> None:
    """Parent side: add the worker's integer CompilationMetrics columns to the
    compile in progress, as an in-process compile would have."""
    from torch._dynamo.utils import get_metrics_context

    ctx = get_metrics_context()
    if not ctx.in_progress():
        return
    for k, v in values.items():
        if k.endswith("_us") and isinstance(v, int) and not isinstance(v, bool) and k != "duration_us":
            ctx.increment(k, v)


def inductor_config_diff() -> dict[str, Any]:
    """Inductor config entries whose current value differs from the default
    (``torch._inductor.config._config`` entries' ``default``)."""
    from torch._inductor import config

    current = config.get_config_copy()
    out: dict[str, Any] = {}
    for key, entry in getattr(config, "_config", {}).items():
        if key in current and current[key] != entry.default:
            out[key] = _jsonable(current[key])
    return out


def chromium_logger_id() -> str:
    from torch._dynamo.utils import get_chromium_event_logger

    return get_chromium_event_logger().id_


def set_chromium_logger_id(value: str | None) -> None:
    """Make this process's ChromiumEventLogger speak under the parent's id."""
    if value:
        from torch._dynamo.utils import get_chromium_event_logger

        get_chromium_event_logger().id_ = value


# --- worker warm-up -----------------------------------------------------------------
# torch._inductor.cpu_vec_isa.pick_vec_isa; torch._inductor.async_compile.


def probe_cpu_isa() -> None:
    """Inductor's CPU instruction-set probe (``cpu_vec_isa``), its candidates checked in parallel.

    Stock Inductor builds and dlopen-probes each candidate ISA one after the
    other inside the first compile (seconds with a fresh cache). The checks are
    independent (a g++ build and a probe process each), so run them side by side;
    the results land in the same ``functools.cache`` that ``pick_vec_isa`` reads.
    """
    import platform

    from torch._inductor import cpu_vec_isa

    if platform.machine() in ("x86_64", "AMD64") and sys.platform == "linux":
        flags = cpu_vec_isa.x86_isa_checker()
        candidates = [isa for isa in cpu_vec_isa.supported_vec_isa_list if all(f in flags for f in str(isa).split())]
        threads = [threading.Thread(target=bool, args=(isa,), daemon=True) for isa in candidates]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    cpu_vec_isa.pick_vec_isa()
    try:  # the probe's programs are in this cache dir from now on: later workers need not wait for them
        os.makedirs(os.path.dirname(_isa_marker()), exist_ok=True)
        with open(_isa_marker(), "w") as f:
            f.write(str(cpu_vec_isa.pick_vec_isa()))
    except OSError:
        pass


def _isa_marker() -> str:
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return os.path.join(cache_dir(), "sandbox", "cpu-isa-probed")


def cpu_isa_probe_cached() -> bool:
    """Whether a worker already ran the CPU instruction-set probe on this cache dir
    (``torch._inductor.runtime.cache_dir_utils.cache_dir``): then the probe costs well
    under a second wherever it runs, and a worker's warm-up leaves it to the first compile
    that needs it instead of holding the probe's file lock while the user's process loads
    cached kernels."""
    try:
        return os.path.exists(_isa_marker())
    except Exception:  # noqa: BLE001
        return False


def gpu_available() -> bool:
    """A CUDA device this process can use (no CUDA context is created)."""
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def warm_up_inductor(probe_isa: bool = True) -> dict[str, float]:
    """Pay Inductor's one-time costs: imports and (``probe_isa``) the CPU
    instruction-set probe. The probe (compilers and probe processes, GIL released)
    runs beside the imports. Returns seconds per phase."""
    import time

    t0 = time.time()
    from torch._inductor import cpu_vec_isa  # noqa: F401

    t1 = time.time()
    probe_s: list[float] = []

    def probe() -> None:
        start = time.time()
        if probe_isa:
            probe_cpu_isa()
        probe_s.append(time.time() - start)

    prober = threading.Thread(target=probe, name="sandbox-isa-probe", daemon=True)
    prober.start()
    import torch._inductor.codegen.cpp  # noqa: F401
    import torch._inductor.codegen.wrapper  # noqa: F401
    import torch._inductor.compile_fx  # noqa: F401
    import torch._inductor.compile_fx_ext  # noqa: F401
    import torch._inductor.fx_passes.post_grad  # noqa: F401
    import torch._inductor.graph  # noqa: F401
    import torch._inductor.lowering  # noqa: F401
    import torch._inductor.scheduler  # noqa: F401

    t2 = time.time()
    prober.join()
    return {
        "import_inductor_s": t2 - t0,
        "cpu_isa_probe_s": probe_s[0] if probe_s else time.time() - t1,
        "probe_after_imports_s": time.time() - t2,
    }


# --- GPU: Triton kernels ------------------------------------------------------
# torch._inductor.codecache.PyCodeCache.modules (every generated module loaded in
# this process, in load order); torch._inductor.runtime.triton_heuristics.CachingAutotuner
# (.configs, .launchers[i].config/.n_regs/.n_spills/.shared, .autotune_cache_info,
# .coordesc_tuner.cached_benchmark_results, .autotune_time_taken_ns,
# .inductor_meta["kernel_name"]); torch._inductor.select_algorithm.add_feedback_saver /
# clear_feedback_savers (max-autotune's choices and their timings);
# torch._inductor.async_compile.AsyncCompile (the Triton compile pool).
# Checked on torch 2.11 + Triton 3.6 (H100) as well: the same attributes, and
# ``autotune_cache_info["compile_time_us"]`` set by AsyncCompile.triton on both.


def loaded_module_count() -> int:
    from torch._inductor.codecache import PyCodeCache

    return len(PyCodeCache.modules)


def modules_loaded_since(count: int) -> list[Any]:
    from torch._inductor.codecache import PyCodeCache

    return list(PyCodeCache.modules[count:])


def _triton_config(cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {k: _jsonable(v) for k, v in sorted(getattr(cfg, "kwargs", {}).items())}
    for k in ("num_warps", "num_stages", "num_ctas", "maxnreg"):
        v = getattr(cfg, k, None)
        if v is not None:
            out[k] = _jsonable(v)
    return out


def _benchmark_ms(ms: Any) -> float | None:
    """A benchmark time in ms; None for a candidate that failed (inf) or was not timed (nan)."""
    return float(ms) if ms == ms and ms != float("inf") else None


def triton_kernels(modules: Sequence[Any]) -> dict[str, Any]:
    """The ``CachingAutotuner`` objects of generated modules, by kernel name."""
    try:
        from torch._inductor.runtime.triton_heuristics import CachingAutotuner
    except Exception:  # no Triton in this build
        return {}
    found: dict[str, Any] = {}
    for mod in modules:
        for name, value in list(vars(mod).items()):
            if isinstance(value, CachingAutotuner):
                found[name] = value
    return found


def describe_triton_kernel(kernel: Any) -> dict[str, Any]:
    """What one Triton kernel's autotuner knows now: candidate configs, compiled
    launchers (registers, spills, shared memory), the autotune cache state, the
    benchmark timings once autotuning ran, and the compile time."""
    info = dict(getattr(kernel, "autotune_cache_info", None) or {})
    launchers = []
    for launcher in list(getattr(kernel, "launchers", None) or []):
        entry = _triton_config(getattr(launcher, "config", None))
        for k in ("n_regs", "n_spills", "shared"):
            v = getattr(launcher, k, None)
            entry[k] = int(v) if isinstance(v, (int, float)) else None
        launchers.append(entry)
    timings = []
    tuner = getattr(kernel, "coordesc_tuner", None)
    for key, ms in list((getattr(tuner, "cached_benchmark_results", None) or {}).items()):
        try:
            cfg = {str(k): _jsonable(v) for k, v in key}
        except (TypeError, ValueError):
            continue
        timings.append({"config": cfg, "ms": _benchmark_ms(ms)})
    state = info.get("autotune_cache_state")
    # ``configs`` is dropped once the launchers are compiled: the compiled candidates
    # (with their registers and spills) are then the list of configs.
    configs = [_triton_config(c) for c in getattr(kernel, "configs", None) or []] or [dict(x) for x in launchers]
    out: dict[str, Any] = {
        "configs": configs,
        "launchers": launchers,
        "autotune_cache": state,
        "autotune_timings": timings,
        "compile_time_s": info["compile_time_us"] / 1e6
        if isinstance(info.get("compile_time_us"), (int, float))
        else None,
    }
    autotune_ns = getattr(kernel, "autotune_time_taken_ns", None)
    if isinstance(autotune_ns, (int, float)) and autotune_ns:
        out["autotune_time_s"] = autotune_ns / 1e9
    if info.get("num_configs") is not None:
        out["num_configs"] = info["num_configs"]
    if info.get("coordesc_tuning"):
        out["coordinate_descent"] = True
    return out


@contextlib.contextmanager
def capture_autotune_choices() -> Iterator[list[dict[str, Any]]]:
    """max-autotune's template/extern choices for each tuned op and their timings."""
    choices: list[dict[str, Any]] = []
    try:
        from torch._inductor import select_algorithm
    except Exception:
        yield choices
        return

    def saver(timings: Any, name: Any, input_nodes: Any, candidates: Any, *rest: Any) -> None:
        try:
            rows = []
            for choice, ms in timings.items():
                rows.append(
                    {
                        "name": str(getattr(choice, "name", choice)),
                        "kind": _choice_kind(choice),
                        "description": str(getattr(choice, "description", ""))[:300],
                        "ms": _benchmark_ms(ms),
                    }
                )
            rows.sort(key=lambda r: (r["ms"] is None, r["ms"] or 0.0))
            shapes = []
            for node in input_nodes or []:
                try:
                    shapes.append([_jsonable(s) for s in node.get_size()])
                except Exception:
                    shapes.append(None)
            choices.append(
                {
                    "op": str(name),
                    "input_shapes": shapes,
                    "chosen": rows[0]["name"] if rows else None,
                    "candidates": rows,
                }
            )
        except Exception:  # noqa: BLE001 - a report detail never breaks a compile
            log.debug("sandbox: could not record autotune choices", exc_info=True)

    select_algorithm.add_feedback_saver(saver)
    try:
        yield choices
    finally:
        cache = select_algorithm.get_algorithm_selector_cache()
        cache.feedback_saver_fns = [f for f in cache.feedback_saver_fns if f is not saver]


def _choice_kind(choice: Any) -> str:
    cls = type(choice).__name__
    if "Extern" in cls:
        return "extern"
    if "Triton" in cls:
        return "triton_template"
    return cls


def warm_up_gpu() -> dict[str, float]:
    """Worker side, before the first job: CUDA initialised, Triton and Inductor's GPU
    code generators imported, Inductor's Triton compile pool started and ready. A
    machine without a usable GPU pays only the availability check."""
    import time

    t0 = time.time()
    if not torch.cuda.is_available():
        return {"cuda_check_s": time.time() - t0}
    phases: dict[str, float] = {"cuda_check_s": time.time() - t0}
    use_inductor_ptxas()  # before any kernel compiles, here or in the compile pool
    t = time.time()
    torch.cuda.init()
    from torch._inductor.async_compile import AsyncCompile, caching_device_properties

    caching_device_properties()
    phases["cuda_init_s"] = time.time() - t
    t = time.time()
    importlib.import_module("torch._inductor.codegen.triton")
    importlib.import_module("torch._inductor.runtime.triton_heuristics")
    phases["import_triton_s"] = time.time() - t
    t = time.time()
    try:
        # Started, not awaited: its processes come up while the worker waits for its
        # first job; a compile that comes sooner builds its kernels here meanwhile,
        # as in-process Inductor does with its own pool.
        AsyncCompile.warm_pool()
        if os.environ.get("SANDBOX_WORKER_POOL", "warmup") != "job":
            AsyncCompile.use_process_pool()  # submits the pool's readiness job: its workers start now
    except Exception:  # noqa: BLE001 - Inductor then compiles kernels in this process
        log.debug("sandbox: Triton compile pool did not start", exc_info=True)
    phases["compile_pool_start_s"] = time.time() - t
    return phases


# --- GPU: what this process needs to load a worker's compiled graph ------------------
# Loading a GPU graph starts Triton's CUDA driver utilities (a small C module, built into
# TRITON_CACHE_DIR once; 0.3-0.5 s on an H100). In-process Inductor pays this while it
# compiles; the sandbox's user process did so inside the load, after the worker's reply.
# prepare_gpu_load does it on a background thread while the process waits for the worker
# instead (runtime.ParentWarmUp); the load joins it. (Triton and Inductor's Triton runtime
# are imported by then already: torch._dynamo and compile_fx import them.)


def use_inductor_ptxas() -> str | None:
    """Point Triton at the ptxas Inductor picks (the one shipped with torch, where there is
    one, unless TRITON_PTXAS_PATH is set): ``_set_triton_ptxas_path``, which Inductor calls
    on some of its compile paths only. The ptxas version is part of each kernel's Triton
    cache key: on an H100 (torch 2.11 cu130) the worker's process keyed its kernels with
    Triton's bundled ptxas (12.8), the user's process with torch's (13.0), so the user's
    process missed every kernel and compiled it again inside the load. Called by the
    worker before its first job and by the user's process before its first GPU load, so
    both use one ptxas and one key. Returns TRITON_PTXAS_PATH after.
    torch._inductor.runtime.compile_tasks._set_triton_ptxas_path on 2.11 and 2.13."""
    try:
        from torch._inductor.runtime.compile_tasks import _set_triton_ptxas_path
    except ImportError:  # pragma: no cover - a torch without it: Triton picks its own
        return os.environ.get("TRITON_PTXAS_PATH")
    _set_triton_ptxas_path()
    return os.environ.get("TRITON_PTXAS_PATH")


def prepare_gpu_load() -> dict[str, Any]:
    """Point Triton at Inductor's ptxas and start Triton's active driver. Returns seconds
    taken and what failed (nothing expected on a GPU machine; without Triton the driver
    does, and the load then fails as before)."""
    import time

    t0 = time.time()
    failed: list[str] = []
    use_inductor_ptxas()  # an environment variable only: no ptxas runs here
    try:
        from triton.runtime import driver

        driver.active.get_current_device()
    except Exception:  # noqa: BLE001 - the load starts it then
        failed.append("triton.runtime.driver.active")
    # Not Triton's backend hash: it runs ``ptxas --version``, and nothing of the compiler
    # toolchain runs in this process while the worker compiles (a ptxas that crashes or
    # hangs must cost the worker, not this process); it took about 5 ms on the H100.
    return {"driver_s": time.time() - t0, "failed": failed}


def launch_compile_pool() -> bool:
    """Start the Triton compile pool's processes if they are not started yet (a no-op
    once they are, and where Inductor compiles in one process); True once it is ready."""
    from torch._inductor.async_compile import AsyncCompile

    try:
        return bool(AsyncCompile.use_process_pool())
    except Exception:  # noqa: BLE001 - Inductor then compiles kernels in this process
        return False


def load_custom_op_sources(imports: list[str], libraries: list[str]) -> None:
    for path in libraries:
        if path not in getattr(torch.ops, "loaded_libraries", set()):
            torch.ops.load_library(path)
    for module in imports:
        importlib.import_module(module)


def cache_env() -> dict[str, str]:
    names = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
    return {n: os.environ[n] for n in names if n in os.environ}


# --- async mode: a stand-in graph until the compiled one takes over -----------------
# torch._inductor.codecache.FxGraphCache._save_graph (a staticmethod, looked up on the
# class by _compile_fx_inner), ._get_shape_env, ._filter_backed_symints;
# torch._guards.TracingContext.try_get / torch._guards.tracing (the deferred save);
# torch._functorch.config.force_non_lazy_backward_lowering. The same on torch 2.11.


def install_deferred_cache_save() -> None:
    """Replace ``FxGraphCache._save_graph`` once: a stand-in graph (one with a
    ``defer_cache_save`` method) is not pickled into the cache. Its guard expression is
    computed now, while the ShapeEnv is live (AOTAutograd's cache entry reads it from
    the stand-in), and the stand-in is handed a ``save(real_graph)`` that writes the
    real compiled graph under the same key later, under the same TracingContext."""
    from torch._inductor.codecache import FxGraphCache

    with _seam_lock:
        current = FxGraphCache.__dict__["_save_graph"]
        original = current.__func__ if isinstance(current, staticmethod) else current
        if getattr(original, "_sandbox_deferred", False):
            return

        def _save_graph(key: str, compiled_graph: Any, example_inputs: Any, local: bool, remote_cache: Any) -> None:
            defer = getattr(compiled_graph, "defer_cache_save", None)
            if defer is None:
                return original(key, compiled_graph, example_inputs, local, remote_cache)
            shape_env = FxGraphCache._get_shape_env()
            if shape_env is not None:
                symints = FxGraphCache._filter_backed_symints(example_inputs)
                guards = shape_env.get_pruned_guards(symints)
                compiled_graph.guards_expr = shape_env.produce_guards_expression(placeholders=symints, guards=guards)
            context = torch._guards.TracingContext.try_get()

            def save(real: Any) -> None:
                with torch._guards.tracing(context):
                    original(key, real, example_inputs, local, remote_cache)

            defer(save)
            return None

        _save_graph._sandbox_deferred = True  # type: ignore[attr-defined]
        FxGraphCache._save_graph = staticmethod(_save_graph)  # type: ignore[method-assign]


def deferred_cache_save_installed() -> bool:
    from torch._inductor.codecache import FxGraphCache

    current = FxGraphCache.__dict__["_save_graph"]
    return bool(getattr(getattr(current, "__func__", current), "_sandbox_deferred", False))


def non_lazy_backward() -> Any:
    """AOTAutograd compiles the backward graph right after the forward graph
    (``force_non_lazy_backward_lowering``), not at the first backward call."""
    return torch._functorch.config.patch(force_non_lazy_backward_lowering=True)


# --- Inductor's remote caches (Redis) ---------------------------------------------------
# torch._inductor.remote_cache: RedisRemoteCache (the base of RemoteFxGraphCache and
# RemoteAOTAutogradCache) and its ``_get`` / ``_put`` (RemoteCache.get/put call them on
# the instance); RedisRemoteCacheBackend._redis, which Inductor sets to None when a
# connection fails and which then answers every get with None - a miss, silently; the
# module's ``redis`` (None when the package is missing: create_cache then logs a warning
# and there is no remote cache at all). The entries FxGraphCache._save_graph and
# AOTAutogradCache.save write carry ``time_taken_ms``, the compile time a hit saves.
# torch._inductor.config.fx_graph_remote_cache, torch._functorch.config.enable_remote_autograd_cache
# (TORCHINDUCTOR_FX_GRAPH_REMOTE_CACHE, TORCHINDUCTOR_AUTOGRAD_REMOTE_CACHE).

REMOTE_CACHES = {"RemoteFxGraphCache": "fx_graph", "RemoteAOTAutogradCache": "aot_autograd"}
_remote_events = threading.local()
_MAX_PENDING_REMOTE_EVENTS = 256


def _pending_remote_events() -> list[dict[str, Any]]:
    events = getattr(_remote_events, "events", None)
    if events is None:
        events = _remote_events.events = []
    return events


def remote_cache_server() -> str:
    """Where Inductor's Redis caches connect, as Inductor reads it: TORCHINDUCTOR_REDIS_URL
    (without its password), else TORCHINDUCTOR_REDIS_HOST:TORCHINDUCTOR_REDIS_PORT."""
    url = os.environ.get("TORCHINDUCTOR_REDIS_URL")
    if url:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return parts._replace(netloc=netloc).geturl()
    host = os.environ.get("TORCHINDUCTOR_REDIS_HOST", "localhost")
    return f"{host}:{os.environ.get('TORCHINDUCTOR_REDIS_PORT', '6379')}"


def _connection_lost(cache: Any) -> bool:
    backend = getattr(cache, "backend", None)
    return backend is not None and hasattr(backend, "_redis") and backend._redis is None


def _remote_event(cache: Any, op: str, t0: float, result: str, **extra: Any) -> None:
    event = {
        "cache": REMOTE_CACHES.get(type(cache).__name__, type(cache).__name__),
        "op": op,
        "result": result,
        "seconds": time.time() - t0,
        "server": remote_cache_server(),
    }
    event.update(extra)
    events = _pending_remote_events()
    events.append(event)
    if len(events) > _MAX_PENDING_REMOTE_EVENTS:  # lookups nobody takes (another backend's compiles)
        del events[: len(events) - _MAX_PENDING_REMOTE_EVENTS]


def install_remote_cache_tap() -> None:
    """Wrap ``RedisRemoteCache._get`` / ``_put`` once, so that each remote get and put of
    this thread is recorded: hit (with the entry's compile time), miss, unavailable (the
    connection failed: Inductor then reports a miss) or error. Taken by
    :func:`take_remote_cache_events`."""
    from torch._inductor import remote_cache

    cls = remote_cache.RedisRemoteCache
    with _tap_lock:
        if getattr(cls._get, "_sandbox_tap", False):
            return
        original_get, original_put = cls._get, cls._put

        def _get(self: Any, key: str, sample: Any) -> Any:
            t0 = time.time()
            try:
                value = original_get(self, key, sample)
            except Exception as e:
                _remote_event(self, "get", t0, "error", message=f"{type(e).__name__}: {e}"[:500])
                raise
            if value is not None:
                taken = value.get("time_taken_ms") if isinstance(value, dict) else None
                _remote_event(self, "get", t0, "hit", time_taken_ms=taken if isinstance(taken, (int, float)) else None)
            elif _connection_lost(self):
                _remote_event(self, "get", t0, "unavailable")
            else:
                _remote_event(self, "get", t0, "miss")
            return value

        def _put(self: Any, key: str, value: Any, sample: Any) -> None:
            t0 = time.time()
            try:
                original_put(self, key, value, sample)
            except Exception as e:
                _remote_event(self, "put", t0, "error", message=f"{type(e).__name__}: {e}"[:500])
                raise
            _remote_event(self, "put", t0, "unavailable" if _connection_lost(self) else "ok")

        _get._sandbox_tap = True  # type: ignore[attr-defined]
        cls._get, cls._put = _get, _put  # type: ignore[method-assign]


def take_remote_cache_events() -> list[dict[str, Any]]:
    """This thread's remote cache gets and puts since the last call (oldest first):
    ``{"cache", "op", "result", "seconds", "server", "time_taken_ms"?, "message"?}``."""
    install_remote_cache_tap()
    events = _pending_remote_events()
    taken = list(events)
    events.clear()
    return taken


def remote_caches_missing() -> dict[str, str]:
    """Remote caches that are turned on but cannot exist, and why: ``{cache: reason}``
    (Inductor only logs a warning and compiles without them)."""
    from torch._functorch import config as functorch_config
    from torch._inductor import config, remote_cache

    if remote_cache.redis is not None:
        return {}
    on = {"fx_graph": config.fx_graph_remote_cache, "aot_autograd": functorch_config.enable_remote_autograd_cache}
    return {cache: "the redis package is not installed: pip install redis" for cache, enabled in on.items() if enabled}


# --- torch's own debugging tools: TORCH_TRACE, TORCH_LOGS, TORCH_COMPILE_DEBUG, profiler ---
# torch._logging._internal.trace_log (the "torch.__trace" logger behind TORCH_TRACE and
# tlparse), trace_structured; torch._logging.structured.intern_string;
# torch._inductor.compile_fx_ext._LoggerState (its ``loggers``); torch._inductor.virtualized.V
# (``V.debug``, the DebugContext of the graph being compiled, its ``_path``);
# torch._dynamo.config.debug_dir_root; torch._guards.CompileId, CompileContext.current_trace_id;
# torch._logging._internal.log_state.artifact_names, loggers' ``artifact_name``, the trace
# record's ``metadata``/``payload`` (TorchLogsFormatter); torch.autograd._profiler_enabled.
# Written against torch 2.13.0; not run on 2.11 here (the symbols are older than 2.11).


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
    records itself (``telemetry/torch_tools``), every torch logger, in order."""
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
