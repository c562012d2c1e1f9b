"""A worker's warm-up: Inductor's one-time costs paid before the first job.

Private symbols touched here: torch._inductor.cpu_vec_isa (pick_vec_isa, x86_isa_checker,
supported_vec_isa_list, VecISA.check_build); torch._inductor.async_compile;
torch._C._dynamo.guards._torchinductor_pyobject_tensor_data_ptr and the environment variable
codecache's C++ kernel loader writes it to (``_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
from typing import Any

import torch

log = logging.getLogger("sandbox")
_PROBE_LOCK = threading.Lock()


def probe_cpu_isa() -> None:
    """Inductor's CPU instruction-set probe (``cpu_vec_isa``), its candidates checked in parallel.

    Stock Inductor builds and dlopen-probes each candidate ISA one after the
    other inside the first compile. The checks are independent (a g++ build and a probe
    process each), so run them side by side (docs/decisions/cpu-isa-probe.md);
    the results land in the same ``functools.cache`` that ``pick_vec_isa`` reads.
    Each check's answer is kept beside the cache dir's marker: a later process on the same
    cache dir and torch (a rank loading a worker's CPU graph) takes the answers from there
    instead of starting a probe process per check, which imports torch on older releases.
    """
    with _PROBE_LOCK:  # one probe at a time: two would swap each other's check_build
        _probe_cpu_isa()


def _probe_cpu_isa() -> None:
    import platform

    from torch._inductor import cpu_vec_isa

    recorded = _read_isa_record()
    answers: dict[str, bool] = {}
    if platform.machine() in ("x86_64", "AMD64") and sys.platform == "linux":
        flags = cpu_vec_isa.x86_isa_checker()
        candidates = [isa for isa in cpu_vec_isa.supported_vec_isa_list if all(f in flags for f in str(isa).split())]
        threads = [
            threading.Thread(target=_check_isa, args=(isa, recorded, answers), daemon=True) for isa in candidates
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    cpu_vec_isa.pick_vec_isa()
    if recorded is None or any(recorded.get(k) is not v for k, v in answers.items()):
        _write_isa_record({**(recorded or {}), **answers})


def _check_isa(isa: Any, recorded: dict[str, bool] | None, answers: dict[str, bool]) -> None:
    """``bool(isa)``, Inductor's cached check, with each of its build-and-load checks answered
    from ``recorded`` where it holds that check's answer (the CPU flags were checked in this
    process already), and otherwise run and noted in ``answers``."""
    real = type(isa).check_build

    def check_build(code: str) -> bool:
        key = _check_key(isa, code)
        if recorded is not None and isinstance(recorded.get(key), bool):
            return recorded[key]
        answers[key] = ok = bool(real(isa, code))
        return ok

    isa.check_build = check_build  # this instance only, for the check's duration
    try:
        bool(isa)
    finally:
        del isa.check_build


def _check_key(isa: Any, code: str) -> str:
    """One build-and-load check: the ISA, its compiler flags at the time (Inductor adds some for
    sub-checks), the probe program and the compiler."""
    digest = hashlib.sha256(code.encode()).hexdigest()[:16]
    return f"{isa} | {isa.build_arch_flags()} | {digest} | {os.environ.get('CXX', '')}"


def _record_version() -> str:
    return f"{torch.__version__} {sys.executable}"


_answers_taken = False


def take_recorded_isa_answers() -> bool:
    """Once per process, where a process on this cache dir (a worker) recorded the probe's answers
    for this torch: take them (``probe_cpu_isa`` with every check answered), so that a CPU graph
    loaded from the caches starts no probe process here. False where there was no record yet."""
    global _answers_taken
    if _answers_taken:
        return True
    if not isa_record_ready():
        return False
    _answers_taken = True
    probe_cpu_isa()
    return True


def isa_record_ready() -> bool:
    """Whether a process on this cache dir (a worker) recorded the probe's answers for this torch."""
    return _read_isa_record() is not None


def _read_isa_record() -> dict[str, bool] | None:
    """The answers a process on this cache dir recorded, if it ran this torch and interpreter.
    The file is data only: answers must be booleans, and they are consulted only for candidates
    whose CPU flags this process saw itself, so a tampered file can at most turn an ISA off."""
    try:
        with open(_isa_marker()) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("torch") != _record_version() or not isinstance(data.get("checks"), dict):
        return None
    return {k: v for k, v in data["checks"].items() if isinstance(k, str) and isinstance(v, bool)}


def _write_isa_record(checks: dict[str, bool]) -> None:
    """Written whole, then renamed: a reader sees the old record or the new one."""
    try:  # the probe's programs are in this cache dir from now on: later workers need not wait for them
        path = _isa_marker()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"torch": _record_version(), "checks": checks}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
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


KERNEL_LOADER_ENV = "_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR"


def settle_environment() -> list[str]:
    """Add now, while no other thread starts processes, the environment variable Inductor adds at
    its first C++ kernel load, with the value it will write; returns the names added.

    Why: adding a variable makes glibc move the process's environment array and free the old one.
    Inductor loads a finished kernel on the compile thread while its compile pool's threads start
    g++ through ``subprocess`` with no ``env``, which hands the kernel that array: a g++ started at
    that moment fails with EFAULT ("Bad address") and the graph's compile fails. Replacing a
    variable's value moves nothing, so every later load is harmless."""
    from torch._C._dynamo import guards

    pointer = getattr(guards, "_torchinductor_pyobject_tensor_data_ptr", None)
    if pointer is None or KERNEL_LOADER_ENV in os.environ:  # a torch without it adds nothing
        return []
    os.environ[KERNEL_LOADER_ENV] = str(pointer)
    return [KERNEL_LOADER_ENV]


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
