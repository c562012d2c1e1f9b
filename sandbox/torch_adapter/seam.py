"""The seam into Inductor: the one replaced ``fx_codegen_and_compile`` and Inductor's entry points.

Private symbols touched here: torch._inductor.compile_fx: compile_fx, compile_fx_inner,
_InProcessFxCompile, fx_codegen_and_compile (looked up as a module global at call time by
_compile_fx_inner); torch._functorch.aot_autograd.make_boxed_func;
torch._dynamo.exc.ShortenTraceback; torch._inductor.list_mode_options / list_options;
torch._inductor.fx_passes.joint_graph.lazy_init (cached per input device),
torch._inductor.codecache.torch_key / triton_key (cached). After 2.11
``fx_codegen_and_compile`` and ``compile_fx_inner`` gained ``compile_region_name``: the seam takes
``*args, **kwargs`` and passes them through.
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("sandbox")


def compile_fx_module() -> Any:
    from torch._inductor import compile_fx as m

    return m


# The modules this process's own part of a compile imports the first time it runs
# (before the graph crosses), warm or cold: Inductor's compile_fx (its lowering and
# select_algorithm come with it) and the partitioner. Not the joint-graph passes' pattern
# modules: only a cache miss needs them, and a run of cache hits would pay for them beside
# the model's set-up (docs/decisions/frontend-imports.md). The same module names on torch 2.11.
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


def prepare_first_compile(device: str) -> None:
    """This process's one-time costs of its first cache miss, paid now: the joint-graph passes'
    patterns (attention fusion, mm padding) for graphs on ``device``, which the partitioner
    registers otherwise, and the source hashes of torch and Triton that the AOTAutograd and FX
    cache keys include. Each is cached by torch (the patterns per device: a graph on another
    device registers its own then); nothing here initialises CUDA."""
    import torch
    from torch._inductor import codecache
    from torch._inductor.fx_passes import joint_graph

    joint_graph.lazy_init(torch.device(device))
    codecache.torch_key()
    codecache.triton_key()


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


def install_seam(route: Callable[[], Any]) -> None:
    """Replace ``compile_fx.fx_codegen_and_compile`` once.

    ``route()`` returns an object with ``codegen_and_compile(gm, example_inputs,
    inputs_to_check, graph_kwargs, compile_region_name)`` while a sandbox compile is
    active on this thread/context, else None: then the stock function runs, so a
    plain ``backend="inductor"`` compile in the same process is untouched.
    """
    with _seam_lock:
        m = compile_fx_module()
        if getattr(m.fx_codegen_and_compile, "_sandbox_seam", False):
            return
        original = m.fx_codegen_and_compile

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
