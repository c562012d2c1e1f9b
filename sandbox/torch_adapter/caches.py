"""Inductor's compile caches as the sandbox touches them: clearing, and the FX graph cache save that async mode defers.

Private symbols touched here: torch._inductor.utils: clear_on_fresh_cache, clear_caches;
torch._inductor.codecache.FxGraphCache._save_graph (a staticmethod, looked up on the class by
_compile_fx_inner), ._get_shape_env, ._filter_backed_symints; torch._guards.TracingContext.try_get /
torch._guards.tracing (the deferred save); FxGraphCache.prepare_key (the key a cache-miss
graph is compiled under, for single-flight); torch._inductor.runtime.cache_dir_utils.cache_dir (the
folder processes sharing the caches share); torch._inductor.codecache._HEADER_DIR / _HEADER_LOCK_DIR / get_lock_dir and
torch._inductor.cpp_builder's ``<name>_CxxBuild`` build folders (C++ builds a killed compile left
unfinished). The same on torch 2.11.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any

import torch

log = logging.getLogger("sandbox")

_patch_lock = threading.Lock()


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

    with _patch_lock:
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


def shared_folder(name: str) -> str:
    """``<Inductor's cache dir>/sandbox/<name>`` (``torch._inductor.runtime.cache_dir_utils.cache_dir``):
    a folder every process that shares this host's Inductor caches shares too."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return os.path.join(cache_dir(), "sandbox", name)


def deferred_cache_save_installed() -> bool:
    from torch._inductor.codecache import FxGraphCache

    current = FxGraphCache.__dict__["_save_graph"]
    return bool(getattr(getattr(current, "__func__", current), "_sandbox_deferred", False))


# --- the FX graph cache key of the graph about to compile (single-flight) --------------
# torch._inductor.codecache.FxGraphCache.prepare_key (a staticmethod, looked up on the class
# by _compile_fx_inner, which calls it right before a cache-miss graph reaches
# fx_codegen_and_compile, with the same GraphModule). The same on torch 2.11.

_last_key = threading.local()


def install_fx_key_tap() -> None:
    """Replace ``FxGraphCache.prepare_key`` once, so that the key (or the reason the cache is
    bypassed) of the graph this thread is compiling can be taken by :func:`take_fx_key`."""
    from torch._inductor.codecache import FxGraphCache

    with _patch_lock:
        current = FxGraphCache.__dict__["prepare_key"]
        original = current.__func__ if isinstance(current, staticmethod) else current
        if getattr(original, "_sandbox_key_tap", False):
            return

        def prepare_key(gm: Any, *args: Any, **kwargs: Any) -> Any:
            key_info, cache_info = original(gm, *args, **kwargs)
            key = key_info[0] if key_info else None
            bypass = (cache_info or {}).get("cache_bypass_reason")
            try:
                _last_key.value = (weakref.ref(gm), key, bypass)
            except TypeError:  # a graph that cannot be referenced weakly: no key is known for it
                _last_key.value = None
            return key_info, cache_info

        prepare_key._sandbox_key_tap = True  # type: ignore[attr-defined]
        FxGraphCache.prepare_key = staticmethod(prepare_key)  # type: ignore[method-assign]


def take_fx_key(gm: Any) -> tuple[str | None, str | None]:
    """(the FX graph cache key ``gm`` is compiled under, None) or (None, why there is none):
    the cache is bypassed for the graph, or off."""
    last = getattr(_last_key, "value", None)
    _last_key.value = None
    if last is None or last[0]() is not gm:
        return None, "the FX graph cache is off for this graph"
    _, key, bypass = last
    if key is None:
        return None, f"the FX graph cache bypasses this graph: {bypass or 'no key'}"
    return key, None


# --- C++ builds a killed compile left unfinished ------------------------------------------
# torch._inductor.cpp_builder.CppBuilder.build compiles in ``<output dir>/<name>_CxxBuild`` and g++
# writes ``<name>.so`` (a kernel, an ISA probe) or ``<name>.gch`` (a precompiled header) in place;
# the folder is removed only once the build succeeded. Inductor builds each under a file lock:
# ``<cache dir>/locks/<key>.lock`` (codecache.get_lock_dir) for the kernels in
# ``<cache dir>/<xx>/<key>.*``, ``<_HEADER_LOCK_DIR>/<key>.lock`` for the headers in
# torch._inductor.codecache._HEADER_DIR (``<default cache dir>/precompiled_headers``, outside
# TORCHINDUCTOR_CACHE_DIR: one host's processes share it whatever cache dir they use). It skips a
# build whenever its output exists.

_GCC_PCH_DONE = b"gpch"  # GCC writes "gpcWrite" first and its real magic only once the header is complete
_BUILD_DIR_SUFFIX = "_CxxBuild"
_OUTPUTS = (".so", ".o", ".gch", ".pch", ".i")


def repair_interrupted_builds() -> list[str]:
    """Remove what C++ builds cut short left behind; returns the names of the builds repaired.

    A compile killed while g++ ran (a worker killed at its timeout, say) leaves its build folder
    and a partial output that Inductor never builds again because it exists: a partial kernel
    library kills the next process that loads it (SIGBUS), so the graph fails on that cache dir
    every time; a partial precompiled header g++ silently ignores ("not a PCH file"), so every
    later C++ kernel on the host parses the whole header. A build is repaired only while its lock
    is free, so one running now is left alone."""
    from torch._inductor import codecache
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    repaired = []
    headers, header_locks = getattr(codecache, "_HEADER_DIR", None), getattr(codecache, "_HEADER_LOCK_DIR", None)
    if headers and header_locks and os.path.isdir(headers):
        repaired += _repair_folder(headers, header_locks, unfinished_headers=True)
    root = cache_dir()
    if os.path.isdir(root):
        for sub in sorted(os.listdir(root)):
            folder = os.path.join(root, sub)
            if len(sub) == 2 and os.path.isdir(folder) and not os.path.islink(folder):
                repaired += _repair_folder(folder, os.path.join(root, "locks"), unfinished_headers=False)
    return repaired


def _repair_folder(folder: str, lock_dir: str, unfinished_headers: bool) -> list[str]:
    """The builds of one folder that were cut short (``_cut_short``), each removed with its
    outputs under the build's lock."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    builds = dict.fromkeys(  # build names, in order, once each
        name[: -len(_BUILD_DIR_SUFFIX)] if name.endswith(_BUILD_DIR_SUFFIX) else name[: -len(".gch")]
        for name in names
        if name.endswith(_BUILD_DIR_SUFFIX) or (unfinished_headers and name.endswith(".h.gch"))
    )
    repaired = []
    for build in builds:
        key = build.split(".", 1)[0]
        if key and _cut_short(folder, build, unfinished_headers):
            if _remove_build(folder, build, os.path.join(lock_dir, key + ".lock"), unfinished_headers):
                repaired.append(build)
    return repaired


def _cut_short(folder: str, build: str, unfinished_headers: bool) -> bool:
    """A build folder left (removed only once a build succeeded), or (``unfinished_headers``) a
    header whose magic g++ never finished writing."""
    left = os.path.join(folder, build + _BUILD_DIR_SUFFIX)
    if os.path.isdir(left) and not os.path.islink(left):
        return True
    return unfinished_headers and _pch_done(os.path.join(folder, build + ".gch")) is False


def _remove_build(folder: str, build: str, lock_path: str, unfinished_headers: bool) -> bool:
    import shutil

    from filelock import FileLock, Timeout  # torch.utils._filelock.FileLock's base: the same lock

    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    lock = FileLock(lock_path, timeout=0)
    try:
        lock.acquire()
    except (Timeout, OSError):
        return False  # being built now, or a lock this process may not take
    try:
        if not _cut_short(folder, build, unfinished_headers):
            return False  # finished meanwhile
        for ext in _OUTPUTS:
            out = os.path.join(folder, build + ext)
            if os.path.isfile(out) and not os.path.islink(out):
                os.remove(out)
        left = os.path.join(folder, build + _BUILD_DIR_SUFFIX)
        if os.path.isdir(left) and not os.path.islink(left):
            shutil.rmtree(left, ignore_errors=True)
        return True
    except OSError:
        log.debug("sandbox: could not repair the interrupted build %s in %s", build, folder, exc_info=True)
        return False
    finally:
        lock.release()


def _pch_done(path: str) -> bool | None:
    """Whether GCC finished writing this precompiled header (None: not a regular file, or unreadable)."""
    try:
        if not os.path.isfile(path) or os.path.islink(path):
            return None
        with open(path, "rb") as f:
            return f.read(len(_GCC_PCH_DONE)) == _GCC_PCH_DONE
    except OSError:
        return None
