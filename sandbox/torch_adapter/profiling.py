"""One call of a compiled graph under ``torch.profiler``: its ops and device kernels, as plain values.

Private symbols touched here: the generated module of a ``CompiledFxGraph`` (its
``current_callable`` is the module's ``call``, a bound method whose ``__globals__`` hold the
kernels: C++ kernels as plain callables, Triton kernels as ``CachingAutotuner`` objects called
through ``.run``); torch._C._profiler._RecordFunctionFast (the cheap profiler region Inductor
itself opens around a Triton launch); torch.autograd._profiler_enabled (``debug_tools``).
Inductor's C++ kernels open no profiler region of their own unless
``cpp.enable_kernel_profile`` is set, which would change every call's code and the FX graph
cache key: for the profiled call only, each one is wrapped in a region named after it. A
Triton kernel's launcher opens its own region (its kernel name) while a profiler records, and
CUPTI names its device kernel the same. Written against torch 2.13.0.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from sandbox.torch_adapter import debug_tools


def generated_globals(compiled_callable: Any) -> dict[str, Any] | None:
    """The namespace of the generated module behind a ``CompiledFxGraph``'s ``current_callable``
    (``Runner.call``, a bound method); None for anything else (a cudagraphs wrapper)."""
    fn = getattr(compiled_callable, "__func__", compiled_callable)
    namespace = getattr(fn, "__globals__", None)
    if not isinstance(namespace, dict) or not str(namespace.get("__name__", "")).startswith("torch._inductor"):
        return None
    if "call" not in namespace:  # an Inductor module, but not a generated one (a cudagraphs wrapper's)
        return None
    return namespace


def _region(name: str) -> Any:
    try:
        return torch._C._profiler._RecordFunctionFast(name)
    except (AttributeError, TypeError):  # a torch without it: the public region, a little slower
        return torch.profiler.record_function(name)


def _marked(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def kernel(*args: Any, **kwargs: Any) -> Any:
        with _region(name):
            return fn(*args, **kwargs)

    kernel.__wrapped__ = fn  # type: ignore[attr-defined]
    return kernel


@contextlib.contextmanager
def marked_kernels(namespace: dict[str, Any] | None, names: Iterable[str]) -> Iterator[list[str]]:
    """While open, each of ``names`` that is a plain callable in ``namespace`` (a C++ kernel:
    not a Triton launcher, which has ``.run`` and its own region) runs inside a profiler region
    named after it. Yields the names marked; puts the originals back on exit."""
    saved: dict[str, Any] = {}
    if namespace is not None:
        for name in names:
            fn = namespace.get(name)
            if callable(fn) and not hasattr(fn, "run") and not hasattr(fn, "__wrapped__"):
                saved[name] = fn
                namespace[name] = _marked(name, fn)
    try:
        yield list(saved)
    finally:
        for name, fn in saved.items():
            if namespace is not None and getattr(namespace.get(name), "__wrapped__", None) is fn:
                namespace[name] = fn


def busy() -> bool:
    """Another profiler records this process now: a second one cannot start."""
    return debug_tools.profiler_enabled()


def cuda_ready() -> bool:
    """CUDA is initialised here, so its kernels can be recorded (CUPTI) and waited for."""
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def _plain(events: Any, region: str) -> tuple[float | None, list[dict[str, Any]]]:
    """The region's own time as the profiler saw it, and the ops under it (depth first, each with
    its parent's index, -1 for the region's direct children), their CPU time and the device kernels
    linked to each (µs)."""
    roots = [e for e in events if e.name == region and e.cpu_parent is None]
    out: list[dict[str, Any]] = []

    def walk(e: Any, parent: int) -> None:
        kernels = [[str(k.name), float(k.duration)] for k in getattr(e, "kernels", []) or []]
        out.append({"name": str(e.name), "parent": parent, "cpu_us": float(e.cpu_time_total), "kernels": kernels})
        me = len(out) - 1
        for child in e.cpu_children:
            walk(child, me)

    for root in roots:
        for child in root.cpu_children:
            walk(child, -1)
        # Device work linked to the region itself (a CUDA graph replayed without ops of its own).
        for k in getattr(root, "kernels", []) or []:
            out.append({"name": region, "parent": -1, "cpu_us": 0.0, "kernels": [[str(k.name), float(k.duration)]]})
    return (sum(float(r.cpu_time_total) for r in roots) if roots else None), out


def profiled_call(
    fn: Callable[..., Any], args: tuple[Any, ...], region: str, cuda: bool
) -> tuple[Any, dict[str, Any] | None]:
    """``fn(*args)`` under ``torch.profiler`` (CPU, and CUDA when ``cuda``), inside a region named
    ``region``. Returns its result and ``{"wall_us", "ops"}``: the region's wall time and its ops
    (``_plain``), or None when the profiler could not start or be read (``fn`` then ran
    unprofiled, or its result is kept). ``fn``'s own exception propagates. With ``cuda``, the
    device is waited for before and inside the region, so the call's kernels are all recorded
    and no earlier work is."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    prof = torch.profiler.profile(activities=activities)
    try:
        if cuda:
            torch.cuda.synchronize()
        prof.start()
    except Exception:  # noqa: BLE001 - a profiler that cannot start costs the measurement, not the step
        return fn(*args), None
    try:
        # A profiler's first region on a thread pays a one-time set-up: not inside the call's region.
        with torch.profiler.record_function("sandbox.profile warm-up"):
            pass
        t0 = time.perf_counter()
        with torch.profiler.record_function(region):
            result = fn(*args)
            if cuda:
                torch.cuda.synchronize()
        wall_us = (time.perf_counter() - t0) * 1e6
    except BaseException:
        with contextlib.suppress(Exception):
            prof.stop()
        raise
    try:
        prof.stop()
        # The profiler's own account of the region leaves out its first opening's one-time set-up.
        region_us, ops = _plain(prof.events(), region)
        return result, {"wall_us": region_us or wall_us, "ops": ops}
    except Exception:  # noqa: BLE001 - the step's result stands without its profile
        return result, None
