"""Tests of dynamo (``sandbox/torch_adapter/dynamo.py``): its counters, compile ids and code
location, the compile lock, and the non-lazy backward setting.

One test per touch point of a private PyTorch API, each naming the symbols it relies on.
Written against torch 2.13.0: when a torch release moves or changes one of these symbols,
the test for it fails here, by name, instead of deep inside a user's compile."""

from __future__ import annotations

import threading
from typing import Any

import recording
import torch

from sandbox.torch_adapter import dynamo


def test_counters_snapshot_and_deltas(recorded: dict[str, Any]) -> None:
    """torch 2.13.0: ``torch._dynamo.utils.counters`` is a dict of Counters keyed by
    group; a compile moves ``frames``/``aot_autograd``/``inductor`` counters."""
    deltas = dynamo.counter_deltas(recorded["before"], recorded["after"])
    assert deltas.get("frames", {}).get("ok", 0) >= 1, deltas
    assert deltas.get("aot_autograd", {}).get("ok", 0) >= 1, deltas
    before = dynamo.counters_snapshot()
    dynamo.apply_counter_deltas({"sandbox_compat_test": {"worker_only": 3}})
    assert dynamo.counter_deltas(before, dynamo.counters_snapshot()) == {"sandbox_compat_test": {"worker_only": 3}}
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
    assert filename == recording.__file__  # the user model's forward is defined there
    assert isinstance(line, int) and line > 0
    assert dynamo.current_compile_id() is None
    assert dynamo.code_location() == (None, None, None)


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
        with dynamo.compile_lock_released():
            assert not compile_lock._is_owned()
            t = threading.Thread(target=other)
            t.start()
            t.join(timeout=15)
        assert compile_lock._is_owned()
        compile_lock.release()
        assert compile_lock._is_owned()  # depth 2 restored
        compile_lock.acquire()
    assert got == [True]
    with dynamo.compile_lock_released():  # not owned: a no-op
        assert not compile_lock._is_owned()


def test_compile_context_sets_compile_id() -> None:
    """torch 2.13.0: ``torch._guards.CompileId.from_string`` parses ``"frame/attempt"``
    and ``torch._guards.compile_context(CompileContext(cid))`` makes it current."""
    with dynamo.compile_context("3/1"):
        assert dynamo.current_compile_id() == "3/1"
    assert dynamo.current_compile_id() is None
    with dynamo.compile_context("not an id"):
        assert dynamo.current_compile_id() is None
    with dynamo.compile_context(None):
        assert dynamo.current_compile_id() is None


def test_non_lazy_backward() -> None:
    """torch 2.13.0 (the same on 2.11): ``torch._functorch.config.force_non_lazy_backward_lowering``."""
    assert torch._functorch.config.force_non_lazy_backward_lowering is False
    with dynamo.non_lazy_backward():
        assert torch._functorch.config.force_non_lazy_backward_lowering is True
    assert torch._functorch.config.force_non_lazy_backward_lowering is False
