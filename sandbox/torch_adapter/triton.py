"""GPU: Triton kernels in the generated modules, and what a process needs to load them.

Private symbols touched here: torch._inductor.codecache.PyCodeCache.modules (every generated module
loaded in this process, in load order); torch._inductor.runtime.triton_heuristics.CachingAutotuner
(.configs, .launchers[i].config/.n_regs/.n_spills/.shared, .autotune_cache_info,
.coordesc_tuner.cached_benchmark_results, .autotune_time_taken_ns, .inductor_meta["kernel_name"]);
torch._inductor.select_algorithm.add_feedback_saver / clear_feedback_savers (max-autotune's choices
and their timings); torch._inductor.async_compile.AsyncCompile (the Triton compile pool). Checked on
torch 2.11 + Triton 3.6 (CUDA) as well: the same attributes, and
``autotune_cache_info["compile_time_us"]`` set by AsyncCompile.triton on both.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from sandbox import env
from sandbox.torch_adapter.events import jsonable

log = logging.getLogger("sandbox")


def loaded_module_count() -> int:
    from torch._inductor.codecache import PyCodeCache

    return len(PyCodeCache.modules)


def modules_loaded_since(count: int) -> list[Any]:
    from torch._inductor.codecache import PyCodeCache

    return list(PyCodeCache.modules[count:])


def _triton_config(cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {k: jsonable(v) for k, v in sorted(getattr(cfg, "kwargs", {}).items())}
    for k in ("num_warps", "num_stages", "num_ctas", "maxnreg"):
        v = getattr(cfg, k, None)
        if v is not None:
            out[k] = jsonable(v)
    return out


def _benchmark_ms(ms: Any) -> float | None:
    """A benchmark time in ms; None for a candidate that failed (inf) or was not timed (nan)."""
    return float(ms) if ms == ms and ms != float("inf") else None


def triton_kernels(modules: Sequence[Any]) -> dict[str, Any]:
    """The ``CachingAutotuner`` objects of generated modules, by kernel name."""
    try:
        from torch._inductor.runtime.triton_heuristics import CachingAutotuner
    except Exception:  # no Triton in this build
        return {}
    found: dict[str, Any] = {}
    for mod in modules:
        for name, value in list(vars(mod).items()):
            if isinstance(value, CachingAutotuner):
                found[name] = value
    return found


def describe_triton_kernel(kernel: Any) -> dict[str, Any]:
    """What one Triton kernel's autotuner knows now: candidate configs, compiled
    launchers (registers, spills, shared memory), the autotune cache state, the
    benchmark timings once autotuning ran, and the compile time."""
    info = dict(getattr(kernel, "autotune_cache_info", None) or {})
    launchers = []
    for launcher in list(getattr(kernel, "launchers", None) or []):
        entry = _triton_config(getattr(launcher, "config", None))
        for k in ("n_regs", "n_spills", "shared"):
            v = getattr(launcher, k, None)
            entry[k] = int(v) if isinstance(v, (int, float)) else None
        launchers.append(entry)
    timings = []
    tuner = getattr(kernel, "coordesc_tuner", None)
    for key, ms in list((getattr(tuner, "cached_benchmark_results", None) or {}).items()):
        try:
            cfg = {str(k): jsonable(v) for k, v in key}
        except (TypeError, ValueError):
            continue
        timings.append({"config": cfg, "ms": _benchmark_ms(ms)})
    state = info.get("autotune_cache_state")
    # ``configs`` is dropped once the launchers are compiled: the compiled candidates
    # (with their registers and spills) are then the list of configs.
    configs = [_triton_config(c) for c in getattr(kernel, "configs", None) or []] or [dict(x) for x in launchers]
    out: dict[str, Any] = {
        "configs": configs,
        "launchers": launchers,
        "autotune_cache": state,
        "autotune_timings": timings,
        "compile_time_s": info["compile_time_us"] / 1e6
        if isinstance(info.get("compile_time_us"), (int, float))
        else None,
    }
    autotune_ns = getattr(kernel, "autotune_time_taken_ns", None)
    if isinstance(autotune_ns, (int, float)) and autotune_ns:
        out["autotune_time_s"] = autotune_ns / 1e9
    if info.get("num_configs") is not None:
        out["num_configs"] = info["num_configs"]
    if info.get("coordesc_tuning"):
        out["coordinate_descent"] = True
    return out


@contextlib.contextmanager
def capture_autotune_choices() -> Iterator[list[dict[str, Any]]]:
    """max-autotune's template/extern choices for each tuned op and their timings."""
    choices: list[dict[str, Any]] = []
    try:
        from torch._inductor import select_algorithm
    except Exception:
        yield choices
        return

    def saver(timings: Any, name: Any, input_nodes: Any, candidates: Any, *rest: Any) -> None:
        try:
            rows = []
            for choice, ms in timings.items():
                rows.append(
                    {
                        "name": str(getattr(choice, "name", choice)),
                        "kind": _choice_kind(choice),
                        "description": str(getattr(choice, "description", ""))[:300],
                        "ms": _benchmark_ms(ms),
                    }
                )
            rows.sort(key=lambda r: (r["ms"] is None, r["ms"] or 0.0))
            shapes = []
            for node in input_nodes or []:
                try:
                    shapes.append([jsonable(s) for s in node.get_size()])
                except Exception:
                    shapes.append(None)
            choices.append(
                {
                    "op": str(name),
                    "input_shapes": shapes,
                    "chosen": rows[0]["name"] if rows else None,
                    "candidates": rows,
                }
            )
        except Exception:  # noqa: BLE001 - a report detail never breaks a compile
            log.debug("sandbox: could not record autotune choices", exc_info=True)

    select_algorithm.add_feedback_saver(saver)
    try:
        yield choices
    finally:
        cache = select_algorithm.get_algorithm_selector_cache()
        cache.feedback_saver_fns = [f for f in cache.feedback_saver_fns if f is not saver]


def _choice_kind(choice: Any) -> str:
    cls = type(choice).__name__
    if "Extern" in cls:
        return "extern"
    if "Triton" in cls:
        return "triton_template"
    return cls


def warm_up_gpu() -> dict[str, float]:
    """Worker side, before the first job: CUDA initialised, Triton and Inductor's GPU
    code generators imported, Inductor's Triton compile pool started and ready. A
    machine without a usable GPU pays only the availability check."""
    import time

    t0 = time.time()
    if not torch.cuda.is_available():
        return {"cuda_check_s": time.time() - t0}
    phases: dict[str, float] = {"cuda_check_s": time.time() - t0}
    use_inductor_ptxas()  # before any kernel compiles, here or in the compile pool
    t = time.time()
    torch.cuda.init()
    from torch._inductor.async_compile import AsyncCompile, caching_device_properties

    caching_device_properties()
    phases["cuda_init_s"] = time.time() - t
    t = time.time()
    importlib.import_module("torch._inductor.codegen.triton")
    importlib.import_module("torch._inductor.runtime.triton_heuristics")
    phases["import_triton_s"] = time.time() - t
    t = time.time()
    try:
        # Started, not awaited: its processes come up while the worker waits for its
        # first job; a compile that comes sooner builds its kernels here meanwhile,
        # as in-process Inductor does with its own pool.
        AsyncCompile.warm_pool()
        if env.get("SANDBOX_WORKER_POOL") != "job":
            AsyncCompile.use_process_pool()  # submits the pool's readiness job: its workers start now
    except Exception:  # noqa: BLE001 - Inductor then compiles kernels in this process
        log.debug("sandbox: Triton compile pool did not start", exc_info=True)
    phases["compile_pool_start_s"] = time.time() - t
    return phases


# --- GPU: what this process needs to load a worker's compiled graph ------------------
# Loading a GPU graph starts Triton's CUDA driver utilities (a small C module, built into
# TRITON_CACHE_DIR once). In-process Inductor pays this while it compiles; rather than inside
# the load, after the worker's reply, prepare_gpu_load does it on a background thread while
# the process waits for the worker (sandbox/isolation/parent_warmup.ParentWarmUp); the load joins it
# (docs/decisions/gpu-load-prepared-while-waiting.md). (Triton and Inductor's Triton runtime
# are imported by then already: torch._dynamo and compile_fx import them.)


def use_inductor_ptxas() -> str | None:
    """Point Triton at the ptxas Inductor picks (the one shipped with torch, where there is
    one, unless TRITON_PTXAS_PATH is set): ``_set_triton_ptxas_path``, which Inductor calls
    on some of its compile paths only. The ptxas version is part of each kernel's Triton
    cache key: with Triton's bundled ptxas in one process and torch's in the other, the user's
    process would miss every kernel the worker compiled and compile it again inside the load
    (docs/decisions/one-ptxas.md). Called by the
    worker before its first job and by the user's process before its first GPU load, so
    both use one ptxas and one key. Returns TRITON_PTXAS_PATH after.
    torch._inductor.runtime.compile_tasks._set_triton_ptxas_path on 2.11 and 2.13."""
    try:
        from torch._inductor.runtime.compile_tasks import _set_triton_ptxas_path
    except ImportError:  # pragma: no cover - a torch without it: Triton picks its own
        return os.environ.get("TRITON_PTXAS_PATH")
    _set_triton_ptxas_path()
    return os.environ.get("TRITON_PTXAS_PATH")


def prepare_gpu_load() -> dict[str, Any]:
    """Point Triton at Inductor's ptxas and start Triton's active driver. Returns seconds
    taken and what failed (nothing expected on a GPU machine; without Triton the driver
    does, and the load then fails as before)."""
    import time

    t0 = time.time()
    failed: list[str] = []
    use_inductor_ptxas()  # an environment variable only: no ptxas runs here
    try:
        from triton.runtime import driver

        driver.active.get_current_device()
    except Exception:  # noqa: BLE001 - the load starts it then
        failed.append("triton.runtime.driver.active")
    # Not Triton's backend hash: it runs ``ptxas --version``, and nothing of the compiler
    # toolchain runs in this process while the worker compiles (a ptxas that crashes or
    # hangs must cost the worker, not this process; docs/decisions/gpu-load-prepared-while-waiting.md).
    return {"driver_s": time.time() - t0, "failed": failed}


def launch_compile_pool() -> bool:
    """Start the Triton compile pool's processes if they are not started yet (a no-op
    once they are, and where Inductor compiles in one process); True once it is ready."""
    from torch._inductor.async_compile import AsyncCompile

    try:
        return bool(AsyncCompile.use_process_pool())
    except Exception:  # noqa: BLE001 - Inductor then compiles kernels in this process
        return False


def set_compile_threads(threads: int) -> bool:
    """Give Inductor ``threads`` compile threads from now on (``config.compile_threads``, read
    when its compile pool starts). A pool already started with another size is shut down, so
    that the next kernel starts one of the new size: a host's workers share its cores, and a
    worker whose share shrank (the pool of workers grew) must not keep its larger pool. True
    when a started pool was shut down. torch._inductor.config.compile_threads,
    torch._inductor.async_compile.AsyncCompile.process_pool / .pool (functools.lru_cache'd),
    shutdown_compile_workers; the same on torch 2.11."""
    from torch._inductor import async_compile, config

    threads = max(1, int(threads))
    if config.compile_threads == threads:
        return False
    config.compile_threads = threads
    started = async_compile.AsyncCompile.process_pool.cache_info().currsize > 0
    if started:
        async_compile.shutdown_compile_workers()
    if async_compile.AsyncCompile.pool.cache_info().currsize > 0:
        async_compile.AsyncCompile.pool().shutdown(wait=False)
        async_compile.AsyncCompile.pool.cache_clear()
    return started
