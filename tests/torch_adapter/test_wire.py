"""Tests of a graph across the process boundary (``sandbox/torch_adapter/wire.py``): serializing
it with ``GraphPickler`` and the compile_fx_ext wire protocol, custom ops' origin, the child
half and the output's way back.

One test per touch point of a private PyTorch API, each naming the symbols it relies on.
Written against torch 2.13.0: when a torch release moves or changes one of these symbols,
the test for it fails here, by name, instead of deep inside a user's compile."""

from __future__ import annotations

from typing import Any

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


def test_custom_op_origin() -> None:
    """torch 2.13.0: ``torch._library.custom_ops.OPDEFS`` maps ``ns::name`` to a
    ``CustomOpDef`` whose ``_init_fn`` is the user's function; an op from
    ``__main__`` is refused with a reason, ``prims`` always crosses."""
    crossing = wire._Crossing()
    assert crossing.ops_filter("torch.ops.prims.fma.default")
    assert crossing.ops_filter("torch.ops.aten.mm.default")
    assert crossing.ops_filter("torch.ops.sandbox_compat_test.scale.default")
    assert crossing.imports == {recording.__name__}

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
