"""One test per touch point of a private PyTorch API (``sandbox/isolation/compat.py``).

Each test names the torch version it was written against. When a torch release
moves or changes one of these symbols, the test for it fails here, by name,
instead of deep inside a user's compile. Everything runs in this process (no
worker): one small training compile, recorded at the seam, feeds several tests.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import threading
import time
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sandbox import backend as sandbox_backend
from sandbox import runtime
from sandbox.isolation import compat

WRITTEN_AGAINST = "2.13.0"


# A custom op defined in an importable module (this one): it may cross the boundary,
# and the worker is told to import this module to get it.
@torch.library.custom_op("sandbox_compat_test::scale", mutates_args=())
def scale(x: torch.Tensor, s: float) -> torch.Tensor:
    return x * s


@scale.register_fake
def _(x: torch.Tensor, s: float) -> torch.Tensor:
    return torch.empty_like(x)


scale.register_autograd(
    lambda ctx, grad: (grad * ctx.s, None),
    setup_context=lambda ctx, inputs, output: setattr(ctx, "s", inputs[1]),
)


def _user_model() -> nn.Module:
    """A model whose class only the user's script knows: local to a function and
    claiming to live in ``__main__``, the two everyday shapes of training code."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.prims.fma(self.fc(x), x, x)  # a prims op: refused by the stock pickler
            return F.gelu(scale(y, 0.5))

    Block.__module__ = "__main__"
    return Block()


class RecordingScheme:
    """Stands where ``IsolatedCompile`` stands: records what the seam hands it,
    serializes it as the sandbox would, then compiles in this process."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def codegen_and_compile(
        self, gm: Any, example_inputs: Any, inputs_to_check: Any, graph_kwargs: dict, region: Any
    ) -> Any:
        self.calls.append(
            {
                "gm": gm,
                "graph_kwargs": dict(graph_kwargs),
                "region": region,
                "compile_id": compat.current_compile_id(),
                "payload": compat.serialize_graph(gm, example_inputs, inputs_to_check, graph_kwargs),
            }
        )
        return compat.compile_in_process(gm, example_inputs, inputs_to_check, graph_kwargs, region)


def _recording_backend(scheme: RecordingScheme, locations: list) -> Any:
    """The sandbox backend's shape: compile_fx with an inner_compile that sets the
    sandbox's ContextVar, so the replaced fx_codegen_and_compile routes to ``scheme``."""

    def backend(gm: Any, example_inputs: Any) -> Any:
        locations.append(compat.code_location())

        def inner_compile(gm: Any, example_inputs: Any, *args: Any, **kwargs: Any) -> Any:
            token = sandbox_backend._active.set(scheme)
            try:
                return compat.compile_fx_inner(gm, example_inputs, *args, **kwargs)
            finally:
                sandbox_backend._active.reset(token)

        return compat.compile_fx(
            gm, example_inputs, inner_compile=inner_compile, config_patches={"fx_graph_cache": False}
        )

    return backend


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    """One training step of the user model through the seam, compiled in this process."""
    runtime.ensure_seam(sandbox_backend._route)
    scheme = RecordingScheme()
    locations: list = []
    torch.manual_seed(0)
    model = _user_model()
    x = torch.randn(4, 8, requires_grad=True)
    before = compat.counters_snapshot()
    metrics_before = compat.inductor_metrics_snapshot()
    times_before = compat.time_metrics_snapshot()
    with torch._functorch.config.patch(enable_autograd_cache=False):
        compiled = torch.compile(model, backend=_recording_backend(scheme, locations))
        out = compiled(x)
        out.sum().backward()
    after = compat.counters_snapshot()
    metrics_after = compat.inductor_metrics_snapshot()
    times_after = compat.time_metrics_snapshot()
    grad = x.grad.clone()
    x.grad = None
    expected = model(x)
    expected.sum().backward()
    return {
        "scheme": scheme,
        "locations": locations,
        "out": out.detach(),
        "expected": expected.detach(),
        "grad": grad,
        "expected_grad": x.grad.clone(),
        "before": before,
        "after": after,
        "metrics_before": metrics_before,
        "metrics_after": metrics_after,
        "times_before": times_before,
        "times_after": times_after,
    }


def test_seam_installs_and_routes(recorded: dict[str, Any]) -> None:
    """torch 2.13.0: ``compile_fx.fx_codegen_and_compile`` is a module global that
    ``_compile_fx_inner`` looks up at call time; ``compile_fx(inner_compile=...)``
    sends the forward and the lazily compiled backward through ``compile_fx_inner``;
    ``_InProcessFxCompile().codegen_and_compile`` compiles in this process."""
    m = compat.compile_fx_module()
    for name in ("compile_fx", "compile_fx_inner", "fx_codegen_and_compile", "_InProcessFxCompile"):
        assert hasattr(m, name), f"torch._inductor.compile_fx.{name} is gone (written against {WRITTEN_AGAINST})"
    assert compat.seam_installed()
    seam = m.fx_codegen_and_compile
    compat.install_seam(sandbox_backend._route)  # once per process: a second install changes nothing
    assert m.fx_codegen_and_compile is seam
    calls = recorded["scheme"].calls
    kinds = [bool(c["graph_kwargs"].get("is_backward")) for c in calls]
    assert kinds == [False, True], f"expected forward then backward through the seam, got {calls}"
    torch.testing.assert_close(recorded["out"], recorded["expected"])
    torch.testing.assert_close(recorded["grad"], recorded["expected_grad"])


def test_seam_leaves_plain_inductor_alone() -> None:
    """torch 2.13.0: with no sandbox compile active, the replaced
    ``fx_codegen_and_compile`` runs the stock one (``backend="inductor"``)."""
    runtime.ensure_seam(sandbox_backend._route)
    seen: list[Any] = []

    class Trap:
        def codegen_and_compile(self, *args: Any) -> Any:
            seen.append(args)
            raise AssertionError("the seam routed a plain inductor compile")

    assert sandbox_backend._active.get() is None
    fn = torch.compile(lambda a: torch.sin(a) * 3 + 1, backend="inductor")
    a = torch.randn(5)
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        torch.testing.assert_close(fn(a), torch.sin(a) * 3 + 1)
    assert seen == []


def test_seam_passes_compile_region_name_through(recorded: dict[str, Any]) -> None:
    """torch 2.13.0: ``fx_codegen_and_compile`` takes ``compile_region_name`` (2.11
    does not); the seam hands it to the scheme as ``region``, and never inside
    ``graph_kwargs``, whichever way it was passed."""
    for call in recorded["scheme"].calls:
        assert "compile_region_name" not in call["graph_kwargs"]
        assert call["region"] is None or isinstance(call["region"], str)
        assert "is_backward" in call["graph_kwargs"] and "is_inference" in call["graph_kwargs"]


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
    assert forward["payload"].imports == [__name__]
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
        compat.load_custom_op_sources(payload.imports, payload.libraries)
        output = compat.run_in_child(payload.data, {})
        assert isinstance(output, bytes) and output
        graph = compat.load_output(output, payload.constants, call["region"])
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

    pickler = compat._pickler_class()
    assert issubclass(pickler, GraphPickler)
    data = pickler.dumps({"cls": Local, "fn": local_fn, "obj": Local(), "mode": FakeTensorMode()}, Options())
    back = GraphPickler.loads(data, FakeTensorMode())
    assert back["cls"].__qualname__ == Local.__qualname__ and back["cls"]._sandbox_stand_in
    assert isinstance(back["fn"], compat.StandIn) and back["fn"].qualname == local_fn.__qualname__
    assert isinstance(back["obj"], compat.StandIn) and back["obj"].text == "Local()"
    assert back["mode"] is None


def test_custom_op_origin() -> None:
    """torch 2.13.0: ``torch._library.custom_ops.OPDEFS`` maps ``ns::name`` to a
    ``CustomOpDef`` whose ``_init_fn`` is the user's function; an op from
    ``__main__`` is refused with a reason, ``prims`` always crosses."""
    crossing = compat._Crossing()
    assert crossing.ops_filter("torch.ops.prims.fma.default")
    assert crossing.ops_filter("torch.ops.aten.mm.default")
    assert crossing.ops_filter("torch.ops.sandbox_compat_test.scale.default")
    assert crossing.imports == {__name__}

    def main_op(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    main_op.__module__ = "__main__"
    torch.library.custom_op("sandbox_compat_test::from_main", main_op, mutates_args=())
    assert not crossing.ops_filter("torch.ops.sandbox_compat_test.from_main.default")
    assert "__main__" in crossing.refused[0] and "from_main" in crossing.refused[0]


def test_compile_in_process_and_eager_callable() -> None:
    """torch 2.13.0: ``torch._functorch.aot_autograd.make_boxed_func`` and
    ``torch.fx._lazy_graph_module._LazyGraphModule.force_recompile``: a graph that
    runs uncompiled is called boxed (one list argument) and computes the graph."""
    gm = torch.fx.symbolic_trace(lambda a, b: (torch.relu(a) + b,))
    f = compat.eager_callable(gm)
    assert getattr(f, "_boxed_call", False)
    a, b = torch.randn(3), torch.randn(3)
    (out,) = f([a, b])
    torch.testing.assert_close(out, torch.relu(a) + b)


def test_mode_and_option_names() -> None:
    """torch 2.13.0: ``torch._inductor.list_mode_options()`` lists the modes,
    ``list_mode_options(mode)`` maps one to config patches, ``list_options()`` lists
    Inductor's config keys."""
    names = compat.mode_names()
    assert {"default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"} <= set(names)
    patches = compat.list_mode_options("max-autotune-no-cudagraphs")
    assert patches.get("max_autotune") is True and not patches.get("triton.cudagraphs")
    options = compat.inductor_option_names()
    assert {"fx_graph_cache", "max_autotune", "triton.cudagraphs"} <= options
    assert all(k in options for k in patches)


def test_cache_clock_ticks_on_clear_caches() -> None:
    """torch 2.13.0: ``torch._inductor.utils.clear_on_fresh_cache(obj)`` registers an
    object whose ``cache_clear()`` ``clear_caches()`` (and ``fresh_cache()``) call."""
    clock = compat.CacheClock()
    compat.register_cache_clock(clock)
    assert clock.value == 0
    compat.clear_inductor_caches()
    assert clock.value == 1
    from torch._inductor.utils import fresh_cache

    with fresh_cache():
        pass
    assert clock.value >= 2


def test_counters_snapshot_and_deltas(recorded: dict[str, Any]) -> None:
    """torch 2.13.0: ``torch._dynamo.utils.counters`` is a dict of Counters keyed by
    group; a compile moves ``frames``/``aot_autograd``/``inductor`` counters."""
    deltas = compat.counter_deltas(recorded["before"], recorded["after"])
    assert deltas.get("frames", {}).get("ok", 0) >= 1, deltas
    assert deltas.get("aot_autograd", {}).get("ok", 0) >= 1, deltas
    before = compat.counters_snapshot()
    compat.apply_counter_deltas({"sandbox_compat_test": {"worker_only": 3}})
    assert compat.counter_deltas(before, compat.counters_snapshot()) == {"sandbox_compat_test": {"worker_only": 3}}
    from torch._dynamo.utils import counters

    assert counters["sandbox_compat_test"]["worker_only"] >= 3


def test_compile_id_and_code_location_inside_a_backend(recorded: dict[str, Any]) -> None:
    """torch 2.13.0: ``torch._guards.CompileContext.current_compile_id()`` is set
    while a backend runs (forward and lazily compiled backward), and
    ``torch._dynamo.symbolic_convert.InstructionTranslator.current_tx().f_code`` is
    the user frame being compiled."""
    import re

    for call in recorded["scheme"].calls:
        assert call["compile_id"] and re.fullmatch(r"\d+/\d+", call["compile_id"]), call["compile_id"]
    (location,) = recorded["locations"]
    co_name, filename, line = location
    assert co_name == "forward"
    assert filename == __file__
    assert isinstance(line, int) and line > 0
    assert compat.current_compile_id() is None
    assert compat.code_location() == (None, None, None)


def test_compile_lock_released() -> None:
    """torch 2.13.0: ``torch._dynamo.convert_frame.compile_lock`` is a re-entrant lock
    with ``_is_owned``/``_release_save``/``_acquire_restore``: while a thread waits on
    a worker, another thread can take it, and the owner gets it back at full depth."""
    from torch._dynamo.convert_frame import compile_lock

    got: list[bool] = []

    def other() -> None:
        ok = compile_lock.acquire(timeout=10)
        got.append(ok)
        if ok:
            compile_lock.release()

    with compile_lock, compile_lock:  # dynamo re-enters it
        with compat.compile_lock_released():
            assert not compile_lock._is_owned()
            t = threading.Thread(target=other)
            t.start()
            t.join(timeout=15)
        assert compile_lock._is_owned()
        compile_lock.release()
        assert compile_lock._is_owned()  # depth 2 restored
        compile_lock.acquire()
    assert got == [True]
    with compat.compile_lock_released():  # not owned: a no-op
        assert not compile_lock._is_owned()


def test_compile_context_sets_compile_id() -> None:
    """torch 2.13.0: ``torch._guards.CompileId.from_string`` parses ``"frame/attempt"``
    and ``torch._guards.compile_context(CompileContext(cid))`` makes it current."""
    with compat.compile_context("3/1"):
        assert compat.current_compile_id() == "3/1"
    assert compat.current_compile_id() is None
    with compat.compile_context("not an id"):
        assert compat.current_compile_id() is None
    with compat.compile_context(None):
        assert compat.current_compile_id() is None


def test_warm_up_inductor() -> None:
    """torch 2.13.0: ``torch._inductor.cpu_vec_isa.pick_vec_isa`` (the CPU
    instruction-set probe, cached by ``valid_vec_isa_list``) and the modules a
    first compile imports."""
    from torch._inductor import cpu_vec_isa

    compat.warm_up_inductor()
    for module in ("torch._inductor.compile_fx_ext", "torch._inductor.scheduler", "torch._inductor.codegen.cpp"):
        assert module in sys.modules
    assert cpu_vec_isa.valid_vec_isa_list.cache_info().currsize >= 1
    assert isinstance(cpu_vec_isa.pick_vec_isa(), cpu_vec_isa.VecISA)


def test_load_custom_op_sources_and_cache_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """torch 2.13.0: ``torch.ops.loaded_libraries`` lists what ``torch.ops.load_library``
    loaded; the worker imports op-defining modules by name and shares the cache dirs."""
    assert isinstance(getattr(torch.ops, "loaded_libraries", set()), set)
    compat.load_custom_op_sources(["json"], [])
    assert "json" in sys.modules
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    assert compat.cache_env() == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}


def test_capture_chromium_events() -> None:
    """torch 2.13.0: ``ChromiumEventLogger._log_timed_event`` looks
    ``torch._dynamo.utils.record_chromium_event_internal`` up at call time and hands
    it every ``dynamo_timed`` begin/end event (``name``, ``ts`` in microseconds,
    ``ph``, ``args.compile_id``); the capture ends with the block."""
    import torch._dynamo.utils as dynamo_utils
    from torch._dynamo.utils import dynamo_timed

    assert callable(dynamo_utils.record_chromium_event_internal)
    with compat.capture_chromium_events() as events:
        with compat.compile_context("2/0"), dynamo_timed("sandbox_compat_test_stage"):
            pass
    mine = [e for e in events if e["name"] == "sandbox_compat_test_stage"]
    assert [e["ph"] for e in mine] == ["B", "E"], events
    assert mine[0]["args"]["compile_id"] == "2/0"
    assert 0 < mine[1]["ts"] - mine[0]["ts"] < 10e6  # microseconds of one clock
    with dynamo_timed("sandbox_compat_test_after"):
        pass
    assert not any(e["name"] == "sandbox_compat_test_after" for e in events)


def test_chromium_logger_id() -> None:
    """torch 2.13.0: ``torch._dynamo.utils.get_chromium_event_logger()`` is one
    ``ChromiumEventLogger`` per process with a uuid string ``id_``; the worker takes
    the parent's."""
    from torch._dynamo.utils import get_chromium_event_logger

    own = compat.chromium_logger_id()
    assert isinstance(own, str) and own == get_chromium_event_logger().id_
    try:
        compat.set_chromium_logger_id("parent-logger-id")
        assert compat.chromium_logger_id() == "parent-logger-id"
        compat.set_chromium_logger_id(None)  # no id from the parent: left as it is
        assert compat.chromium_logger_id() == "parent-logger-id"
    finally:
        get_chromium_event_logger().id_ = own


def test_probe_cpu_isa() -> None:
    """torch 2.13.0: ``torch._inductor.cpu_vec_isa`` has ``x86_isa_checker()``,
    ``supported_vec_isa_list`` (VecISA objects whose ``str`` lists their CPU flags and
    whose ``bool`` runs the build-and-load check) and ``pick_vec_isa()``."""
    import platform

    from torch._inductor import cpu_vec_isa

    if platform.machine() in ("x86_64", "AMD64"):
        assert isinstance(cpu_vec_isa.x86_isa_checker(), list)
        assert cpu_vec_isa.supported_vec_isa_list
        assert all(isinstance(isa, cpu_vec_isa.VecISA) and str(isa) for isa in cpu_vec_isa.supported_vec_isa_list)
    compat.probe_cpu_isa()
    assert isinstance(cpu_vec_isa.pick_vec_isa(), cpu_vec_isa.VecISA)


def test_inductor_metrics(recorded: dict[str, Any]) -> None:
    """torch 2.13.0: ``torch._inductor.metrics`` keeps its counters as module-level
    ints and lists (``generated_kernel_count``, ``ir_nodes_pre_fusion``,
    ``parallel_reduction_count``, ``nodes_num_elem``, ...); a compile moves them; the
    worker's counts beyond the stock wire's six are added to this process's."""
    from torch._inductor import metrics

    snapshot = recorded["metrics_after"]
    for name in (
        "generated_kernel_count",
        "generated_cpp_vec_kernel_count",
        "ir_nodes_pre_fusion",
        "num_bytes_accessed",
        "parallel_reduction_count",
        "nodes_num_elem",
    ):
        assert name in snapshot, f"torch._inductor.metrics.{name} is gone (written against {WRITTEN_AGAINST})"
    delta = compat.inductor_metrics_delta(recorded["metrics_before"], snapshot)
    assert delta["generated_kernel_count"] >= 1, delta
    assert isinstance(delta["nodes_num_elem"], list)

    saved = (metrics.parallel_reduction_count, metrics.generated_kernel_count)
    try:
        compat.apply_inductor_metrics(
            {"parallel_reduction_count": 3, "generated_kernel_count": 5, "nodes_num_elem": [1]}
        )
        assert metrics.parallel_reduction_count == saved[0] + 3
        assert metrics.generated_kernel_count == saved[1]  # carried by the stock wire already
    finally:
        metrics.parallel_reduction_count, metrics.generated_kernel_count = saved


def test_time_metrics(recorded: dict[str, Any]) -> None:
    """torch 2.13.0: ``dynamo_timed`` appends seconds to
    ``torch._dynamo.utils.compilation_time_metrics[key]`` and, for events with a
    CompilationMetrics column, adds ns to ``cumulative_time_spent_ns[event]``."""
    from torch._dynamo.utils import compilation_time_metrics, cumulative_time_spent_ns

    delta = compat.time_metrics_delta(recorded["times_before"], recorded["times_after"])
    assert delta["compilation_time_metrics"].get("GraphLowering.run"), sorted(delta["compilation_time_metrics"])
    assert delta["cumulative_time_spent_ns"], delta
    key = "sandbox_compat_test.worker_stage"
    try:
        compat.apply_time_metrics({"compilation_time_metrics": {key: [0.25]}, "cumulative_time_spent_ns": {key: 250}})
        assert compilation_time_metrics[key] == [0.25]
        assert cumulative_time_spent_ns[key] == 250
    finally:
        compilation_time_metrics.pop(key, None)
        cumulative_time_spent_ns.pop(key, None)


def test_compilation_metrics_capture_and_apply() -> None:
    """torch 2.13.0: ``torch._dynamo.utils._metrics_context_tls.metrics_context`` is the
    ``MetricsContext`` (``torch._dynamo.metrics_context``) that ``dynamo_timed(...,
    dynamo_compile_column_us=...)`` increments while a compile id is current;
    ``get_metrics_context().in_progress()`` / ``increment`` add to it."""
    import time

    from torch._dynamo.utils import dynamo_timed, get_metrics_context

    compat.apply_compilation_metrics({"post_grad_pass_time_us": 5})  # no compile in progress: nothing
    with compat.capture_compilation_metrics() as captured:
        with (
            compat.compile_context("5/0"),
            dynamo_timed("sandbox_compat_test", dynamo_compile_column_us="post_grad_pass_time_us"),
        ):
            time.sleep(0.002)
        assert get_metrics_context().in_progress()
        compat.apply_compilation_metrics(
            {"inductor_code_gen_cumulative_compile_time_us": 7, "duration_us": 99, "is_forward": True, "fn_name": "x"}
        )
    assert captured["post_grad_pass_time_us"] >= 2000, captured
    assert captured["inductor_code_gen_cumulative_compile_time_us"] == 7
    assert captured.get("duration_us", 0) < 99_000  # never copied from the worker
    assert "is_forward" not in captured and "fn_name" not in captured
    assert not get_metrics_context().in_progress()


def test_every_touch_point_has_a_test() -> None:
    """Every public function of ``compat`` is exercised by name in this file: a new
    touch point of a private PyTorch API comes with its test."""
    import inspect
    from pathlib import Path

    source = Path(__file__).read_text()
    public = [
        name
        for name, obj in vars(compat).items()
        if not name.startswith("_") and inspect.isfunction(obj) and obj.__module__ == compat.__name__
    ]
    untested = [name for name in public if f"compat.{name}(" not in source]
    assert not untested, f"compat functions without a test in {Path(__file__).name}: {untested}"


def test_inductor_config_diff() -> None:
    """torch 2.13.0: ``torch._inductor.config._config`` entries carry ``default``;
    ``get_config_copy()`` gives current values. A patched key shows up, an unpatched one does not."""
    from torch._inductor import config

    assert "max_autotune" not in compat.inductor_config_diff() or config.max_autotune
    with config.patch(max_autotune=not config._config["max_autotune"].default):
        diff = compat.inductor_config_diff()
        assert diff["max_autotune"] == (not config._config["max_autotune"].default)
    assert "max_autotune" not in compat.inductor_config_diff()


# --- Inductor's remote caches (Redis) -------------------------------------------------------


def test_remote_cache_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.13.0: ``RedisRemoteCacheBackend`` connects with TORCHINDUCTOR_REDIS_URL, else
    TORCHINDUCTOR_REDIS_HOST / _PORT; the sandbox names the same server, without a password."""
    import inspect

    from torch._inductor.remote_cache import RedisRemoteCacheBackend

    source = inspect.getsource(RedisRemoteCacheBackend.__init__)
    assert all(
        name in source for name in ("TORCHINDUCTOR_REDIS_URL", "TORCHINDUCTOR_REDIS_HOST", "TORCHINDUCTOR_REDIS_PORT")
    )
    monkeypatch.setenv("TORCHINDUCTOR_REDIS_URL", "redis://cache:s3cret@10.0.0.5:6380/2")
    assert compat.remote_cache_server() == "redis://10.0.0.5:6380/2"
    monkeypatch.delenv("TORCHINDUCTOR_REDIS_URL")
    monkeypatch.setenv("TORCHINDUCTOR_REDIS_HOST", "redis.internal")
    monkeypatch.setenv("TORCHINDUCTOR_REDIS_PORT", "7000")
    assert compat.remote_cache_server() == "redis.internal:7000"


def test_remote_cache_tap_against_a_real_redis(redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.13.0: ``RedisRemoteCache._get`` / ``_put`` (called by ``RemoteCache.get`` / ``put``)
    are wrapped once; a hit carries the entry's ``time_taken_ms``; a failed connection sets
    ``RedisRemoteCacheBackend._redis`` to None and Inductor answers a miss, which the tap
    records as ``unavailable``. Against a real redis-server, keys as Inductor writes them."""
    from torch._inductor.remote_cache import RemoteAOTAutogradCache, RemoteFxGraphCache

    monkeypatch.setenv("TORCHINDUCTOR_REDIS_URL", redis_server.url)
    compat.install_remote_cache_tap()
    compat.install_remote_cache_tap()  # once only
    compat.take_remote_cache_events()
    fx = RemoteFxGraphCache("fx-graph-v1")
    assert fx.get("sandbox-compat-key") is None
    fx.put("sandbox-compat-key", {"data": "eA==", "time_taken_ms": 1234})
    assert fx.get("sandbox-compat-key")["time_taken_ms"] == 1234
    assert RemoteAOTAutogradCache("autograd-experimental").get("sandbox-compat-key") is None
    events = compat.take_remote_cache_events()
    assert [(e["cache"], e["op"], e["result"]) for e in events] == [
        ("fx_graph", "get", "miss"),
        ("fx_graph", "put", "ok"),
        ("fx_graph", "get", "hit"),
        ("aot_autograd", "get", "miss"),
    ]
    assert events[2]["time_taken_ms"] == 1234 and all(e["server"] == redis_server.url for e in events)
    assert redis_server.client().get("pt2:fx-graph-v1::sandbox-compat-key:c1") is not None
    assert compat.take_remote_cache_events() == []

    # Another thread's lookups are its own.
    threading.Thread(target=lambda: fx.get("sandbox-compat-key")).start()
    time.sleep(0.5)
    assert compat.take_remote_cache_events() == []

    redis_server.stop()
    down = RemoteFxGraphCache("fx-graph-v1")
    assert down.get("sandbox-compat-key") is None  # Inductor itself: a silent miss
    assert down.backend._redis is None
    down.put("sandbox-compat-key", {"data": "eA==", "time_taken_ms": 1})
    events = compat.take_remote_cache_events()
    assert [(e["op"], e["result"]) for e in events] == [("get", "unavailable"), ("put", "unavailable")]


def test_remote_caches_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch 2.13.0: ``torch._inductor.remote_cache.redis`` is None when the package is missing
    (``create_cache`` then returns no cache); ``torch._inductor.config.fx_graph_remote_cache`` /
    ``torch._functorch.config.enable_remote_autograd_cache`` turn the caches on. The missing package is simulated by
    setting that module global to None: the package cannot be uninstalled under a running test."""
    from torch._functorch import config as functorch_config
    from torch._inductor import config, remote_cache

    with config.patch(fx_graph_remote_cache=True), functorch_config.patch(enable_remote_autograd_cache=False):
        assert compat.remote_caches_missing() == {}
        monkeypatch.setattr(remote_cache, "redis", None)
        missing = compat.remote_caches_missing()
        assert set(missing) == {"fx_graph"} and "pip install redis" in missing["fx_graph"]
        assert remote_cache.create_cache("fx-graph-v1", False, "FbRemoteFxGraphCache", "RemoteFxGraphCache") is None


# --- async mode -----------------------------------------------------------------------------


def test_install_deferred_cache_save() -> None:
    """torch 2.13.0 (the same on 2.11): ``FxGraphCache._save_graph`` is a staticmethod looked
    up on the class, and ``_get_shape_env`` / ``_filter_backed_symints`` give its guard
    expression. A stand-in (``defer_cache_save``) gets the expression and a deferred save;
    that save reaches the original under the same TracingContext."""
    from torch._inductor.codecache import FxGraphCache
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    compat.install_deferred_cache_save()
    compat.install_deferred_cache_save()  # once
    assert compat.deferred_cache_save_installed()
    assert isinstance(FxGraphCache.__dict__["_save_graph"], staticmethod)

    class StandIn:
        def __init__(self) -> None:
            self.saves: list[Any] = []

        def defer_cache_save(self, save: Any) -> None:
            self.saves.append(save)

    stand_in = StandIn()
    context = torch._guards.TracingContext(FakeTensorMode(shape_env=ShapeEnv()))
    with torch._guards.tracing(context):
        FxGraphCache._save_graph("sandbox-test-key", stand_in, [torch.randn(2)], True, None)
    assert hasattr(stand_in, "guards_expr") and len(stand_in.saves) == 1
    with pytest.raises(AssertionError, match="NYI"):  # the original refuses anything but a CompiledFxGraph
        stand_in.saves[0](object())


def test_non_lazy_backward() -> None:
    """torch 2.13.0 (the same on 2.11): ``torch._functorch.config.force_non_lazy_backward_lowering``."""
    assert torch._functorch.config.force_non_lazy_backward_lowering is False
    with compat.non_lazy_backward():
        assert torch._functorch.config.force_non_lazy_backward_lowering is True
    assert torch._functorch.config.force_non_lazy_backward_lowering is False


# --- torch's own debugging tools (TORCH_TRACE, TORCH_LOGS, TORCH_COMPILE_DEBUG, profiler) ---


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
    trace_log = compat.trace_logger()
    assert trace_log.name == "torch.__trace"
    saved = list(trace_log.handlers)
    rec = _TraceRecords()
    try:
        trace_log.handlers[:] = []
        assert not compat.tracing()
        compat.trace_artifact("sandbox_compat_test", "{}", "3/1")  # nobody listens: nothing built
        trace_log.handlers[:] = [rec]
        assert compat.tracing()
        compat.trace_artifact("sandbox_compat_test", '{"a": 1}', "3/1")
        [r] = rec.records
        assert r.metadata["artifact"] == {"name": "sandbox_compat_test", "encoding": "json"}
        assert (r.metadata["frame_id"], r.metadata["frame_compile_id"]) == (3, 1) and r.payload == '{"a": 1}'
        assert r.metadata["attempt"] == 0  # outside a compile: a compile context of its own
        s = f"sandbox-compat-test-{time.time_ns()}"
        first = compat.intern_string(s)
        assert compat.intern_string(s) == first
        strs = [r.metadata["str"] for r in rec.records if "str" in r.metadata]
        assert strs == [[s, first]] or strs == [(s, first)], strs
    finally:
        trace_log.handlers[:] = saved


def test_current_trace_fields() -> None:
    """torch 2.13.0: ``CompileContext.current_trace_id()`` is a ``TraceId(compile_id, attempt)``
    inside ``torch._guards.compile_context``; None outside."""
    from torch._guards import CompileContext, CompileId, compile_context

    assert compat.current_trace_fields() == {}
    ctx = CompileContext(CompileId(frame_id=4, frame_compile_id=2))
    ctx.attempt = 1
    with compile_context(ctx):
        assert compat.current_trace_fields() == {"frame_id": 4, "frame_compile_id": 2, "attempt": 1}


def test_no_stock_log_capture() -> None:
    """torch 2.13.0: ``compile_fx_ext._LoggerState`` is a context manager that attaches a
    queue handler to each logger in ``loggers`` (name -> level) and returns the captured
    records on ``finish()``; with none, it captures nothing and pickles."""
    import logging
    import pickle

    state = pickle.loads(pickle.dumps(compat.no_stock_log_capture()))
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

    assert compat.debug_dir() is None
    cfg = compat.debug_config()
    assert "trace.enabled" in cfg and "trace.debug_dir" not in cfg and "trace.upload_tar" not in cfg
    assert not any(k.startswith("trace.") for k in config.save_config_portable())
    with compat.debug_dir_root(str(tmp_path)), compat.inductor_config({**cfg, "trace.enabled": True}):
        assert compat.debug_config()["trace.enabled"] and config.trace.debug_dir is None
        with DebugContext():
            path = compat.debug_dir()
    assert path is not None and path.startswith(str(tmp_path)) and "torchinductor" in path
    assert not config.trace.enabled or cfg["trace.enabled"]


def test_enabled_artifacts() -> None:
    """torch 2.13.0: ``torch._logging._internal.log_state.artifact_names`` holds the artifacts
    ``set_logs`` / TORCH_LOGS turned on; an artifact logger knows its ``artifact_name``."""
    from torch._logging._internal import getArtifactLogger

    assert "output_code" not in compat.enabled_artifacts()
    torch._logging.set_logs(output_code=True)
    try:
        assert "output_code" in compat.enabled_artifacts()
        assert getArtifactLogger("torch._inductor.sandbox_compat_test", "output_code").artifact_name == "output_code"
    finally:
        torch._logging.set_logs()
    assert "output_code" not in compat.enabled_artifacts()


def test_trace_records_and_artifact_loggers() -> None:
    """torch 2.13.0: ``trace_structured`` hands its handlers a record with ``metadata`` and
    ``payload`` (``extra``); ``TorchLogsFormatter(trace=True)`` writes a made record the same
    way; ``getArtifactLogger`` marks its logger with ``artifact_name``."""
    import logging

    from torch._logging._internal import TorchLogsFormatter, getArtifactLogger

    trace_log = compat.trace_logger()
    saved = list(trace_log.handlers)
    rec = _TraceRecords()
    try:
        trace_log.handlers[:] = [rec]
        compat.trace_artifact("sandbox_compat_test", '{"b": 2}', "1/0")
    finally:
        trace_log.handlers[:] = saved
    metadata, payload = compat.trace_record_parts(rec.records[0])
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
    line = TorchLogsFormatter(trace=True).format(compat.make_trace_record(fields, metadata, payload))
    assert " 4242 " in line and '"sandbox_compat_test"' in line and line.endswith('\t{"b": 2}'), line
    assert (
        compat.artifact_name(getArtifactLogger("torch._inductor.sandbox_compat_test", "output_code")) == "output_code"
    )
    assert compat.artifact_name(logging.getLogger("torch._inductor")) is None


def test_profiler_enabled() -> None:
    """torch 2.13.0: ``torch.autograd._profiler_enabled()`` is True inside ``torch.profiler.profile``."""
    assert not compat.profiler_enabled()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        assert compat.profiler_enabled()
    assert not compat.profiler_enabled()


# --- GPU: Triton kernels ---------------------------------------------------------------------
# The real objects need a GPU: tests/gpu/run.py checks every field on an H100 (torch 2.11 +
# Triton 3.6). Here the CPU build checks the names and the reading logic.


def test_loaded_modules_of_a_compile() -> None:
    """torch 2.13.0: ``torch._inductor.codecache.PyCodeCache.modules`` gains the generated
    module of an in-process compile, in load order."""
    before = compat.loaded_module_count()

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x) * 2 + 1

    with torch._inductor.config.patch(fx_graph_cache=False):
        torch.compile(f, backend="inductor")(torch.randn(8))
    new = compat.modules_loaded_since(before)
    assert compat.loaded_module_count() == before + len(new) and new
    assert any(callable(getattr(m, "call", None)) for m in new)  # the graph's wrapper module
    assert compat.triton_kernels(new) == {}  # CPU kernels only: no Triton autotuner in them
    torch._dynamo.reset()


def test_triton_kernels_and_describe_triton_kernel() -> None:
    """torch 2.13.0 (2.11 on the GPU machine alike):
    ``torch._inductor.runtime.triton_heuristics.CachingAutotuner`` and the attributes its
    launchers, autotune cache info and coordinate-descent tuner carry. No GPU here: the
    autotuner is a real ``CachingAutotuner`` instance whose attributes are set by hand."""
    import types

    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    class Config:  # shaped like triton.Config (no Triton in the CPU build)
        def __init__(self, xblock: int, warps: int) -> None:
            self.kwargs, self.num_warps, self.num_stages, self.num_ctas, self.maxnreg = (
                {"XBLOCK": xblock},
                warps,
                1,
                1,
                None,
            )

    a, b = Config(128, 4), Config(256, 8)
    kernel = CachingAutotuner.__new__(CachingAutotuner)
    kernel.configs = None  # dropped once the launchers are compiled
    kernel.launchers = [
        types.SimpleNamespace(config=a, n_regs=18, n_spills=0, shared=0),
        types.SimpleNamespace(config=b, n_regs=30, n_spills=2, shared=256),
    ]
    kernel.autotune_cache_info = {"autotune_cache_state": "miss", "num_configs": 2, "compile_time_us": 1500}
    kernel.coordesc_tuner = types.SimpleNamespace(
        cached_benchmark_results={
            (("XBLOCK", 128), ("num_warps", 4), ("num_stages", 1)): 0.0125,
            (("XBLOCK", 256), ("num_warps", 8), ("num_stages", 1)): float("inf"),
        }
    )
    kernel.autotune_time_taken_ns = 2_000_000
    module = types.SimpleNamespace(triton_poi_fused_sin_0=kernel, other=object())
    assert compat.triton_kernels([module]) == {"triton_poi_fused_sin_0": kernel}
    d = compat.describe_triton_kernel(kernel)
    assert d["launchers"][1] == {
        "XBLOCK": 256,
        "num_warps": 8,
        "num_stages": 1,
        "num_ctas": 1,
        "n_regs": 30,
        "n_spills": 2,
        "shared": 256,
    }
    assert d["configs"] == d["launchers"]  # the compiled candidates stand for the dropped configs
    assert d["autotune_cache"] == "miss" and d["num_configs"] == 2
    assert d["compile_time_s"] == 0.0015 and d["autotune_time_s"] == 0.002
    assert {t["ms"] for t in d["autotune_timings"]} == {0.0125, None}  # a failed candidate has no time
    json.dumps(d)  # plain JSON values


def test_capture_autotune_choices() -> None:
    """torch 2.13.0: ``torch._inductor.select_algorithm.add_feedback_saver`` and the
    selector cache's ``feedback_saver_fns``: max-autotune's timings per choice reach the
    saver while it is installed, and it is removed afterwards."""
    import types

    from torch._inductor import select_algorithm

    cache = select_algorithm.get_algorithm_selector_cache()
    before = list(cache.feedback_saver_fns)
    extern = type("ExternKernelCaller", (), {})()
    extern.name, extern.description = "mm", "extern_kernels.mm"
    template = type("TritonTemplateCaller", (), {})()
    template.name, template.description = "triton_mm_3", "BLOCK_M=64"
    node = types.SimpleNamespace(get_size=lambda: [16, 64])
    with compat.capture_autotune_choices() as choices:
        for fn in cache.feedback_saver_fns:
            fn({extern: 0.02, template: 0.01}, "mm", [node, node], [extern, template], lambda: {}, {})
    assert cache.feedback_saver_fns == before
    assert choices == [
        {
            "op": "mm",
            "input_shapes": [[16, 64], [16, 64]],
            "chosen": "triton_mm_3",
            "candidates": [
                {"name": "triton_mm_3", "kind": "triton_template", "description": "BLOCK_M=64", "ms": 0.01},
                {"name": "mm", "kind": "extern", "description": "extern_kernels.mm", "ms": 0.02},
            ],
        }
    ]


def test_gpu_available_and_warm_up_gpu() -> None:
    """torch 2.13.0: ``torch.cuda.is_available``; ``torch._inductor.async_compile``
    (``AsyncCompile.warm_pool`` / ``use_process_pool``, ``caching_device_properties``). On a
    machine without a GPU the GPU warm-up is the availability check alone."""
    assert compat.gpu_available() == torch.cuda.is_available()
    phases = compat.warm_up_gpu()
    if not torch.cuda.is_available():
        assert set(phases) == {"cuda_check_s"}
    else:
        assert {"cuda_init_s", "compile_pool_start_s"} <= set(phases)


def test_compile_fx_leaves_the_user_process_without_compile_pool() -> None:
    """torch 2.13.0: ``torch._inductor.config.compile_threads`` (not in the portable config
    that crosses with a graph): 1 while the sandbox's compile runs in the user's process
    (``compile_in_process`` puts the user's own value back for a fallback), and the user's
    value again afterwards."""
    from torch._inductor import config as inductor_config

    user = inductor_config.compile_threads
    seen: dict[str, Any] = {}

    def inner_compile(gm: Any, example_inputs: Any, *args: Any, **kwargs: Any) -> Any:
        seen["inner"] = inductor_config.compile_threads
        seen["portable"] = "compile_threads" in inductor_config.save_config_portable()
        return compat.compile_fx_inner(gm, example_inputs, *args, **kwargs)

    def backend(gm: Any, example_inputs: Any) -> Any:
        return compat.compile_fx(
            gm, example_inputs, inner_compile=inner_compile, config_patches={"fx_graph_cache": False}
        )

    out = torch.compile(lambda x: torch.cos(x) + 1, backend=backend)(torch.zeros(4))
    torch.testing.assert_close(out, torch.full((4,), 2.0))
    assert seen["inner"] == 1 and not seen["portable"]
    assert inductor_config.compile_threads == user
    torch._dynamo.reset()


def test_serialize_graph_shortcuts_equal_the_stock_values() -> None:
    """torch 2.13.0: ``save_config_portable(readonly_values=True)`` and
    ``compile_fx_ext._LoweringSerializer.fallbacks``: the cheaper forms ``serialize_graph``
    uses give what the stock scheme would send, also right after a config change and with
    a lowering forced to fall back."""
    from torch._inductor import compile_fx_ext as ext
    from torch._inductor import config as inductor_config
    from torch._inductor import lowering

    assert compat._portable_config(inductor_config) == inductor_config.save_config_portable()
    with inductor_config.patch(max_autotune=not inductor_config.max_autotune):
        assert compat._portable_config(inductor_config) == inductor_config.save_config_portable()
    assert compat._lowering_serializer(ext).fallbacks == ext._LoweringSerializer().fallbacks
    op = torch.ops.aten.sin.default
    saved = lowering.lowerings[op]
    try:
        lowering.make_fallback(op, warn=False, override_decomp=True)
        got = compat._lowering_serializer(ext).fallbacks
        assert str(op) in got and got == ext._LoweringSerializer().fallbacks
    finally:
        lowering.lowerings[op] = saved


def test_cpu_isa_probe_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """torch 2.13.0: ``torch._inductor.runtime.cache_dir_utils.cache_dir`` follows
    TORCHINDUCTOR_CACHE_DIR; the probe leaves its marker there, and only there."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "a"))
    assert not compat.cpu_isa_probe_cached()
    compat.probe_cpu_isa()
    assert compat.cpu_isa_probe_cached()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "b"))
    assert not compat.cpu_isa_probe_cached()


def test_frontend_modules_exist_and_import() -> None:
    """sandbox.warmup()'s ahead-of-time imports: every named module exists in this torch
    and imports, and it is the module the seam patches."""
    assert compat.import_frontend() == []
    assert all(n in sys.modules for n in compat.FRONTEND_MODULES)
    assert sys.modules["torch._inductor.compile_fx"] is compat.compile_fx_module()


def test_launch_compile_pool_is_a_no_op_where_inductor_compiles_in_one_process() -> None:
    """With one compile thread (the user's process; a CPU worker) there is no pool to start:
    False, and no process is started."""
    from torch._inductor import config

    def children() -> set[str]:
        try:
            with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as f:
                return set(f.read().split())
        except OSError:
            return set()

    before = children()
    with config.patch(compile_threads=1):
        assert compat.launch_compile_pool() is False
    assert children() <= before


def test_prepare_gpu_load_never_raises() -> None:
    """The GPU-load preparation's touch point (Inductor's ptxas choice, then Triton's
    driver): without Triton (this machine) it reports what failed instead of raising. The
    GPU machine's check (tests/gpu/run.py) requires that nothing failed there."""
    import importlib.util

    result = compat.prepare_gpu_load()
    assert set(result) == {"driver_s", "failed"}
    has_triton = importlib.util.find_spec("triton") is not None
    assert ("triton.runtime.driver.active" in result["failed"]) is (not has_triton)


def test_use_inductor_ptxas_follows_inductor_and_keeps_a_user_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The touch point exists, sets nothing where torch ships no ptxas (this CPU build),
    and never overrides a TRITON_PTXAS_PATH the user set."""
    from torch._inductor.runtime.compile_tasks import _set_triton_ptxas_path

    _set_triton_ptxas_path.cache_clear()
    monkeypatch.setenv("TRITON_PTXAS_PATH", "/opt/custom/ptxas")
    assert compat.use_inductor_ptxas() == "/opt/custom/ptxas"
    _set_triton_ptxas_path.cache_clear()
    monkeypatch.delenv("TRITON_PTXAS_PATH")
    import torch._inductor.runtime.compile_tasks as tasks

    shipped = pathlib.Path(tasks.__file__).absolute().parents[1] / "bin" / "ptxas"
    assert compat.use_inductor_ptxas() == (str(shipped) if shipped.exists() else None)
    _set_triton_ptxas_path.cache_clear()


def test_passthrough_error_base_reaches_the_user_unwrapped() -> None:
    """torch 2.13: dynamo re-raises a backend's ShortenTraceback as it is (others arrive
    wrapped in BackendCompilerFailed), and Inductor wraps it in InductorError, from which
    the backend takes it out: `except sandbox.SandboxCompileError` then works."""
    base = compat.passthrough_error_base()
    assert issubclass(base, RuntimeError)

    class Refused(base):
        pass

    def backend(gm: Any, example_inputs: Any) -> Any:
        raise Refused("refused by the test backend")

    torch._dynamo.reset()
    with pytest.raises(Refused, match="refused by the test backend"):
        torch.compile(lambda x: x.cos() + 1, backend=backend)(torch.randn(4))

    def plain(gm: Any, example_inputs: Any) -> Any:
        raise RuntimeError("plain")

    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.BackendCompilerFailed):  # what the base class avoids
        torch.compile(lambda x: x.cos() + 2, backend=plain)(torch.randn(4))
    torch._dynamo.reset()
