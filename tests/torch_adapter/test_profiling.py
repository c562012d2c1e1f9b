"""Tests of one profiled call (``sandbox/torch_adapter/profiling.py``), written against torch 2.13.0:
the generated module behind a compiled graph's ``current_callable`` holds its C++ kernels as plain
callables in its globals, a region wrapped around one of them shows up in ``torch.profiler`` under
the kernel's name, and an extern kernel shows up as its ATen op. Everything runs in this process
(stock Inductor, no worker)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sandbox.torch_adapter import profiling


@pytest.fixture(scope="module")
def compiled_graph() -> dict[str, Any]:
    """A stock Inductor forward graph (one cpp kernel and an addmm), with the CompiledFxGraph."""
    from torch._inductor import compile_fx

    seen: list[Any] = []
    stock = compile_fx.compile_fx_inner

    def inner(*args: Any, **kwargs: Any) -> Any:
        out = stock(*args, **kwargs)
        seen.append(out)
        return out

    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.GELU())
    x = torch.randn(8, 16)

    def backend(gm: Any, example_inputs: Any) -> Any:
        return compile_fx.compile_fx(gm, example_inputs, inner_compile=inner)

    with torch.no_grad():
        fn = torch.compile(model, backend=backend)
        fn(x)
    [graph] = seen
    return {"graph": graph, "fn": fn, "x": x}


def test_generated_globals_hold_cpp_kernels(compiled_graph: dict[str, Any]) -> None:
    """torch 2.13.0: ``CompiledFxGraph.current_callable`` is the generated module's ``Runner.call``;
    its ``__globals__`` are the module's, where a C++ kernel is a plain callable (no ``.run``)."""
    namespace = profiling.generated_globals(compiled_graph["graph"].current_callable)
    assert namespace is not None
    cpp = [n for n in namespace if n.startswith("cpp_fused_")]
    assert cpp and all(callable(namespace[n]) and not hasattr(namespace[n], "run") for n in cpp)
    assert profiling.generated_globals(lambda args: args) is None  # not a generated module


def test_a_profiled_call_names_cpp_and_extern_kernels(compiled_graph: dict[str, Any]) -> None:
    """A C++ kernel wrapped for the call appears under its own name (and is put back after),
    ``extern_kernels.addmm`` as ``aten::addmm``, both under the call's region."""
    graph = compiled_graph["graph"]
    namespace = profiling.generated_globals(graph.current_callable)
    cpp = [n for n in namespace if n.startswith("cpp_fused_")]
    originals = {n: namespace[n] for n in cpp}
    assert not profiling.busy() and not profiling.cuda_ready()
    with profiling.marked_kernels(namespace, cpp + ["not_there"]) as marked:
        assert marked == cpp
        assert all(namespace[n] is not originals[n] for n in cpp)
        with torch.no_grad():
            result, trace = profiling.profiled_call(
                compiled_graph["fn"], (compiled_graph["x"],), "sandbox.profile test", False
            )
    assert all(namespace[n] is originals[n] for n in cpp)
    assert result.shape == (8, 32) and trace is not None
    names = [op["name"] for op in trace["ops"]]
    assert set(cpp) <= set(names) and "aten::addmm" in names, names
    top = sum(op["cpu_us"] for op in trace["ops"] if op["parent"] < 0)
    assert 0 < top <= trace["wall_us"]


def test_the_graph_error_propagates_and_a_busy_profiler_is_seen() -> None:
    def boom() -> None:
        raise ValueError("the graph's own error")

    with pytest.raises(ValueError, match="own error"):
        profiling.profiled_call(boom, (), "sandbox.profile boom", False)
    assert not profiling.busy()  # the profiler was stopped on the way out
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        assert profiling.busy()
