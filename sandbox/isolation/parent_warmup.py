"""This process's own share of loading a worker's result, paid while it waits for the worker.

Kept apart from the isolated compile itself: the runtime holds one ``ParentWarmUp`` per
process from the start, and importing it must not import dynamo (the runtime loads at
``import torch`` when the workers are pre-started).
"""

from __future__ import annotations

import logging
import threading
import time

from sandbox.torch_adapter import triton, warmup

log = logging.getLogger("sandbox")
PROBE_WAIT_S = 300.0  # how long the background probe waits for the worker's recorded answers

__all__ = ["ParentWarmUp"]


class ParentWarmUp:
    """This process's own share of loading a worker's result, paid in the background while
    it waits for the worker's compile rather than inside the load: for a CPU graph,
    Inductor's CPU-ISA probe (the worker builds the probe programs; Inductor's file lock
    makes this process reuse them; nothing waits for it); for a GPU graph, Inductor's
    ptxas choice and Triton's driver (``triton.prepare_gpu_load``), which the load then
    waits for (``join``), so that the two never start the driver side by side."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._gpu: threading.Thread | None = None
        self.gpu_result: dict | None = None

    def start(self, cpu: bool = True, gpu: bool = False) -> None:
        with self._lock:
            if cpu and self._probe is None:
                self._probe = threading.Thread(target=self._run_probe, name="sandbox-isa-probe", daemon=True)
                self._probe.start()
            if gpu and self._gpu is None:
                self._gpu = threading.Thread(target=self._run_gpu, name="sandbox-gpu-load-prep", daemon=True)
                self._gpu.start()

    def started(self) -> dict[str, bool]:
        """Which of the two has been started in this process."""
        return {"cpu_isa_probe": self._probe is not None, "gpu_load": self._gpu is not None}

    def join(self, timeout: float = 120.0) -> None:
        thread = self._gpu
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)

    @staticmethod
    def _run_probe() -> None:
        try:
            # The worker records each check's answer before it compiles a CPU graph: taken from
            # there, the probe starts no process here. Without a record by the time the result
            # is back, the load probes itself.
            deadline = time.monotonic() + PROBE_WAIT_S
            while not warmup.isa_record_ready():
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)
            warmup.probe_cpu_isa()
        except Exception:  # noqa: BLE001 - the load runs the probe then
            log.debug("sandbox: background ISA probe failed", exc_info=True)

    def _run_gpu(self) -> None:
        try:
            self.gpu_result = triton.prepare_gpu_load()
        except Exception:  # noqa: BLE001 - the load starts the driver then
            log.debug("sandbox: background GPU load preparation failed", exc_info=True)
