"""Tests of the seam (``sandbox/torch_adapter/seam.py``): the one replaced Inductor function
(``compile_fx.fx_codegen_and_compile``), ``compile_fx`` / ``compile_fx_inner``, the in-process
compile, Inductor's mode and option names, the frontend imports and the error base class.

One test per touch point of a private PyTorch API, each naming the symbols it relies on.
Written against torch 2.13.0: when a torch release moves or changes one of these symbols,
the test for it fails here, by name, instead of deep inside a user's compile."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest
import torch
from recording import WRITTEN_AGAINST

from sandbox import backend as sandbox_backend
from sandbox import runtime
from sandbox.torch_adapter import seam


def test_seam_installs_and_routes(recorded: dict[str, Any]) -> None:
    """torch 2.13.0: ``compile_fx.fx_codegen_and_compile`` is a module global that
    ``_compile_fx_inner`` looks up at call time; ``compile_fx(inner_compile=...)``
    sends the forward and the lazily compiled backward through ``compile_fx_inner``;
    ``_InProcessFxCompile().codegen_and_compile`` compiles in this process."""
    m = seam.compile_fx_module()
    for name in ("compile_fx", "compile_fx_inner", "fx_codegen_and_compile", "_InProcessFxCompile"):
        assert hasattr(m, name), f"torch._inductor.compile_fx.{name} is gone (written against {WRITTEN_AGAINST})"
    assert seam.seam_installed()
    installed = m.fx_codegen_and_compile
    seam.install_seam(sandbox_backend._route)  # once per process: a second install changes nothing
    assert m.fx_codegen_and_compile is installed
    calls = recorded["scheme"].calls
    kinds = [bool(c["graph_kwargs"].get("is_backward")) for c in calls]
    assert kinds == [False, True], f"expected forward then backward through the seam, got {calls}"
    torch.testing.assert_close(recorded["out"], recorded["expected"])
    torch.testing.assert_close(recorded["grad"], recorded["expected_grad"])


def test_seam_leaves_plain_inductor_alone() -> None:
    """torch 2.13.0: with no sandbox compile active, the replaced
    ``fx_codegen_and_compile`` runs the stock one (``backend="inductor"``)."""
    runtime.current().ensure_seam(sandbox_backend._route)
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


def test_compile_in_process_and_eager_callable() -> None:
    """torch 2.13.0: ``torch._functorch.aot_autograd.make_boxed_func`` and
    ``torch.fx._lazy_graph_module._LazyGraphModule.force_recompile``: a graph that
    runs uncompiled is called boxed (one list argument) and computes the graph."""
    gm = torch.fx.symbolic_trace(lambda a, b: (torch.relu(a) + b,))
    f = seam.eager_callable(gm)
    assert getattr(f, "_boxed_call", False)
    a, b = torch.randn(3), torch.randn(3)
    (out,) = f([a, b])
    torch.testing.assert_close(out, torch.relu(a) + b)


def test_mode_and_option_names() -> None:
    """torch 2.13.0: ``torch._inductor.list_mode_options()`` lists the modes,
    ``list_mode_options(mode)`` maps one to config patches, ``list_options()`` lists
    Inductor's config keys."""
    names = seam.mode_names()
    assert {"default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"} <= set(names)
    patches = seam.list_mode_options("max-autotune-no-cudagraphs")
    assert patches.get("max_autotune") is True and not patches.get("triton.cudagraphs")
    options = seam.inductor_option_names()
    assert {"fx_graph_cache", "max_autotune", "triton.cudagraphs"} <= options
    assert all(k in options for k in patches)


def test_frontend_modules_exist_and_import() -> None:
    """sandbox.warmup()'s ahead-of-time imports: every named module exists in this torch
    and imports, and it is the module the seam patches."""
    assert seam.import_frontend() == []
    assert all(n in sys.modules for n in seam.FRONTEND_MODULES)
    assert sys.modules["torch._inductor.compile_fx"] is seam.compile_fx_module()


def test_prepare_first_compile_fills_the_caches_the_first_compile_reads() -> None:
    """torch 2.13.0: ``fx_passes.joint_graph.lazy_init`` is cached per input device (the
    partitioner calls it with the graph's ``torch.device``), ``codecache.torch_key`` and
    ``triton_key`` are cached: after ``seam.prepare_first_compile("cpu")`` the partitioner's
    own call for a CPU graph is a cache hit, and the keys come back at once."""
    from torch._inductor import codecache
    from torch._inductor.fx_passes import joint_graph

    seam.prepare_first_compile("cpu")
    hits = joint_graph.lazy_init.cache_info().hits
    joint_graph.lazy_init(torch.device(type="cpu"))  # as compile_fx's partition_fn calls it
    assert joint_graph.lazy_init.cache_info().hits == hits + 1
    for key in (codecache.torch_key, codecache.triton_key):
        t = time.perf_counter()
        key()
        assert time.perf_counter() - t < 0.05, f"{key.__name__} was not cached"


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
        return seam.compile_fx_inner(gm, example_inputs, *args, **kwargs)

    def backend(gm: Any, example_inputs: Any) -> Any:
        return seam.compile_fx(
            gm, example_inputs, inner_compile=inner_compile, config_patches={"fx_graph_cache": False}
        )

    out = torch.compile(lambda x: torch.cos(x) + 1, backend=backend)(torch.zeros(4))
    torch.testing.assert_close(out, torch.full((4,), 2.0))
    assert seen["inner"] == 1 and not seen["portable"]
    assert inductor_config.compile_threads == user
    torch._dynamo.reset()


def test_passthrough_error_base_reaches_the_user_unwrapped() -> None:
    """torch 2.13: dynamo re-raises a backend's ShortenTraceback as it is (others arrive
    wrapped in BackendCompilerFailed), and Inductor wraps it in InductorError, from which
    the backend takes it out: `except sandbox.SandboxCompileError` then works."""
    base = seam.passthrough_error_base()
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
