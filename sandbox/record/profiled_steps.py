"""Profile chosen calls of a compiled graph and put its kernels' runtimes into its report.

Option ``profile_steps`` (``SANDBOX_PROFILE_STEPS``): the calls of each compiled graph to profile,
counted from 1 (in a training loop that calls each graph once per step, the step). The graph's
``current_callable`` is wrapped once, as ``gpu_kernels.watch_first_run`` does; until the last
chosen call each call costs the wrapper and one integer check, and the last chosen call puts the
original back, so every later call costs nothing. A chosen call runs under ``torch.profiler``
(``torch_adapter.profiling``), its ops are attributed to the report's kernels
(``record.kernel_runtime``), and the report is published again (``Sink.update``): the store holds
the runtimes of every profiled call so far.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sandbox.record import kernel_runtime
from sandbox.record.report import CompileReport
from sandbox.torch_adapter import profiling

log = logging.getLogger("sandbox")

_GPU_KINDS = ("triton", "template")


def on_gpu(report: CompileReport) -> bool:
    """The graph runs on a GPU: a CUDA input, or Triton kernels."""
    return any(i.get("device") == "cuda" for i in report.inputs if isinstance(i, dict)) or any(
        k.get("kind") in _GPU_KINDS for k in report.kernels
    )


def _skipped(report: CompileReport, call: int, why: str) -> None:
    runtime = dict(report.runtime or {"device": None, "steps": []})
    runtime["skipped"] = [*(runtime.get("skipped") or []), {"call": call, "why": why}]
    report.runtime = runtime


def watch_steps(
    compiled: Any,
    report: CompileReport,
    steps: Sequence[int],
    republish: Callable[[CompileReport], None],
) -> bool:
    """Profile calls ``steps`` (1-based) of ``compiled`` (a ``CompiledFxGraph``) and complete
    ``report`` after each. Returns False when nothing was wrapped (no steps, no callable)."""
    original = getattr(compiled, "current_callable", None)
    if not steps or original is None or not report.kernels:
        return False
    wanted = frozenset(steps)
    last = max(wanted)
    counter = itertools.count(1)  # next() on it is atomic: two threads never get the same call
    namespace = profiling.generated_globals(original)
    marked = [str(k.get("name")) for k in report.kernels if k.get("kind") != "extern"]
    lock = threading.Lock()  # one profiled call at a time updates the report

    def profiled(call: int, args: tuple[Any, ...]) -> Any:
        gpu = on_gpu(report)
        cuda = gpu and profiling.cuda_ready()
        if profiling.busy():
            with lock:
                _skipped(report, call, "another profiler was recording this process")
            republish(report)
            return original(*args)
        region = f"sandbox.profile {report.compile_id or '?'} {report.graph_kind} call {call}"
        with profiling.marked_kernels(namespace, marked):
            result, trace = profiling.profiled_call(original, args, region, cuda)
        try:
            with lock:
                if trace is None:
                    _skipped(report, call, "the profiler could not be started or read")
                else:
                    found = kernel_runtime.attribute(report.kernels, trace["ops"], device=cuda)
                    report.kernels, report.runtime = kernel_runtime.merge(
                        report.kernels,
                        report.runtime,
                        found,
                        call,
                        trace["wall_us"],
                        "cuda" if cuda else "cpu",
                        time.time(),
                    )
            republish(report)
        except Exception:  # noqa: BLE001 - a report detail never breaks the user's step
            log.debug("sandbox: could not attribute the profiled call of %s", report.compile_id, exc_info=True)
        return result

    def counted(*args: Any) -> Any:
        call = next(counter)
        if call >= last and compiled.current_callable is counted:
            compiled.current_callable = original  # the last chosen call: later calls go straight in
        if call in wanted:
            return profiled(call, args)
        return original(*args)

    compiled.current_callable = counted
    return True
