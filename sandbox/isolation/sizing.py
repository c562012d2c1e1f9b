"""How many CPU threads a rank's workers may use, so that a host running several ranks is
not oversubscribed.

The rule: workers on this host x Inductor compile threads per worker <= the cores this
process may run on. Each rank with its own workers: ranks on this host x workers per rank; a
compile service shared by the host's ranks (``service.py``): the service's workers.
``LOCAL_WORLD_SIZE`` (set by torchrun) says how many ranks share the host; the cores are this
process's CPU affinity (what ``taskset``, a cgroup cpuset or a container's CPU list allow), not
the machine's count. Each worker gets ``TORCHINDUCTOR_COMPILE_THREADS`` = cores // workers on
the host, at least 1, unless the environment sets it already; every job carries the share too
(``job_threads``), so a worker started before its pool grew shrinks its compile pool. Imports
no torch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

COMPILE_THREADS_ENV = "TORCHINDUCTOR_COMPILE_THREADS"


def gpu_machine(env: Mapping[str, str] | None = None) -> bool:
    """An NVIDIA device node this process may use (decided without importing torch)."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def likely_graph_device(env: Mapping[str, str] | None = None) -> str:
    """The device this process's graphs will most likely run on, guessed before any exists:
    ``cuda:LOCAL_RANK`` (torchrun's convention; 0 outside a job) on a GPU machine, else
    ``cpu``. A wrong guess costs only the work it was meant to move earlier."""
    env = os.environ if env is None else env
    if not gpu_machine(env):
        return "cpu"
    rank = env.get("LOCAL_RANK", "").strip()
    return f"cuda:{int(rank)}" if rank.isdigit() and len(rank) <= 3 else "cuda:0"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def ranks_on_host(env: Mapping[str, str] | None = None) -> int:
    """``LOCAL_WORLD_SIZE`` (torchrun's ranks per host), 1 when unset or not a number."""
    env = os.environ if env is None else env
    try:
        return max(1, int(env.get("LOCAL_WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


def compile_threads(workers: int, ranks: int, cores: int) -> int:
    """Inductor compile threads per worker under the rule (at least 1)."""
    return max(1, cores // max(1, ranks * max(1, workers)))


def oversubscribed(workers: int, ranks: int, cores: int) -> bool:
    """More workers on the host than cores, even at one compile thread each."""
    return ranks * workers > cores


_warned = False


def worker_env(workers: int, env: Mapping[str, str] | None = None, cores: int | None = None) -> dict[str, str]:
    """What the rule adds to a worker's environment: ``TORCHINDUCTOR_COMPILE_THREADS``
    unless ``env`` sets it. Warns once when ``workers`` alone oversubscribes the host."""
    global _warned
    env = os.environ if env is None else env
    cores = usable_cores() if cores is None else cores
    ranks = ranks_on_host(env)
    if oversubscribed(workers, ranks, cores) and not _warned:
        _warned = True
        warnings.warn(
            f"sandbox: {ranks} rank(s) on this host x {workers} worker(s) each = {ranks * workers} compile "
            f"processes for {cores} core(s); compiles will contend for the CPU. Lower `workers` "
            f"(SANDBOX_WORKERS) to {max(1, cores // ranks)} or less.",
            RuntimeWarning,
            stacklevel=3,
        )
    if env.get(COMPILE_THREADS_ENV, "").strip():
        return {}
    return {COMPILE_THREADS_ENV: str(compile_threads(workers, ranks, cores))}


def user_threads(env: Mapping[str, str] | None = None) -> bool:
    """The user chose Inductor's compile threads (``TORCHINDUCTOR_COMPILE_THREADS``): the rule stays out."""
    env = os.environ if env is None else env
    return bool(env.get(COMPILE_THREADS_ENV, "").strip())


def job_threads(
    workers: int, env: Mapping[str, str] | None = None, cores: int | None = None, shared: bool = False
) -> int | None:
    """The share each job tells its worker: cores // (ranks x workers), or cores // workers for a
    pool the host's ranks share (``shared``); None where the user chose the threads."""
    env = os.environ if env is None else env
    if user_threads(env):
        return None
    cores = usable_cores() if cores is None else cores
    return compile_threads(workers, 1 if shared else ranks_on_host(env), cores)


def service_worker_env(workers: int, env: Mapping[str, str] | None = None, cores: int | None = None) -> dict[str, str]:
    """What the rule adds to the environment of a shared pool's worker: the host's cores
    split between the service's workers only."""
    threads = job_threads(workers, env, cores, shared=True)
    return {} if threads is None else {COMPILE_THREADS_ENV: str(threads)}
