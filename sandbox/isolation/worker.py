"""The child half of an isolated compile.

Started as ``python -m sandbox.isolation.worker`` (never through multiprocessing,
so the user's ``__main__`` is not re-imported and no user code runs here). It pays
Inductor's one-time costs before it says it is ready, then compiles one graph at a
time: restore the parent's identity, compile with Inductor's own in-process
scheme, send back the pickled result and what happened inside.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import os
import select
import sys
import threading
import time
import traceback
from typing import Any

from sandbox import env
from sandbox.isolation import protocol
from sandbox.isolation.processes import kill_descendants, wait_gone
from sandbox.isolation.sizing import gpu_machine


def _watch_parent(lifeline_fd: int, parent_pid: int, log_path: str | None = None) -> None:
    """Exit the moment the parent is gone: its end of the lifeline closes when it
    dies, even by SIGKILL; the parent-pid check covers re-parenting as well."""
    while True:
        ready, _, _ = select.select([lifeline_fd], [], [], 1.0)
        if ready:
            try:
                data = os.read(lifeline_fd, 1)
            except OSError:
                data = b""
            if not data:
                _remove_log(log_path)
                os._exit(0)
        if os.getppid() != parent_pid:
            _remove_log(log_path)
            os._exit(0)


_remove_lock = threading.Lock()


def _remove_log(log_path: str | None) -> None:
    """The parent died without cleaning up (SIGKILL): nobody reads this worker's log any more.
    Remove it, and its folder with the last worker's log (rmdir fails while another is there).
    Under a lock: the lifeline's thread and the job loop may both get here, and whichever exits
    first must not cut the other's removal short between the two steps."""
    if not log_path:
        return
    with _remove_lock:
        for remove, path in ((os.unlink, log_path), (os.rmdir, os.path.dirname(log_path))):
            try:
                remove(path)
            except OSError:
                pass


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class Worker:
    def __init__(self, in_fd: int, out_fd: int) -> None:
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.cache_clock: int | None = None
        self.jobs = 0
        self.gpu = False  # a usable CUDA device (set by start)
        self.gpu_warm = False  # warm_up_gpu ran
        self.repaired: list[str] = []  # C++ builds cut short, removed in the warm-up
        self.isa_probed = False  # probe_cpu_isa ran for a CPU graph
        self.gpu_thread: threading.Thread | None = None  # warm_up_gpu asked for early (warm_gpu)
        self.early_gpu_phases: dict[str, float] = {}
        self.warm: tuple[float, dict[str, float], str] = (time.time(), {}, "normal")

    def start(self, started: float, priority: str = "normal", driver: _DriverInit | None = None) -> None:
        priority = _enter_priority(priority)
        from sandbox.torch_adapter import warmup  # imports torch: timed as the first warm-up phase

        warmup.settle_environment()  # before the ISA probe's and the compile pool's threads start g++
        t0 = time.time()
        phases = {"import_torch_s": t0 - started}
        self.warm = (t0, phases, priority)
        # On a GPU machine, where the warm-up does them (SANDBOX_WORKER_GPU_WARMUP=start): CUDA
        # and Triton's compile pool first (the pool's own processes take seconds to come up,
        # and the first graph's kernels compile in parallel only once it is ready). The CPU
        # instruction-set probe, needed only for CPU kernels, is left on a GPU machine to the
        # first compile that needs it, as in-process Inductor does: beside the first GPU
        # compile it slows that compile (docs/decisions/gpu-worker-warm-up.md). On a cache dir
        # where a worker probed before, the probe is cheap and left to the first compile that
        # needs it too: in a run of cache hits it would only compete with the user's process
        # (docs/decisions/cpu-isa-probe.md).
        t = time.time()
        self.gpu = warmup.gpu_available()  # waits for the driver's initialisation where it still runs
        phases["cuda_available_s"] = time.time() - t
        if driver is not None:
            phases.update(driver.phases(started))
        if self.gpu and _gpu_warm_up_at() == "start":
            self.warm_up_gpu(phases)
        try:
            probe = not self.gpu and not warmup.cpu_isa_probe_cached()
            phases.update(warmup.warm_up_inductor(probe_isa=probe))
        except Exception as e:  # noqa: BLE001 - the first compile then pays it instead
            print(f"[sandbox worker {os.getpid()}] warm-up failed: {e!r}", file=sys.stderr, flush=True)
        self.repaired = self.repair_interrupted_builds()

    @staticmethod
    def repair_interrupted_builds() -> list[str]:
        """Remove what C++ builds a killed compile cut short left behind (caches.repair_interrupted_builds):
        a partial kernel library would crash every load of its graph, a partial precompiled header
        slow every later C++ kernel on the host. The parent is told in the ready message."""
        from sandbox.torch_adapter import caches  # torch is imported by start() by now

        try:
            return caches.repair_interrupted_builds()
        except Exception as e:  # noqa: BLE001 - the builds stay as they are, as before
            print(f"[sandbox worker {os.getpid()}] interrupted build check failed: {e!r}", file=sys.stderr, flush=True)
            return []

    def warm_up_gpu(self, phases: dict[str, float]) -> None:
        """CUDA, Triton and Triton's compile pool (triton.warm_up_gpu), once."""
        from sandbox.torch_adapter import triton  # torch is imported by start() by now

        if self.gpu_warm:
            return
        self.gpu_warm = True
        try:
            phases.update(triton.warm_up_gpu())
        except Exception as e:  # noqa: BLE001 - the first GPU compile then pays it instead
            print(f"[sandbox worker {os.getpid()}] GPU warm-up failed: {e!r}", file=sys.stderr, flush=True)

    def ready(self, started: float) -> None:
        """Tell the parent this worker is ready (after ``start``)."""
        t0, phases, priority = self.warm
        protocol.send(
            self.out_fd,
            {
                "op": "ready",
                "pid": os.getpid(),
                "started": started,
                "warm_up_s": time.time() - t0,
                "phases": phases,
                "warm_up_priority": priority,
                "repaired_builds": self.repaired,
                "ready_at": time.time(),
                "rss_bytes": _rss_bytes(),
            },
        )

    def serve(self) -> bool:
        """Compile jobs until told to exit (True) or the job pipe closes (False)."""
        while True:
            try:
                msg = protocol.recv(self.in_fd)
            except protocol.ChannelClosed:
                return False
            op = msg.get("op")
            if op == "exit":
                return True
            if op == "warm_gpu":
                self.warm_up_gpu_soon()
            if op == "compile":
                reply = self.compile(msg)
                protocol.send(self.out_fd, reply)

    def warm_up_gpu_soon(self) -> None:
        """CUDA, Triton and the compile pool on a thread now (the parent's ``sandbox.warmup()``
        on a GPU machine), so that the first GPU job finds them started; that job waits for the
        thread if it is still running."""
        if not self.gpu or self.gpu_warm or self.gpu_thread is not None:
            return
        self.gpu_thread = threading.Thread(
            target=_at_priority,
            args=(self.warm[2], self.warm_up_gpu, self.early_gpu_phases),
            name="sandbox-gpu-warm-up-early",
            daemon=True,
        )
        self.early_gpu_phases["gpu_warm_up_asked_at"] = time.time()
        self.gpu_thread.start()

    def compile(self, msg: dict[str, Any]) -> dict[str, Any]:
        # torch is imported by the warm-up, timed there; this module itself imports no torch.
        from sandbox.isolation import torch_tools
        from sandbox.torch_adapter import caches, dynamo, events, triton, warmup, wire

        received = time.time()
        for entry in reversed(msg.get("sys_path", [])):
            if entry not in sys.path:
                sys.path.insert(1, entry)
        cleared = False
        if self.cache_clock is not None and msg["cache_clock"] != self.cache_clock:
            caches.clear_inductor_caches()
            cleared = True
        self.cache_clock = msg["cache_clock"]
        self.jobs += 1
        print(
            f"[sandbox worker {os.getpid()}] job {self.jobs}: compiling graph {msg.get('compile_id')}"
            + (" (cleared in-memory caches first)" if cleared else ""),
            file=sys.stderr,
            flush=True,
        )
        if msg.get("compile_threads"):
            # This worker's share of the host's cores now (the pool may have grown since it
            # started): before the compile pool is used, which restarts at the new size.
            if triton.set_compile_threads(msg["compile_threads"]):
                print(
                    f"[sandbox worker {os.getpid()}] compile pool restarted with {msg['compile_threads']} threads",
                    file=sys.stderr,
                    flush=True,
                )
        gpu_phases: dict[str, float] = {}
        gpu_job = gpu_graph(self.gpu, msg)
        if gpu_job and self.gpu_thread is not None:  # started by warm_gpu: the job needs it finished
            t = time.time()
            self.gpu_thread.join()
            gpu_phases.update(self.early_gpu_phases)
            gpu_phases["gpu_warm_up_waited_at_job_s"] = time.time() - t
            self.early_gpu_phases = {}
        if gpu_job and not self.gpu_warm:  # CUDA, Triton and the compile pool at the first GPU job (_gpu_warm_up_at)
            t = time.time()
            _at_priority(self.warm[2], self.warm_up_gpu, gpu_phases)
            gpu_phases["gpu_warm_up_at_job_s"] = time.time() - t
        if gpu_job:
            triton.launch_compile_pool()  # GPU: started at warm-up already, unless SANDBOX_WORKER_POOL=job
        if cpu_graph(msg) and not self.isa_probed:
            # Inductor's own probe would check one candidate after another; this one checks them
            # side by side and records each answer in the cache dir, so the ranks that load this
            # graph take the answers instead of probing again.
            self.isa_probed = True
            try:
                warmup.probe_cpu_isa()
            except Exception:  # noqa: BLE001 - the compile then runs Inductor's own probe
                pass
        try:
            wire.load_custom_op_sources(msg.get("imports", []), msg.get("libraries", []))
            events.set_chromium_logger_id(msg.get("chromium_id"))
            before = dynamo.counters_snapshot()
            metrics_before = events.inductor_metrics_snapshot()
            times_before = events.time_metrics_snapshot()
            modules_before = triton.loaded_module_count()
            start = time.time()
            with (
                torch_tools.capture(msg.get("torch_tools")) as tools,  # TORCH_TRACE, TORCH_LOGS, debug folder
                triton.capture_autotune_choices() as autotune_choices,
                events.capture_chromium_events() as timed_events,
                # compile_context first: the worker's own outer event (worker_compile)
                # carries the parent's compile id too, not only Inductor's events inside it.
                dynamo.compile_context(msg.get("compile_id")),
                events.capture_compilation_metrics() as compilation_metrics,
            ):
                output = _profiled(self.jobs, wire.run_in_child, msg["payload"], msg.get("env", {}))
            end = time.time()
            return {
                "op": "result",
                "ok": True,
                "output": output,
                "pid": os.getpid(),
                "received": received,
                "compile_start": start,
                "compile_end": end,
                "sent": time.time(),
                "caches_cleared": cleared,
                "counters": dynamo.counter_deltas(before, dynamo.counters_snapshot()),
                "events": timed_events,
                "metrics": events.inductor_metrics_delta(metrics_before, events.inductor_metrics_snapshot()),
                "time_metrics": events.time_metrics_delta(times_before, events.time_metrics_snapshot()),
                "compilation_metrics": events.jsonable(compilation_metrics),
                "chromium_id": events.chromium_logger_id(),
                "rss_bytes": _rss_bytes(),
                "job_index": self.jobs,
                "gpu_warm_up_phases": gpu_phases or None,
                "torch_tools": tools.reply(),
                "triton_kernels": _triton_kernels(triton, modules_before),
                "autotune_choices": autotune_choices,
            }
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            tools = locals().get("tools")  # what TORCH_LOGS / TORCH_TRACE saw up to the failure
            return {
                "op": "result",
                "ok": False,
                "pid": os.getpid(),
                "torch_tools": tools.reply() if tools is not None else None,
                "error_type": f"{type(e).__module__}.{type(e).__qualname__}",
                # An ordinary exception leaves this process as in-process Inductor is left after it.
                "reusable": isinstance(e, Exception) and not isinstance(e, (MemoryError, SystemError, RecursionError)),
                "message": str(e)[:4000],
                "traceback": traceback.format_exc()[-8000:],
                "received": received,
                "sent": time.time(),
            }


def _profiled(job: int, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, under cProfile when SANDBOX_WORKER_CPROFILE names a folder (a
    diagnostic: where a compile's time goes inside the worker); the stats go to
    ``worker-PID-job-N.prof`` there, readable with ``python -m pstats``."""
    folder = env.get("SANDBOX_WORKER_CPROFILE")
    if not folder:
        return fn(*args)
    import cProfile  # only when profiling

    prof = cProfile.Profile()
    try:
        return prof.runcall(fn, *args)
    finally:
        try:
            os.makedirs(folder, exist_ok=True)
            prof.dump_stats(os.path.join(folder, f"worker-{os.getpid()}-job-{job}.prof"))
        except OSError as e:
            print(f"[sandbox worker {os.getpid()}] could not write the profile: {e!r}", file=sys.stderr, flush=True)


def _triton_kernels(triton: Any, modules_before: int) -> dict[str, Any]:
    """Each Triton kernel of the module this job loaded, as compiled here: candidate
    configs, registers, spills, shared memory, compile time. (The autotuner objects
    themselves do not travel: the parent rebuilds them from Triton's cache.)"""
    try:
        kernels = triton.triton_kernels(triton.modules_loaded_since(modules_before))
        return {name: triton.describe_triton_kernel(k) for name, k in kernels.items()}
    except Exception as e:  # noqa: BLE001 - a report detail never fails a compile
        print(f"[sandbox worker {os.getpid()}] could not describe Triton kernels: {e}", file=sys.stderr, flush=True)
        return {}


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    parser = argparse.ArgumentParser(prog="python -m sandbox.isolation.worker")
    parser.add_argument("--in-fd", type=int, required=True)
    parser.add_argument("--out-fd", type=int, required=True)
    parser.add_argument("--lifeline-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--log-path", default=None, help="this worker's log (its stdout), removed if orphaned")
    args = parser.parse_args(argv)
    if os.getppid() != args.parent_pid:
        _remove_log(args.log_path)
        return 0
    os.environ["SANDBOX_IN_WORKER"] = "1"
    faulthandler.enable()  # a crash leaves its Python stack in the worker's log
    threading.Thread(target=_watch_parent, args=(args.lifeline_fd, args.parent_pid, args.log_path), daemon=True).start()
    worker = Worker(args.in_fd, args.out_fd)
    driver = _DriverInit.start()
    # Warm up on a thread of the idle scheduling class (CPU machines): it uses only CPU
    # time that nobody else wants, so a pre-started worker never slows the training
    # process (whose OpenMP threads need every core), and gets the machine to itself
    # once the parent blocks on its first compile. Compiles run on this (normal) thread.
    warm = threading.Thread(target=worker.start, args=(started, _warm_up_priority(), driver), name="sandbox-warm-up")
    warm.start()
    warm.join()
    worker.ready(started)
    if not worker.serve():  # the job pipe closed: the parent is gone (it closes it only after killing us)
        _remove_log(args.log_path)
    _leave()
    return 0


def _leave() -> None:
    """Exit at once, when the parent says so or its end closes: a torch interpreter's ordinary
    teardown is slow, and the user's process waits for it at its own exit
    (docs/decisions/worker-exit.md). Nothing is lost: every job's result went back and its
    cache entries were written during the job. Inductor's compile pool, where this worker
    started one, goes first, and is gone (its GPU contexts freed) before this worker is: the
    user's process, which waits for the worker, pays for the teardown, not the next process on
    the machine."""
    wait_gone(kill_descendants(os.getpid()))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def gpu_graph(gpu_machine: bool, job: dict[str, Any]) -> bool:
    """Whether this job needs CUDA, Triton and Triton's compile pool in the worker: on a GPU
    machine, a graph with inputs on a GPU, or one whose parent did not say (as before). A CPU
    graph on a GPU machine (CPU ranks, a CPU part of the model) compiles C++ kernels on
    Inductor's thread pool: a CUDA context and a compile pool of one process per core would
    only cost it memory and CPU time (docs/decisions/gpu-worker-warm-up.md)."""
    return gpu_machine and _has_inputs_on(job, "gpu")


def cpu_graph(job: dict[str, Any]) -> bool:
    """Whether the job's graph has inputs on the CPU (its kernels are C++)."""
    return _has_inputs_on(job, "cpu")


def _has_inputs_on(job: dict[str, Any], device: str) -> bool:
    """The job's ``devices`` as its parent sent them; a parent that did not say is taken to have
    inputs on both, as before."""
    devices = job.get("devices")
    return not isinstance(devices, dict) or bool(devices.get(device, True))


def _gpu_warm_up_at() -> str:
    """When a GPU worker initialises CUDA, imports Triton and starts Triton's compile pool on its
    own: at its first GPU job (``job``, and ``warmup``, the default, unless ``sandbox.warmup()``
    asks earlier) or in its warm-up, before it says it is ready (SANDBOX_WORKER_GPU_WARMUP=start).

    Why at the first job: the workers start early (at ``import torch``, sandbox/prestart.py),
    so on a warm cache their warm-up runs beside the program's first step, which loads its
    cached kernels, and slows that step. On a cold cache nothing is lost: the first job comes
    seconds after the worker's start, and in-process Inductor starts its compile pool inside
    its first compile as well. A program whose graphs all hit the caches thus leaves the GPU
    alone in the worker (docs/decisions/gpu-worker-warm-up.md)."""
    # warmup (the default) is job here; sandbox.warmup() then asks for it early (the warm_gpu frame).
    return "start" if env.get("SANDBOX_WORKER_GPU_WARMUP").lower() == "start" else "job"


def _at_priority(priority: str, fn: Any, *args: Any) -> None:
    """``fn(*args)`` on a thread at the warm-up's priority (the processes it starts, Triton's
    compile pool, inherit it), waited for."""

    def run() -> None:
        _enter_priority(priority)
        fn(*args)

    t = threading.Thread(target=run, name="sandbox-gpu-warm-up")
    t.start()
    t.join()


class _DriverInit:
    """The CUDA driver's own initialisation (``cuInit``), started on a thread through
    ctypes before the worker imports torch: torch's first CUDA call (``torch.cuda.is_available``,
    in the worker's warm-up) would run it after the import, and on some machines it is slow
    (docs/decisions/early-cuda-driver-init.md). ctypes releases the GIL for the call, so the
    two overlap; torch's own initialisation then finds the driver up (or waits for this call
    to finish: the driver serialises it) and does the rest as before. Only where this process
    may use an NVIDIA device (``sizing.gpu_machine``, no torch imported); a missing or
    failing driver leaves everything to torch, which reports it as it would."""

    def __init__(self) -> None:
        self.begin = time.time()
        self.end: float | None = None
        self.result: int | None = None
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="sandbox-cuda-driver-init", daemon=True)

    @classmethod
    def start(cls) -> _DriverInit | None:
        if env.get("SANDBOX_WORKER_EARLY_CUDA") == "0" or not gpu_machine():
            return None
        init = cls()
        init.thread.start()
        return init

    def _run(self) -> None:
        try:
            self.result = int(ctypes.CDLL("libcuda.so.1").cuInit(0))
        except Exception as e:  # noqa: BLE001 - torch initialises the driver itself then
            self.error = repr(e)
        finally:
            self.end = time.time()

    def phases(self, started: float) -> dict[str, float]:
        """Seconds: the driver's initialisation, and where it ended counted from the
        worker's start (beside ``import_torch_s``, how much of it the import hid)."""
        if self.end is None:
            return {}
        out = {"cuda_driver_init_s": self.end - self.begin, "cuda_driver_ready_at_s": self.end - started}
        if self.result or self.error:
            print(
                f"[sandbox worker {os.getpid()}] cuInit beside the imports: "
                + (self.error or f"CUDA error {self.result}")
                + " (torch initialises the driver itself)",
                file=sys.stderr,
                flush=True,
            )
        return out


def _warm_up_priority() -> str:
    """``idle`` on a CPU machine, ``nice`` on a GPU machine, unless SANDBOX_WORKER_WARMUP
    says otherwise (idle | nice | normal). On a GPU machine the warm-up starts Triton's
    compile pool, whose processes inherit the warm-up thread's class: the idle class could
    starve them for good while the training process keeps the CPU busy, a positive nice
    value only lets the training process go first (while the user's process loads cached
    kernels, the pool's interpreters starting up would otherwise compete with it;
    docs/decisions/gpu-worker-warm-up.md)."""
    chosen = env.get("SANDBOX_WORKER_WARMUP").lower()
    if chosen:
        return chosen
    return "nice" if gpu_machine() else "idle"


WARM_UP_NICE = 10


def _enter_priority(priority: str) -> str:
    """Put the calling thread at ``priority`` (idle | nice | normal); returns the one it got
    (``normal`` where the system refused)."""
    if priority == "idle":
        return "idle" if _enter_idle_class() else "normal"
    if priority == "nice":
        return "nice" if _enter_nice(WARM_UP_NICE) else "normal"
    return "normal"


def _enter_nice(value: int) -> bool:
    """A nice value for the calling thread (per thread on Linux); processes it starts inherit it."""
    try:
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), max(current, value))
        return True
    except (AttributeError, OSError):
        return False


def _enter_idle_class() -> bool:
    """SCHED_IDLE for the calling thread (Linux); children it spawns inherit it."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined]
        return True
    except (AttributeError, OSError):
        return False


if __name__ == "__main__":
    sys.exit(main())
