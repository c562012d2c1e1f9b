"""The wire: a graph serialized for the worker, and the worker's compiled graph loaded back.

Private symbols touched here: torch._inductor.compile_fx_ext: _WireProtocolInput,
_WireProtocolPickledInput, _WireProtocolPickledOutput, _VirtualizedSerializer, _LoggerState,
_LoweringSerializer, _FakeTensorModeSerializer, _current_fake_mode,
_SerializedFxCompile._run_in_child, _OutOfProcessFxCompile._postprocess; torch.fx._graph_pickler:
GraphPickler, Options, _GraphModulePickleData (through ``GraphPickler.reducer_override``);
torch._ops.HigherOrderOperator (``name()``; found as ``torch.ops.higher_order.<name>`` once its
module is imported); torch._higher_order_ops.effects: _get_effect, _get_op_qualname,
_register_effectful_op; torch._higher_order_ops.invoke_subgraph.invoke_subgraph;
torch._guards.ModuleContext; torch._guards.TracingContext.hop_dispatch_set_cache (InvokeSubgraphCache.get_effects,
add_effects); torch._library.fake_class_registry.FakeScriptObject;
torch._library.opaque_object.is_opaque_value_type; torch._library.effects.EffectType;
torch._library.simple_registry.singleton (``find(qualname).fake_impl.kernel.source``).

Higher-order ops: Inductor's own subprocess mode refuses every graph with a higher-order op that
the FX graph cache cannot key (``FxGraphCache._check_for_hop``: ``with_effects``, ``cond``,
``while_loop``, ``scan``, ``map_impl``, ...). Caching and crossing are different questions: a
higher-order op crosses by its name in ``torch.ops.higher_order``, its subgraphs as graph modules
with their code, and the effect types its lowering reads travel with it. ``hop_refusal`` refuses
only what cannot cross, by name (docs/decisions/effectful-graphs-cross.md).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import types
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from sandbox import env
from sandbox.torch_adapter.debug_tools import no_stock_log_capture

log = logging.getLogger("sandbox")


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


def _fake_kernel_module(qualname: str) -> str | None:
    """The module whose file registered the op's fake kernel (``Kernel.source`` is
    ``file:line``; the function itself may be torch's wrapper): the worker traces the graph with
    that kernel, and the module that registers it usually defines the op too."""
    from torch._library import simple_registry

    kernel = simple_registry.singleton.find(qualname).fake_impl.kernel
    source = getattr(kernel, "source", None)
    if not source:
        return None
    path = os.path.realpath(source.rsplit(":", 1)[0])
    for name, mod in list(sys.modules.items()):
        file = getattr(mod, "__file__", None)
        if file and os.path.realpath(file) == path:
            return name
    return None


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
    module = _fake_kernel_module(f"{namespace}::{opname}")
    if module is not None and not _foreign(module, None):
        return module, None  # ``torch.library.define`` and ``register_fake`` in an importable module
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


def memory_format(name: str) -> torch.memory_format:
    """``torch.<name>`` (``contiguous_format``, ``channels_last``, ...), as the worker rebuilds it."""
    return getattr(torch, name)


def _none() -> None:
    return None


# Higher-order ops whose nodes point at state that only this process holds.
_PROCESS_LOCAL_HOPS = {
    "triton_kernel_wrapper_functional": "it names a user-defined Triton kernel by its index in this process's "
    "kernel side table (torch._higher_order_ops.triton_kernel_wrap.kernel_side_table), which no other process can read",
    "triton_kernel_wrapper_mutation": "it names a user-defined Triton kernel by its index in this process's "
    "kernel side table (torch._higher_order_ops.triton_kernel_wrap.kernel_side_table), which no other process can read",
    "call_torchbind": "it calls a method of a torchbind object, a C++ object in this process's memory",
}


def _torchbind(value: Any) -> bool:
    """A torchbind object that GraphPickler would send as None (value-type opaque objects pickle)."""
    from torch._library.fake_class_registry import FakeScriptObject
    from torch._library.opaque_object import is_opaque_value_type

    if isinstance(value, FakeScriptObject):
        real = object.__getattribute__(value, "real_obj")
        return real is None or not is_opaque_value_type(type(real))
    return isinstance(value, torch.ScriptObject)


def hop_refusal(gm: Any, example_inputs: Any = (), imports: set[str] | None = None) -> str | None:
    """Why the graph's higher-order ops or torchbind objects keep it in this process, or None;
    the modules that define the graph's higher-order ops outside torch go into ``imports``.

    Takes the place of ``FxGraphCache._check_for_hop``, which refuses every op the FX graph
    cache cannot key; here only what cannot cross is refused, by name."""
    for i, value in enumerate(example_inputs):
        if _torchbind(value):
            return (
                f"input {i} is a torchbind object ({type(value).__name__}), a C++ object in this process's memory "
                "that the graph pickler sends as None"
            )
    for module in gm.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            target = node.target
            if node.op == "get_attr" and _torchbind(getattr(module, str(target), None)):
                return f"graph holds the torchbind object {target}, a C++ object in this process's memory"
            if not isinstance(target, torch._ops.HigherOrderOperator):
                continue
            name = target.name()
            if name in _PROCESS_LOCAL_HOPS:
                return f"higher-order op {name} ({node.name}) cannot cross: {_PROCESS_LOCAL_HOPS[name]}"
            cls = type(target)
            if _foreign(cls.__module__, cls.__qualname__):
                return (
                    f"higher-order op {name} is defined in {cls.__module__}.{cls.__qualname__}, which the worker "
                    f"cannot import to find torch.ops.higher_order.{name}"
                )
            if imports is not None and not cls.__module__.startswith("torch."):
                imports.add(cls.__module__)  # the worker registers the op by importing its module
    return None


def effects_of(gm: Any) -> tuple[dict[str, str | None], dict[str, list[str]]]:
    """What the worker's lowering of ``with_effects`` reads from this process's registries:
    the effect type of each op the graph runs under ``with_effects`` (registered at run time
    by the user's code, perhaps), and the effects of ``invoke_subgraph`` regions, kept on the
    TracingContext, which GraphPickler does not carry."""
    from torch._higher_order_ops.effects import _get_effect, _get_op_qualname
    from torch._higher_order_ops.invoke_subgraph import invoke_subgraph

    ops: dict[str, str | None] = {}
    regions: dict[str, list[str]] = {}
    context = torch._guards.TracingContext.try_get()
    cache = context.hop_dispatch_set_cache.get_cache(invoke_subgraph) if context is not None else None
    for module in gm.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.find_nodes(op="call_function", target=torch.ops.higher_order.with_effects):
            op = node.args[1]
            if op is invoke_subgraph:
                found = cache.get_effects(node.args[3]) if cache is not None else None
                if found:
                    regions[node.args[3]] = sorted(e.value for e in found)
            else:
                effect = _get_effect(op)
                ops[_get_op_qualname(op)] = effect.value if effect is not None else None
    return ops, regions


def _input_with_effects(effects: Any, cls: type, values: tuple) -> Any:
    """Worker side: set the parent's effect types, then build the ``_WireProtocolInput``."""
    from torch._higher_order_ops.effects import _get_effect, _register_effectful_op
    from torch._higher_order_ops.invoke_subgraph import invoke_subgraph
    from torch._library.effects import EffectType

    ops, regions = effects
    for qualname, name in ops.items():
        wanted = EffectType(name) if name is not None else None
        if _get_effect(qualname) != wanted:
            _register_effectful_op(qualname, wanted)
    wire_input = cls(*values)
    context = wire_input.tracing_context
    if regions and context is not None:
        cache = context.hop_dispatch_set_cache.get_cache(invoke_subgraph)
        for identifier, names in regions.items():
            cache.add_effects(identifier, {EffectType(n) for n in names})
    return wire_input


def _graph_module_with_code(unpickle: Any, data: Any, state: Any) -> Any:
    """GraphPickler rebuilds a graph module without its generated code (no ``forward``);
    Inductor calls the subgraphs of ``cond``, ``while_loop``, ``scan``, ``map_impl`` and
    ``invoke_subgraph`` while it compiles, so those get their code back."""
    gm = unpickle(data, state)
    gm.recompile()
    return gm


@functools.lru_cache(maxsize=1)
def _options_class() -> type:
    from torch.fx._graph_pickler import Options

    @dataclass
    class WireOptions(Options):
        top: Any = None  # the graph being compiled, which Inductor lowers without calling it
        effects: Any = None  # effects_of(top), set in the worker before it compiles

    return WireOptions


def _make_pickler_class() -> type:
    from torch._guards import ModuleContext
    from torch._inductor.compile_fx_ext import _WireProtocolInput
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx._graph_pickler import GraphPickler

    class SandboxPickler(GraphPickler):
        """GraphPickler that carries user-defined classes and objects by name, subgraphs
        with their code, and the effect types the graph's lowering reads."""

        def reducer_override(self, obj: object) -> Any:  # type: ignore[override]
            reduced = super().reducer_override(obj)
            if reduced is not NotImplemented:
                if isinstance(obj, torch.fx.GraphModule) and obj is not getattr(self.options, "top", None):
                    return (_graph_module_with_code, (reduced[0], *reduced[1]))
                return reduced
            effects = getattr(self.options, "effects", None)
            if type(obj) is _WireProtocolInput and effects and any(effects):
                values = tuple(getattr(obj, f.name) for f in fields(obj))
                return (_input_with_effects, (effects, _WireProtocolInput, values))
            if isinstance(obj, torch.memory_format):
                # It pickles as the bare name "torch.contiguous_format", which pickle looks up in
                # every loaded module; it can find the user's script there (``__mp_main__``), which
                # the worker cannot import.
                return (memory_format, (str(obj).rsplit(".", 1)[-1],))
            if isinstance(obj, ModuleContext):
                # Dynamo's record of the modules it met (the user's, a cond branch's graph with
                # weak references in its node meta): Inductor reads it only to free eager
                # parameters under freezing, which in a worker would touch copies.
                return (ModuleContext, ())
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
    cache of the last export plus the keys set since (``readonly_values``, torch 2.13), not a
    fresh export per graph; the dict is only pickled, never changed
    (docs/decisions/wire-pickler-shortcuts.md)."""
    try:
        return inductor_config.save_config_portable(readonly_values=True)
    except TypeError:  # torch 2.11: no such parameter
        return inductor_config.save_config_portable()


def _lowering_serializer(ext: Any) -> Any:
    """``compile_fx_ext._LoweringSerializer()``: the same set of forced-fallback lowerings,
    found with ``getattr`` instead of a try/except per lowering, which raises and catches an
    exception for every lowering without the mark, on every graph (docs/decisions/wire-pickler-shortcuts.md)."""
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
    from torch._inductor.codecache import BypassFxGraphCache
    from torch._inductor.output_code import CompiledFxGraphConstantsWithGm

    crossing = _Crossing()
    refusal = hop_refusal(gm, example_inputs, crossing.imports)
    if refusal:
        raise Unpicklable(refusal)

    deterministic_guard = None
    try:
        deterministic_guard = torch.testing._internal.common_utils.DeterministicGuard._current_state()  # type: ignore[attr-defined]
    except AttributeError:
        pass

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
    options = _options_class()(ops_filter=crossing.ops_filter, top=gm, effects=effects_of(gm))
    try:
        data = _pickler_class().dumps(wire_input, options)
    except BypassFxGraphCache as e:
        reason = crossing.refused[0] if crossing.refused else str(e)
        raise Unpicklable(reason) from e
    except Exception as e:  # anything the pickler trips over means: cannot cross
        where = _unpicklable_path(wire_input, options)
        if env.get("SANDBOX_DEBUG_PICKLE"):
            log.warning("sandbox: unpicklable object at %s", where)
        at = f" (at {where[:200]})" if where else ""
        raise Unpicklable(f"{type(e).__name__}: {str(e)[:300]}{at}") from e
    libraries = sorted(getattr(torch.ops, "loaded_libraries", ()) or ())
    return WirePayload(data, CompiledFxGraphConstantsWithGm(gm), sorted(crossing.imports), libraries)


def _unpicklable_path(wire_input: Any, options: Any) -> str | None:
    """Where in the graph's payload the first object the pickler refuses sits (GraphPickler's
    ``debug_dumps``, with the options ``dumps`` failed with), so that the report names it; None
    where torch cannot say."""
    try:
        path = _pickler_class().debug_dumps(wire_input, options, verbose=False)
    except Exception:  # noqa: BLE001 - an older torch without debug_dumps, or the walk itself failed
        return None
    return str(path) if path else None


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


def load_custom_op_sources(imports: list[str], libraries: list[str]) -> None:
    for path in libraries:
        if path not in getattr(torch.ops, "loaded_libraries", set()):
            torch.ops.load_library(path)
    for module in imports:
        importlib.import_module(module)
