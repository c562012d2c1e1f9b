"""GPU kernel details: what the worker knew at compile time, and what the user's
process learns at the graph's first run.

A Triton kernel's candidate configs, registers, spills, shared memory and compile
time exist in the worker while it compiles (its autotuner objects do not travel);
which config won, the benchmark timings and the autotune cache state exist only in
the user's process once the compiled graph has run, because Triton autotunes at
the first launch. The report is published when the compile ends and completed
(``kernels[i]["launchers"]`` and ``kernels[i]["triton"]``, ``completed_at``) after
that first run; the completed
report is published again, so the store holds the whole of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sandbox.record.report import CompileReport
from sandbox.torch_adapter import triton

log = logging.getLogger("sandbox")

_TRITON_KINDS = ("triton", "template")


def attach_worker_details(report: CompileReport, details: dict[str, Any], choices: list[dict[str, Any]]) -> None:
    """Compile-time details from the worker, onto the report's kernel inventory."""
    if choices:
        report.autotune = list(choices)
    for k in report.kernels:
        info = details.get(k["name"])
        if info is not None:
            info = dict(info)
            k["launchers"] = info.pop("launchers", [])
            k["triton"] = {**info, "first_run": False}


def _merge_first_run(entry: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    entry = dict(entry)
    t = dict(entry.get("triton") or {"configs": now.get("configs", []), "first_run": False})
    entry["triton"] = t
    launchers = now.get("launchers") or []
    if len(launchers) == 1:
        t["chosen"] = launchers[0]
    if launchers:
        entry["launchers"] = launchers  # what runs from now on: the chosen config once autotuned
    t["autotune_cache"] = now.get("autotune_cache") or t.get("autotune_cache")
    if now.get("autotune_timings"):
        t["autotune_timings"] = now["autotune_timings"]
    for key in ("autotune_time_s", "num_configs", "coordinate_descent"):
        if now.get(key) is not None:
            t[key] = now[key]
    if t.get("compile_time_s") is None and now.get("compile_time_s") is not None:
        t["compile_time_s"] = now["compile_time_s"]
    t["first_run"] = True
    return entry


def complete_after_first_run(report: CompileReport, kernels: dict[str, Any]) -> bool:
    """Read the user's process's autotuners after the first run; True if anything was added.

    Entries are replaced, never changed in place: the store's writer may be
    serialising the report (as first published) on its own thread right now."""
    changed = False
    updated = []
    for entry in report.kernels:
        autotuner = kernels.get(entry["name"])
        if autotuner is not None:
            try:
                entry = _merge_first_run(entry, triton.describe_triton_kernel(autotuner))
                changed = True
            except Exception:  # noqa: BLE001 - a report detail never breaks the user's step
                log.debug("sandbox: could not read Triton kernel %s", entry["name"], exc_info=True)
        updated.append(entry)
    if changed:
        report.kernels = updated
        report.completed_at = time.time()
    return changed


def watch_first_run(
    compiled: Any, report: CompileReport, modules_before: int, republish: Callable[[CompileReport], None]
) -> bool:
    """Complete ``report`` right after ``compiled`` (a ``CompiledFxGraph``) first runs.

    Wraps its ``current_callable`` once; the wrapper puts the original back before it
    returns, so every later call costs nothing. Returns False when the graph has no
    Triton kernels (CPU graphs are never wrapped).
    """
    if not any(k.get("kind") in _TRITON_KINDS for k in report.kernels):
        return False
    try:
        kernels = triton.triton_kernels(triton.modules_loaded_since(modules_before))
    except Exception:  # noqa: BLE001
        return False
    original = getattr(compiled, "current_callable", None)
    if not kernels or original is None:
        return False
    lock = threading.Lock()
    done = False

    def first_call(*args: Any, **kwargs: Any) -> Any:
        nonlocal done
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                if not done:
                    done = True
                    if compiled.current_callable is first_call:
                        compiled.current_callable = original
                    try:
                        if complete_after_first_run(report, kernels):
                            republish(report)
                    except Exception:  # noqa: BLE001
                        log.debug("sandbox: could not complete report after first run", exc_info=True)

    compiled.current_callable = first_call
    return True
