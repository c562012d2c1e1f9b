"""A worker's warm-up: Inductor's one-time costs paid before the first job.

Private symbols touched here: torch._inductor.cpu_vec_isa.pick_vec_isa;
torch._inductor.async_compile.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

import torch

log = logging.getLogger("sandbox")


def probe_cpu_isa() -> None:
    """Inductor's CPU instruction-set probe (``cpu_vec_isa``), its candidates checked in parallel.

    Stock Inductor builds and dlopen-probes each candidate ISA one after the
    other inside the first compile. The checks are independent (a g++ build and a probe
    process each), so run them side by side (docs/decisions/cpu-isa-probe.md);
    the results land in the same ``functools.cache`` that ``pick_vec_isa`` reads.
    """
    import platform

    from torch._inductor import cpu_vec_isa

    if platform.machine() in ("x86_64", "AMD64") and sys.platform == "linux":
        flags = cpu_vec_isa.x86_isa_checker()
        candidates = [isa for isa in cpu_vec_isa.supported_vec_isa_list if all(f in flags for f in str(isa).split())]
        threads = [threading.Thread(target=bool, args=(isa,), daemon=True) for isa in candidates]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    cpu_vec_isa.pick_vec_isa()
    try:  # the probe's programs are in this cache dir from now on: later workers need not wait for them
        os.makedirs(os.path.dirname(_isa_marker()), exist_ok=True)
        with open(_isa_marker(), "w") as f:
            f.write(str(cpu_vec_isa.pick_vec_isa()))
    except OSError:
        pass


def _isa_marker() -> str:
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return os.path.join(cache_dir(), "sandbox", "cpu-isa-probed")


def cpu_isa_probe_cached() -> bool:
    """Whether a worker already ran the CPU instruction-set probe on this cache dir
    (``torch._inductor.runtime.cache_dir_utils.cache_dir``): then the probe is cheap wherever
    it runs, and a worker's warm-up leaves it to the first compile that needs it instead of
    holding the probe's file lock while the user's process loads cached kernels
    (docs/decisions/cpu-isa-probe.md)."""
    try:
        return os.path.exists(_isa_marker())
    except Exception:  # noqa: BLE001
        return False


def gpu_available() -> bool:
    """A CUDA device this process can use (no CUDA context is created)."""
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def warm_up_inductor(probe_isa: bool = True) -> dict[str, float]:
    """Pay Inductor's one-time costs: imports and (``probe_isa``) the CPU
    instruction-set probe. The probe (compilers and probe processes, GIL released)
    runs beside the imports. Returns seconds per phase."""
    import time

    t0 = time.time()
    from torch._inductor import cpu_vec_isa  # noqa: F401

    t1 = time.time()
    probe_s: list[float] = []

    def probe() -> None:
        start = time.time()
        if probe_isa:
            probe_cpu_isa()
        probe_s.append(time.time() - start)

    prober = threading.Thread(target=probe, name="sandbox-isa-probe", daemon=True)
    prober.start()
    import torch._inductor.codegen.cpp  # noqa: F401
    import torch._inductor.codegen.wrapper  # noqa: F401
    import torch._inductor.compile_fx  # noqa: F401
    import torch._inductor.compile_fx_ext  # noqa: F401
    import torch._inductor.fx_passes.post_grad  # noqa: F401
    import torch._inductor.graph  # noqa: F401
    import torch._inductor.lowering  # noqa: F401
    import torch._inductor.scheduler  # noqa: F401

    t2 = time.time()
    prober.join()
    return {
        "import_inductor_s": t2 - t0,
        "cpu_isa_probe_s": probe_s[0] if probe_s else time.time() - t1,
        "probe_after_imports_s": time.time() - t2,
    }
