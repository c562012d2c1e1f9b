"""Tests of Inductor's caches (``sandbox/torch_adapter/caches.py``): the cache clock, the cache
directories a worker shares, and the deferred FX graph cache save of async mode.

One test per touch point of a private PyTorch API, each naming the symbols it relies on.
Written against torch 2.13.0: when a torch release moves or changes one of these symbols,
the test for it fails here, by name, instead of deep inside a user's compile."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch

from sandbox.torch_adapter import caches, wire


def test_cache_clock_ticks_on_clear_caches() -> None:
    """torch 2.13.0: ``torch._inductor.utils.clear_on_fresh_cache(obj)`` registers an
    object whose ``cache_clear()`` ``clear_caches()`` (and ``fresh_cache()``) call."""
    clock = caches.CacheClock()
    caches.register_cache_clock(clock)
    assert clock.value == 0
    caches.clear_inductor_caches()
    assert clock.value == 1
    from torch._inductor.utils import fresh_cache

    with fresh_cache():
        pass
    assert clock.value >= 2


def test_load_custom_op_sources_and_cache_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """torch 2.13.0: ``torch.ops.loaded_libraries`` lists what ``torch.ops.load_library``
    loaded; the worker imports op-defining modules by name and shares the cache dirs."""
    assert isinstance(getattr(torch.ops, "loaded_libraries", set()), set)
    wire.load_custom_op_sources(["json"], [])
    assert "json" in sys.modules
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    assert caches.cache_env() == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}


def test_shared_folder_is_inside_inductors_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """torch 2.13.0 (the same on 2.11): ``torch._inductor.runtime.cache_dir_utils.cache_dir`` reads
    ``TORCHINDUCTOR_CACHE_DIR`` at each call, so processes that share the caches share the folder."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    assert caches.shared_folder("graph-flight") == str(tmp_path / "inductor" / "sandbox" / "graph-flight")


def test_install_deferred_cache_save() -> None:
    """torch 2.13.0 (the same on 2.11): ``FxGraphCache._save_graph`` is a staticmethod looked
    up on the class, and ``_get_shape_env`` / ``_filter_backed_symints`` give its guard
    expression. A stand-in (``defer_cache_save``) gets the expression and a deferred save;
    that save reaches the original under the same TracingContext."""
    from torch._inductor.codecache import FxGraphCache
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    caches.install_deferred_cache_save()
    caches.install_deferred_cache_save()  # once
    assert caches.deferred_cache_save_installed()
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


def test_fx_key_tap_gives_the_key_of_the_graph_about_to_compile() -> None:
    """torch 2.13.0 (the same on 2.11): ``FxGraphCache.prepare_key(gm, example_inputs, fx_kwargs,
    inputs_to_check, remote)`` is a staticmethod looked up on the class by ``_compile_fx_inner``
    and returns ``((key, debug_lines), cache_info)``, or ``(None, {"cache_bypass_reason": ...})``
    (e.g. outside a trace: no ShapeEnv). The tap hands the key to the same thread for the same
    GraphModule only, once."""
    from torch._inductor.codecache import FxGraphCache
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    caches.install_fx_key_tap()
    caches.install_fx_key_tap()  # once
    assert getattr(FxGraphCache.__dict__["prepare_key"].__func__, "_sandbox_key_tap", False)

    gm = torch.fx.symbolic_trace(lambda x: torch.sin(x) + 1)
    context = torch._guards.TracingContext(FakeTensorMode(shape_env=ShapeEnv()))
    with torch._guards.tracing(context):
        key_info, _ = FxGraphCache.prepare_key(gm, [torch.randn(4)], {}, [], False)
        assert key_info is not None
        other = torch.fx.symbolic_trace(lambda x: x)
        assert caches.take_fx_key(other) == (None, "the FX graph cache is off for this graph")  # not its key
        key_info, _ = FxGraphCache.prepare_key(gm, [torch.randn(4)], {}, [], False)
    assert caches.take_fx_key(gm) == (key_info[0], None)
    assert caches.take_fx_key(gm)[0] is None  # taken once

    key_info, info = FxGraphCache.prepare_key(gm, [torch.randn(4)], {}, [], False)  # no trace: bypassed
    assert key_info is None
    assert caches.take_fx_key(gm) == (None, f"the FX graph cache bypasses this graph: {info['cache_bypass_reason']}")


def test_repair_interrupted_builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """torch 2.13.0: ``torch._inductor.cpp_builder.CppBuilder.build`` leaves ``<name>_CxxBuild``
    beside an output it did not finish; kernels live in ``<cache dir>/<xx>/<key>.*`` with their
    lock in ``codecache.get_lock_dir()``, headers in ``codecache._HEADER_DIR`` with theirs in
    ``_HEADER_LOCK_DIR``, each ``torch.utils._filelock.FileLock(<lock dir>/<key>.lock)``. A build
    whose lock is free is removed: a leftover build folder with its partial outputs, or a header g++
    never finished ("gpcWrite" magic, or empty). A finished header, a build whose lock is held and
    files that are no build output are kept."""
    from torch._inductor import codecache
    from torch.utils._filelock import FileLock

    assert codecache._HEADER_DIR and codecache._HEADER_LOCK_DIR.startswith(codecache._HEADER_DIR)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    assert codecache.get_lock_dir() == str(tmp_path / "cache" / "locks")
    headers, locks = tmp_path / "precompiled_headers", tmp_path / "precompiled_headers" / "locks"
    locks.mkdir(parents=True)
    monkeypatch.setattr(codecache, "_HEADER_DIR", str(headers))
    monkeypatch.setattr(codecache, "_HEADER_LOCK_DIR", str(locks))
    files = {
        "done.h.gch": b"gpch+014" + b"\0" * 64,
        "killed.h.gch": b"gpcWrite" + b"\0" * 64,
        "empty.h.gch": b"",
        "busy.h.gch": b"gpcWrite",
        "note.txt": b"gpcWrite",
        "killed.h": b"#include <torch/csrc/inductor/cpp_prefix.h>\n",
    }
    for name, data in files.items():
        (headers / name).write_bytes(data)
    (headers / "dir.h.gch").mkdir()
    kernels = tmp_path / "cache" / "ab"
    kernels.mkdir(parents=True)
    for name in ("cabc.main.cpp", "cabc.main.so", "cdone.main.cpp", "cdone.main.so", "cprobe.cpp", "cprobe.so"):
        (kernels / name).write_bytes(b"\x7fELF partial")
    (kernels / "cabc.main_CxxBuild").mkdir()
    (kernels / "cprobe_CxxBuild").mkdir()
    (kernels / "cprobe_CxxBuild" / "x.o").write_bytes(b"")
    held = FileLock(str(locks / "busy.lock"))
    held_kernel = FileLock(str(tmp_path / "cache" / "locks" / "cprobe.lock"))
    held.acquire()
    held_kernel.acquire()
    try:
        assert caches.repair_interrupted_builds() == ["empty.h", "killed.h", "cabc.main"]
    finally:
        held.release()
        held_kernel.release()
    assert sorted(p.name for p in headers.iterdir()) == [
        "busy.h.gch",
        "dir.h.gch",
        "done.h.gch",
        "killed.h",
        "locks",
        "note.txt",
    ]
    assert sorted(p.name for p in kernels.iterdir()) == [
        "cabc.main.cpp",
        "cdone.main.cpp",
        "cdone.main.so",
        "cprobe.cpp",
        "cprobe.so",
        "cprobe_CxxBuild",
    ]
    assert caches.repair_interrupted_builds() == ["busy.h", "cprobe"]  # their builders are gone now
    assert sorted(p.name for p in kernels.iterdir()) == [
        "cabc.main.cpp",
        "cdone.main.cpp",
        "cdone.main.so",
        "cprobe.cpp",
    ]
    monkeypatch.setattr(codecache, "_HEADER_DIR", str(tmp_path / "missing"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "missing-too"))
    assert caches.repair_interrupted_builds() == []
