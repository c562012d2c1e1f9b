"""Tests of a graph across the process boundary (``sandbox/torch_adapter/wire.py``): serializing
it with ``GraphPickler`` and the compile_fx_ext wire protocol, custom ops' origin, the child
half and the output's way back.

One test per touch point of a private PyTorch API, each naming the symbols it relies on.
Written against torch 2.13.0: when a torch release moves or changes one of these symbols,
the test for it fails here, by name, instead of deep inside a user's compile."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import recording
import torch

from sandbox.torch_adapter import wire


def test_serialize_graph_carries_prims_custom_ops_and_user_classes(recorded: dict[str, Any]) -> None:
    """torch 2.13.0: ``compile_fx_ext._WireProtocolInput`` (11 positional fields),
    ``config.save_config_portable``, ``_VirtualizedSerializer``, ``_LoggerState``,
    ``_LoweringSerializer``, ``_FakeTensorModeSerializer``, ``_current_fake_mode``,
    ``_graph_contains_triton_kernel_wrappers``, ``FxGraphCache._check_for_hop``,
    ``CompiledFxGraphConstantsWithGm`` and ``GraphPickler.dumps(obj, Options(ops_filter=...))``
    pickle a graph with a ``prims`` op, a custom op and a model class from ``__main__``."""
    forward = recorded["scheme"].calls[0]
    targets = {str(n.target) for n in forward["gm"].graph.nodes if n.op == "call_function"}
    assert "prims.fma.default" in targets, targets
    assert "sandbox_compat_test.scale.default" in targets, targets
    for call in recorded["scheme"].calls:
        payload = call["payload"]
        assert isinstance(payload.data, bytes) and payload.data
        assert type(payload.constants).__name__ == "CompiledFxGraphConstantsWithGm"
    assert forward["payload"].imports == [recording.__name__]  # the module that defines `scale`
    assert b"__main__" not in forward["payload"].data


def test_run_in_child_and_load_output_round_trip(recorded: dict[str, Any]) -> None:
    """torch 2.13.0: ``_SerializedFxCompile._run_in_child(_WireProtocolPickledInput, env)``
    returns ``_WireProtocolPickledOutput`` whose ``.value`` is bytes;
    ``_WireProtocolPickledOutput(data).deserialize(constants)`` and
    ``_OutOfProcessFxCompile._postprocess`` give a ``CompiledFxGraph`` in the parent.
    Here the child half runs in this process, as the worker runs it."""
    from torch._inductor.output_code import CompiledFxGraph

    for call in recorded["scheme"].calls:
        payload = call["payload"]
        wire.load_custom_op_sources(payload.imports, payload.libraries)
        output = wire.run_in_child(payload.data, {})
        assert isinstance(output, bytes) and output
        graph = wire.load_output(output, payload.constants, call["region"])
        assert isinstance(graph, CompiledFxGraph)
        assert "def call(" in graph.source_code
        assert graph.compile_region_name == call["region"]


def test_pickler_carries_user_objects_by_name() -> None:
    """torch 2.13.0: ``torch.fx._graph_pickler.GraphPickler`` has ``reducer_override``,
    ``dumps(obj, options)`` and ``loads(data, fake_mode)``; the sandbox's subclass turns
    classes, functions and instances the worker cannot import into stand-ins."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx._graph_pickler import GraphPickler, Options

    class Local:
        def __repr__(self) -> str:
            return "Local()"

    def local_fn() -> None:
        return None

    pickler = wire._pickler_class()
    assert issubclass(pickler, GraphPickler)
    data = pickler.dumps({"cls": Local, "fn": local_fn, "obj": Local(), "mode": FakeTensorMode()}, Options())
    back = GraphPickler.loads(data, FakeTensorMode())
    assert back["cls"].__qualname__ == Local.__qualname__ and back["cls"]._sandbox_stand_in
    assert isinstance(back["fn"], wire.StandIn) and back["fn"].qualname == local_fn.__qualname__
    assert isinstance(back["obj"], wire.StandIn) and back["obj"].text == "Local()"
    assert back["mode"] is None


def test_memory_format_crosses_by_its_torch_name() -> None:
    """torch 2.13.0: a ``torch.memory_format`` has no ``__module__`` and reduces to the bare name
    ``"torch.contiguous_format"``, which pickle resolves by searching every loaded module: in a
    training script it found ``__mp_main__`` (the script, aliased by multiprocessing) first, and the
    worker, whose main module is not the script, could not load the graph. The sandbox's pickler
    names the format through torch itself."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx._graph_pickler import GraphPickler, Options

    data = wire._pickler_class().dumps({"format": torch.channels_last}, Options())
    assert b"torch.channels_last" not in data and b"memory_format" in data  # no search of sys.modules
    assert GraphPickler.loads(data, FakeTensorMode())["format"] is torch.channels_last
    assert wire.memory_format("contiguous_format") is torch.contiguous_format


torch.library.define("sandbox_wire_test::defined", "(Tensor x) -> Tensor")
torch.library.impl("sandbox_wire_test::defined", "cpu", lambda x: x + 1)
torch.library.register_fake("sandbox_wire_test::defined", lambda x: torch.empty_like(x))


def test_custom_op_origin() -> None:
    """torch 2.13.0: ``torch._library.custom_ops.OPDEFS`` maps ``ns::name`` to a
    ``CustomOpDef`` whose ``_init_fn`` is the user's function; an op from
    ``__main__`` is refused with a reason, ``prims`` always crosses."""
    crossing = wire._Crossing()
    assert crossing.ops_filter("torch.ops.prims.fma.default")
    assert crossing.ops_filter("torch.ops.aten.mm.default")
    assert crossing.ops_filter("torch.ops.sandbox_compat_test.scale.default")
    assert crossing.imports == {recording.__name__}
    # torch.library.define keeps its Library out of the module's names (torch.library._keep_alive):
    # the registered fake kernel (torch._library.simple_registry) names the module instead.
    assert crossing.ops_filter("torch.ops.sandbox_wire_test.defined.default")
    assert crossing.imports == {recording.__name__, __name__}

    def main_op(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    main_op.__module__ = "__main__"
    torch.library.custom_op("sandbox_compat_test::from_main", main_op, mutates_args=())
    assert not crossing.ops_filter("torch.ops.sandbox_compat_test.from_main.default")
    assert "__main__" in crossing.refused[0] and "from_main" in crossing.refused[0]


def test_serialize_graph_shortcuts_equal_the_stock_values() -> None:
    """torch 2.13.0: ``save_config_portable(readonly_values=True)`` and
    ``compile_fx_ext._LoweringSerializer.fallbacks``: the cheaper forms ``serialize_graph``
    uses give what the stock scheme would send, also right after a config change and with
    a lowering forced to fall back."""
    from torch._inductor import compile_fx_ext as ext
    from torch._inductor import config as inductor_config
    from torch._inductor import lowering

    assert wire._portable_config(inductor_config) == inductor_config.save_config_portable()
    with inductor_config.patch(max_autotune=not inductor_config.max_autotune):
        assert wire._portable_config(inductor_config) == inductor_config.save_config_portable()
    assert wire._lowering_serializer(ext).fallbacks == ext._LoweringSerializer().fallbacks
    op = torch.ops.aten.sin.default
    saved = lowering.lowerings[op]
    try:
        lowering.make_fallback(op, warn=False, override_decomp=True)
        got = wire._lowering_serializer(ext).fallbacks
        assert str(op) in got and got == ext._LoweringSerializer().fallbacks
    finally:
        lowering.lowerings[op] = saved


# --- higher-order ops and effects ------------------------------------------------------


@torch.library.custom_op("sandbox_wire_test::noted", mutates_args=())
def noted(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@noted.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


@torch.compiler.nested_compile_region
def _region(x: torch.Tensor) -> torch.Tensor:
    return x.sin().cos()


def _record(fn: Any, *args: torch.Tensor) -> list[dict[str, Any]]:
    """Compile ``fn`` through the seam in this process (forward, and backward where an
    input wants a gradient); the scheme's calls, each with its serialized payload."""
    from sandbox import backend as sandbox_backend
    from sandbox import runtime

    runtime.current().ensure_seam(sandbox_backend._route)
    scheme = recording.RecordingScheme()
    torch._dynamo.reset()
    with torch._functorch.config.patch(enable_autograd_cache=False):
        out = torch.compile(fn, backend=recording.recording_backend(scheme, []))(*args)
        if out.requires_grad:
            out.sum().backward()
    return scheme.calls


def _targets(gm: Any) -> set[str]:
    return {str(n.target) for m in gm.modules() for n in getattr(m, "graph", torch.fx.Graph()).nodes}


def test_effectful_graph_crosses_with_the_effect_types_of_this_process() -> None:
    """torch 2.13.0: a graph with ``with_effects`` (``linalg.inv``'s error check, and a custom op
    this process registered as ordered at run time)
    serializes although ``FxGraphCache._check_for_hop`` refuses it; ``effects_of`` reads
    ``torch._higher_order_ops.effects._get_effect`` and the unpickled input registers the same
    effect types in a process that lacks them, before Inductor lowers the graph."""
    from torch._higher_order_ops.effects import _get_effect, _register_effectful_op
    from torch._inductor.codecache import BypassFxGraphCache, FxGraphCache
    from torch._inductor.output_code import CompiledFxGraph
    from torch._library.effects import EffectType

    handle = _register_effectful_op("sandbox_wire_test::noted", EffectType.ORDERED)
    try:

        def fn(x: torch.Tensor) -> torch.Tensor:
            return noted(torch.linalg.inv(x)) + 1

        (call,) = _record(fn, torch.randn(4, 4) + 4 * torch.eye(4))
        gm, payload = call["gm"], call["payload"]
        assert "with_effects" in _targets(gm)
        with pytest.raises(BypassFxGraphCache, match="with_effects"):
            FxGraphCache._check_for_hop(gm)  # what the stock subprocess mode stops at
        assert wire.hop_refusal(gm, []) is None
        ops, regions = wire.effects_of(gm)
        assert ops == {"aten::_linalg_check_errors": "Ordered", "sandbox_wire_test::noted": "Ordered"}
        assert regions == {}
        handle.destroy()  # now this process's registry is a fresh worker's
        assert _get_effect("sandbox_wire_test::noted") is None
        graph = wire.load_output(wire.run_in_child(payload.data, {}), payload.constants, call["region"])
        assert _get_effect("sandbox_wire_test::noted") is EffectType.ORDERED
        assert isinstance(graph, CompiledFxGraph) and "sandbox_wire_test.noted" in graph.source_code
    finally:
        _register_effectful_op("sandbox_wire_test::noted", None)


def test_subgraphs_of_control_flow_and_regions_cross_with_their_code() -> None:
    """torch 2.13.0: ``GraphPickler`` rebuilds a ``GraphModule`` through
    ``_GraphModulePickleData.unpickle`` without its generated ``forward``; Inductor calls the
    subgraphs of ``cond`` and ``invoke_subgraph`` (and ``while_loop``, ``scan``, ``map_impl``)
    while it compiles, which failed with 'missing the required "forward" function'. The
    forward and backward graphs of both compile in the child half."""
    from torch._higher_order_ops.cond import cond
    from torch._inductor.output_code import CompiledFxGraph

    def fn(x: torch.Tensor) -> torch.Tensor:
        y = cond(x.sum() > 0, lambda t: t.sin(), lambda t: t.cos(), (x,))
        return _region(y) + _region(y * 2)

    calls = _record(fn, torch.randn(8, requires_grad=True))
    assert len(calls) == 2  # forward and backward
    assert {"cond", "invoke_subgraph"} <= {t.rsplit(".", 1)[-1] for t in _targets(calls[0]["gm"])}
    for call in calls:
        assert wire.hop_refusal(call["gm"]) is None
        payload = call["payload"]
        graph = wire.load_output(wire.run_in_child(payload.data, {}), payload.constants, call["region"])
        assert isinstance(graph, CompiledFxGraph)


def test_hop_refusal_names_the_op_and_why() -> None:
    """torch 2.13.0: ``HigherOrderOperator.name()`` (an operator registers itself as
    ``torch.ops.higher_order.<name>`` when its module runs), ``triton_kernel_wrapper_functional``, and
    torchbind objects (``torch.ScriptObject``; ``FakeScriptObject``) as attributes or inputs."""
    from torch._higher_order_ops.triton_kernel_wrap import triton_kernel_wrapper_functional
    from torch._ops import HigherOrderOperator

    def graph_with(target: Any) -> torch.fx.GraphModule:
        g = torch.fx.Graph()
        x = g.placeholder("x")
        g.output(g.call_function(target, (x,)))
        return torch.fx.GraphModule(torch.nn.Module(), g)

    reason = wire.hop_refusal(graph_with(triton_kernel_wrapper_functional))
    assert reason and "triton_kernel_wrapper_functional" in reason and "kernel side table" in reason

    class LocalHop(HigherOrderOperator):
        def __init__(self) -> None:
            super().__init__("sandbox_wire_test_hop")

        def __call__(self, *args: Any) -> Any:
            return super().__call__(*args)

    reason = wire.hop_refusal(graph_with(LocalHop()))
    assert reason and "sandbox_wire_test_hop" in reason and "<locals>.LocalHop" in reason, reason
    LocalHop.__qualname__ = "LocalHop"
    LocalHop.__module__ = recording.__name__  # as if defined there: the worker imports that module
    imports: set[str] = set()
    assert wire.hop_refusal(graph_with(LocalHop()), [], imports) is None
    assert imports == {recording.__name__}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensors are deprecated; the packed weight is a torchbind object
        packed = torch.ops.quantized.linear_prepack(torch.quantize_per_tensor(torch.randn(4, 4), 0.1, 0, torch.qint8))
    assert isinstance(packed, torch.ScriptObject)
    root = torch.nn.Module()
    root.packed = packed
    g = torch.fx.Graph()
    g.output(g.get_attr("packed"))
    reason = wire.hop_refusal(torch.fx.GraphModule(root, g))
    assert reason and "torchbind object packed" in reason
    reason = wire.hop_refusal(graph_with(torch.ops.aten.sin.default), [torch.randn(2), packed])
    assert reason and "input 1 is a torchbind object" in reason


def test_an_object_that_cannot_cross_is_named_by_where_it_sits() -> None:
    """torch 2.13.0: ``GraphPickler.debug_dumps(obj, options, verbose=False)`` returns the path of
    the first object ``dumps`` refuses: the report's reason names it beside the pickler's error."""
    g = torch.fx.Graph()
    g.output(g.call_function(torch.ops.aten.sin.default, (g.placeholder("x"),)))
    gm = torch.fx.GraphModule(torch.nn.Module(), g)
    with pytest.raises(wire.Unpicklable) as raised:
        wire.serialize_graph(gm, [torch.randn(2), (i for i in range(2))], [], {})
    assert str(raised.value) == "TypeError: cannot pickle 'generator' object (at root.example_inputs[1])"


def test_dynamos_module_record_stays_behind() -> None:
    """torch 2.13.0: ``torch._guards.ModuleContext`` (``TracingContext.module_context.nn_modules``,
    Dynamo's record of the modules it met) travels inside the ``TracingContext``; on CUDA a
    ``cond`` branch's graph there held weak references and kept the graph in the user's process.
    The worker gets an empty record: Inductor reads it only under freezing."""
    from torch._guards import TracingContext, tracing
    from torch._inductor.compile_fx_ext import _WireProtocolPickledInput
    from torch._subclasses.fake_tensor import FakeTensorMode

    g = torch.fx.Graph()
    g.output(g.call_function(torch.ops.aten.sin.default, (g.placeholder("x"),)))
    gm = torch.fx.GraphModule(torch.nn.Module(), g)
    ctx = TracingContext(FakeTensorMode())
    ctx.module_context.nn_modules["held"] = (i for i in range(2))  # pickles no more than a weakref
    with tracing(ctx):
        payload = wire.serialize_graph(gm, [torch.randn(2)], [], {})
    received = _WireProtocolPickledInput(payload.data).deserialize()
    assert isinstance(received.tracing_context, TracingContext)
    assert received.tracing_context.module_context.nn_modules == {}
    assert "held" in ctx.module_context.nn_modules  # this process's record is untouched
