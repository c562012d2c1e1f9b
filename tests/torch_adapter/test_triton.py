"""Tests of Triton kernels and the GPU side (``sandbox/torch_adapter/triton.py``): generated
modules, autotuners, autotune choices, the GPU warm-up, the compile pool and ptxas.

The real objects need a GPU: tests/gpu/run.py checks every field on an H100 (torch 2.11 +
Triton 3.6). Here the CPU build checks the names and the reading logic.

One test per touch point of a private PyTorch API, each naming the symbols it relies on.
Written against torch 2.13.0: when a torch release moves or changes one of these symbols,
the test for it fails here, by name, instead of deep inside a user's compile."""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import torch

from sandbox.torch_adapter import triton


def test_loaded_modules_of_a_compile() -> None:
    """torch 2.13.0: ``torch._inductor.codecache.PyCodeCache.modules`` gains the generated
    module of an in-process compile, in load order."""
    before = triton.loaded_module_count()

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x) * 2 + 1

    with torch._inductor.config.patch(fx_graph_cache=False):
        torch.compile(f, backend="inductor")(torch.randn(8))
    new = triton.modules_loaded_since(before)
    assert triton.loaded_module_count() == before + len(new) and new
    assert any(callable(getattr(m, "call", None)) for m in new)  # the graph's wrapper module
    assert triton.triton_kernels(new) == {}  # CPU kernels only: no Triton autotuner in them
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
    assert triton.triton_kernels([module]) == {"triton_poi_fused_sin_0": kernel}
    d = triton.describe_triton_kernel(kernel)
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
    with triton.capture_autotune_choices() as choices:
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


def test_warm_up_gpu() -> None:
    """torch 2.13.0: ``torch._inductor.async_compile`` (``AsyncCompile.warm_pool`` /
    ``use_process_pool``, ``caching_device_properties``). On a machine without a GPU the
    GPU warm-up is the availability check alone."""
    phases = triton.warm_up_gpu()
    if not torch.cuda.is_available():
        assert set(phases) == {"cuda_check_s"}
    else:
        assert {"cuda_init_s", "compile_pool_start_s"} <= set(phases)


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
        assert triton.launch_compile_pool() is False
    assert children() <= before


def test_prepare_gpu_load_never_raises() -> None:
    """The GPU-load preparation's touch point (Inductor's ptxas choice, then Triton's
    driver): without Triton (this machine) it reports what failed instead of raising. The
    GPU machine's check (tests/gpu/run.py) requires that nothing failed there."""
    import importlib.util

    result = triton.prepare_gpu_load()
    assert set(result) == {"driver_s", "failed"}
    has_triton = importlib.util.find_spec("triton") is not None
    assert ("triton.runtime.driver.active" in result["failed"]) is (not has_triton)


def test_use_inductor_ptxas_follows_inductor_and_keeps_a_user_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The touch point exists, sets nothing where torch ships no ptxas (this CPU build),
    and never overrides a TRITON_PTXAS_PATH the user set."""
    from torch._inductor.runtime.compile_tasks import _set_triton_ptxas_path

    _set_triton_ptxas_path.cache_clear()
    monkeypatch.setenv("TRITON_PTXAS_PATH", "/opt/custom/ptxas")
    assert triton.use_inductor_ptxas() == "/opt/custom/ptxas"
    _set_triton_ptxas_path.cache_clear()
    monkeypatch.delenv("TRITON_PTXAS_PATH")
    import torch._inductor.runtime.compile_tasks as tasks

    shipped = pathlib.Path(tasks.__file__).absolute().parents[1] / "bin" / "ptxas"
    assert triton.use_inductor_ptxas() == (str(shipped) if shipped.exists() else None)
    _set_triton_ptxas_path.cache_clear()


def test_set_compile_threads_shrinks_a_started_pool() -> None:
    """torch 2.13.0: ``torch._inductor.config.compile_threads`` sizes the compile pool when it
    starts; ``AsyncCompile.process_pool`` / ``AsyncCompile.pool`` are ``functools.lru_cache``'d
    and ``shutdown_compile_workers`` ends a started one. A worker whose share of the cores
    changed gets a pool of the new size at its next kernel."""
    from torch._inductor import async_compile, config

    saved = config.compile_threads
    try:
        config.compile_threads = 2
        assert triton.set_compile_threads(2) is False  # unchanged: nothing to do
        async_compile.AsyncCompile.pool()  # the thread pool of 2, started
        assert async_compile.AsyncCompile.pool.cache_info().currsize == 1
        assert triton.set_compile_threads(3) is False  # no process pool was started
        assert config.compile_threads == 3 and async_compile.AsyncCompile.pool.cache_info().currsize == 0
        assert async_compile.AsyncCompile.pool()._max_workers == 3
    finally:
        triton.set_compile_threads(saved or 1)
        config.compile_threads = saved
