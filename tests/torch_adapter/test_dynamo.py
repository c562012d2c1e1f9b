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


def test_no_autograd_cache() -> None:
    """torch 2.13.0 (the same name on 2.11): ``torch._functorch.config.enable_autograd_cache``."""
    before = torch._functorch.config.enable_autograd_cache
    with dynamo.no_autograd_cache():
        assert torch._functorch.config.enable_autograd_cache is False
        assert dynamo.autograd_cache_on() is False
    assert torch._functorch.config.enable_autograd_cache == before
    assert dynamo.autograd_cache_on() is bool(before)


def _backend_recording(seen: list[dict[str, Any]]) -> Any:
    """A backend that records what the adapter reads inside it, then runs the graph as is."""

    def backend(gm: Any, example_inputs: Any) -> Any:
        seen.append(
            {
                "compile_id": dynamo.current_compile_id(),
                "compile_reason": dynamo.compile_reason(gm),
                "recompile_reason": dynamo.recompile_reason(),
                "symbolic": dynamo.symbolic_inputs(gm),
            }
        )
        return gm.forward

    return backend


def test_compile_reason_of_a_graph_break() -> None:
    """torch 2.13.0: dynamo sets ``compile_subgraph_reason`` (``GraphCompileReason``: ``reason``,
    ``user_stack`` of ``traceback.FrameSummary``, ``graph_break``) on the GraphModule a backend gets."""
    import inspect

    def broken(x: torch.Tensor) -> torch.Tensor:
        y = x.relu()
        torch._dynamo.graph_break()
        return y + 1

    break_line = inspect.getsourcelines(broken)[1] + 2
    seen: list[dict[str, Any]] = []
    torch.compile(broken, backend=_backend_recording(seen))(torch.randn(3))
    first, rest = (s["compile_reason"] for s in seen)
    assert first["graph_break"] is True and "graph_break" in first["reason"], first
    assert "\n" not in first["reason"] and len(first["reason"]) <= dynamo.REASON_CHARS
    assert first["frames"][-1] == {"file": __file__, "line": break_line, "function": "broken"}
    assert rest == {
        "graph_break": False,
        "reason": "return_value",
        "frames": [{"file": __file__, "line": break_line + 1, "function": rest["frames"][0]["function"]}],
    }
    assert dynamo.compile_reason(torch.nn.Module()) is None  # not from dynamo


def test_recompile_reason_from_the_metrics_context() -> None:
    """torch 2.13.0: ``convert_frame._compile`` puts ``recompile_reason`` (the first failed guard,
    ``"<compile id>: <guard failure>"``) into ``get_metrics_context()`` before calling the backend."""

    def shaped(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    seen: list[dict[str, Any]] = []
    compiled = torch.compile(shaped, backend=_backend_recording(seen), dynamic=False)
    compiled(torch.randn(4))
    compiled(torch.randn(6))
    first, second = seen
    assert first["recompile_reason"] is None
    frame = first["compile_id"].split("/")[0]
    assert second["compile_id"] == f"{frame}/1"
    assert second["recompile_reason"] == f"{frame}/0: tensor 'x' size mismatch at index 0. expected 4, actual 6"
    assert dynamo.recompile_reason() is None  # outside a compile


def test_symbolic_inputs_of_a_dynamic_graph() -> None:
    """torch 2.13.0: a dynamic graph's placeholders carry ``meta["example_value"]``, a FakeTensor
    whose sizes are SymInts, while the example inputs a backend gets are real tensors."""

    def scaled(x: torch.Tensor) -> torch.Tensor:
        return x.sum(0) * 3

    seen: list[dict[str, Any]] = []
    torch.compile(scaled, backend=_backend_recording(seen), dynamic=True)(torch.randn(5, 2))
    torch.compile(lambda x: x + 1, backend=_backend_recording(seen), dynamic=False)(torch.randn(5, 2))
    dynamic, static = (s["symbolic"] for s in seen)
    ((index, traced),) = dynamic.items()
    assert all(isinstance(d, torch.SymInt) for d in traced.shape)
    assert str(traced.stride()[0]) == str(traced.shape[1])
    assert static == {}
    assert dynamo.symbolic_inputs(object()) == {}


def test_raise_to_user_passes_dynamo_as_itself() -> None:
    """torch 2.13.0: dynamo re-raises a backend's ``torch._dynamo.exc.ShortenTraceback`` (instead of
    wrapping it in ``BackendCompilerFailed``), with ``remove_dynamo_frames()``, and appends its hints
    to errors that carry a ``real_stack``."""

    class Refusal(ValueError):
        pass

    def backend(gm: Any, example_inputs: Any) -> Any:
        dynamo.raise_to_user(Refusal("bad option 'x'"))

    f = torch.compile(lambda t: t + 1, backend=backend)
    try:
        f(torch.ones(2))
    except Refusal as e:
        assert str(e) == "bad option 'x'" and type(e).__name__ == "Refusal"
        assert not isinstance(e, torch._dynamo.exc.BackendCompilerFailed)
    else:
        raise AssertionError("the backend's error did not reach the caller")
    finally:
        torch._dynamo.reset()
