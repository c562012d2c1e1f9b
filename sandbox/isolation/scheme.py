"""The parent half of one isolated compile.

Serialize the graph (widened pickler), hand it to a pre-started worker, wait with a
time and memory limit, load the result. Anything that cannot cross or comes back
broken follows the options' explicit policies, and is written into the report.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from sandbox.isolation import single_flight, torch_tools
from sandbox.isolation.parent_warmup import ParentWarmUp
from sandbox.isolation.pool import Pool, WorkerFailure
from sandbox.options import Options
from sandbox.record.builder import ReportBuilder
from sandbox.record.report import IN_PROCESS, ISOLATED, Failure
from sandbox.torch_adapter import caches, dynamo, events, ranks, remote_cache, seam, warmup, wire

log = logging.getLogger("sandbox")


class UnpicklableGraphError(seam.passthrough_error_base()):  # a RuntimeError
    """``unpicklable="error"`` and a graph could not cross the process boundary."""


class SandboxCompileError(seam.passthrough_error_base()):  # a RuntimeError
    """``on_failure="raise"`` and a worker failed; the message says which graph and how."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report


class EagerFallback(Exception):
    """Internal: the graph runs uncompiled (``on_failure="eager"``)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def describe_failure(report: Any) -> str:
    f = report.failure
    how = f.kind
    if f.signal:
        how += f", signal {f.signal}"
    if f.exit_code is not None:
        how += f", exit code {f.exit_code}"
    lines = [
        f"sandbox: compiling {report.graph_kind} graph {report.compile_id} at {report.where} failed in worker "
        f"{f.worker_pid} ({how}): {f.message}",
    ]
    if f.log_tail:
        lines.append("worker's last log lines:")
        lines.extend("  " + line for line in f.log_tail[-20:])
    return "\n".join(lines)


def input_devices(example_inputs: Any) -> tuple[bool, bool]:
    """Whether the graph has inputs on the CPU, and on a GPU (CUDA); a graph with no
    tensor inputs counts as a CPU graph."""
    cpu = gpu = False
    for x in example_inputs:
        device = getattr(x, "device", None)
        kind = getattr(device, "type", None)
        if kind == "cpu":
            cpu = True
        elif kind == "cuda":
            gpu = True
    return (cpu or not gpu), gpu


class IsolatedCompile:
    """What ``fx_codegen_and_compile`` runs while a sandbox compile is active."""

    def __init__(
        self,
        options: Options,
        builder: ReportBuilder,
        get_pool: Callable[[Options], Pool],
        cache_clock: caches.CacheClock,
        warm_parent: ParentWarmUp | None = None,
        leases: Any = None,
    ) -> None:
        self.warm_parent = warm_parent  # a ParentWarmUp: start(cpu=, gpu=) and join()
        self.leases = leases  # single_flight.Leases: one compile per graph across hosts, when on
        self.broken: str | None = None  # why the host's compile service was not used for this graph
        self.flight: dict[str, Any] = {}  # the job's "flight": its FX graph cache key, or why it has none
        self.devices: tuple[bool, bool] = (True, False)  # the graph's inputs: (on the CPU, on a GPU)
        self.options = options
        self.builder = builder
        self.get_pool = get_pool
        self.cache_clock = cache_clock
        self.called = False
        # Set by the backend in async mode: makes a ``DeferredGraph`` instead of waiting.
        self.defer: Any = None
        self.deferred: Any = None

    def codegen_and_compile(
        self, gm: Any, example_inputs: Any, inputs_to_check: Any, graph_kwargs: dict, region: str | None
    ) -> Any:
        self.called = True
        self.devices = input_devices(example_inputs)
        b = self.builder
        b.graph_size(gm, example_inputs)
        flight = self.flight = self._flight(gm, example_inputs)
        t = time.time()
        try:
            payload = wire.serialize_graph(gm, example_inputs, inputs_to_check, graph_kwargs)
        except wire.Unpicklable as e:
            b.stage("serialize", t, time.time())
            reason = f"graph cannot cross the process boundary: {e}"
            if self.options.unpicklable == "error":
                b.fail(Failure("error", reason), fallback=None)
                raise UnpicklableGraphError(
                    f"sandbox: {b.report.graph_kind} graph {b.report.compile_id} at {b.report.where}: {reason} "
                    f"(unpicklable='error'; set unpicklable='in_process' to compile such graphs in this process)"
                ) from e
            b.set_outcome(IN_PROCESS, reason=reason)
            t = time.time()
            out = seam.compile_in_process(gm, example_inputs, inputs_to_check, graph_kwargs, region)
            b.stage("compile_in_process", t, time.time())
            return out
        b.stage("serialize", t, time.time())

        job = {
            "op": "compile",
            "payload": payload.data,
            "imports": payload.imports,
            "libraries": payload.libraries,
            "env": caches.cache_env(),
            "cache_clock": self.cache_clock.value,
            "compile_id": b.report.compile_id,
            "chromium_id": events.chromium_logger_id(),
            "sys_path": [p for p in sys.path if p],
            "torch_tools": torch_tools.request(),
            "flight": flight,
            # The worker starts CUDA and Triton's compile pool for a GPU graph only (worker.gpu_graph).
            "devices": {"cpu": self.devices[0], "gpu": self.devices[1]},
        }
        if self.defer is not None:
            # Async mode (or forward and backward side by side): the worker compiles while
            # this returns at once; the graph's stand-in switches to the result later.
            self.deferred = self.defer(self, gm, example_inputs, job, payload, graph_kwargs, region)
            return self.deferred
        t_pool = time.time()
        release = dynamo.compile_lock_released() if self.options.workers > 1 else contextlib.nullcontext()
        try:
            with release, torch_tools.Regions(b.report.compile_id) as regions:
                result = self.run_job(job, regions.sent)
        except WorkerFailure as wf:
            b.stage("wait_for_worker", t_pool, time.time())
            b.single_flight(single_flight.describe(flight, getattr(wf, "single_flight", None), self.broken, self.who()))
            torch_tools.replay(wf.torch_tools, b.report.compile_id)
            return self._on_failure(wf.failure, gm, example_inputs, inputs_to_check, graph_kwargs, region)
        return self.complete(result, payload, region)

    def run_job(self, job: dict[str, Any], on_sent: Any = None, warm_parent: bool = True) -> Any:
        """Hand the job to a worker and wait for its reply (raises ``WorkerFailure``)."""
        pool = self.get_pool(self.options)
        if warm_parent and self.warm_parent is not None:
            cpu, gpu = self.devices
            self.warm_parent.start(cpu=cpu, gpu=gpu)
        self.broken = getattr(pool, "broken", None)  # a compile service this process could not use

        def run() -> Any:
            return pool.run(job, self.options.timeout_s, self.options.memory_limit_mb, on_sent=on_sent)

        flight = job.get("flight") or {}
        if self.leases is not None and flight.get("key") and flight.get("lease"):
            return self.leases.run(flight["key"], run, self.options.timeout_s)
        return run()

    def who(self) -> dict[str, Any]:
        """This process, as a report names the process that compiled a graph."""
        r = self.builder.report
        return {"pid": os.getpid(), "rank": r.rank, "local_rank": r.local_rank, "host": socket.gethostname()}

    def _flight(self, gm: Any, example_inputs: Any) -> dict[str, Any]:
        """What sharing this graph's compile needs: its FX graph cache key (taken here, on the
        thread Inductor computed it on), whether the cross-host lease is on for it, and what
        may make it differ by rank."""
        key, why_not = caches.take_fx_key(gm)
        flight: dict[str, Any] = {"key": key, "why_not": why_not}
        flight["lease"] = self.leases is not None and single_flight.wanted(remote_cache.fx_graph_remote_cache_on())
        if (self.builder.report.world_size or 1) > 1:
            flight["rank_specific"] = ranks.rank_dependence(gm, example_inputs)
        return flight

    def complete(self, result: Any, payload: Any, region: str | None) -> Any:
        """The worker's reply into the report, its compiled graph loaded in this process."""
        b = self.builder
        reply = result.reply
        info = reply.get("single_flight")
        b.single_flight(single_flight.describe(self.flight, info, self.broken, self.who()))
        if (info or {}).get("role") == "waited":
            # Another process's compile served this graph: the whole time was a wait; its
            # worker's stages belong to that process's report.
            b.stage("wait_for_worker", result.sent_at - result.waited_s, result.received_at)
        else:
            b.stage("wait_for_worker", result.sent_at - result.waited_s, result.sent_at)
            b.stage("send", result.sent_at, reply["received"])
            b.stage("compile_in_worker", reply["compile_start"], reply["compile_end"], origin="worker")
            b.worker_events(reply.get("events", []), parent="compile_in_worker")
            b.stage("transfer", reply["compile_end"], result.received_at)
        b.worker_reply(reply)
        t = time.time()
        if self.warm_parent is not None:
            self.warm_parent.join()  # a GPU graph's imports, started while the worker compiled
        if self.devices[0]:
            try:  # the worker recorded the probe's answers by now: taken, no probe process starts here
                warmup.probe_cpu_isa()
            except Exception:  # noqa: BLE001 - Inductor's load then runs its own probe
                log.debug("sandbox: ISA probe before the load failed", exc_info=True)
        with torch_tools.Regions(b.report.compile_id, "load"):
            out = wire.load_output(reply["output"], payload.constants, region)
        dynamo.apply_counter_deltas(reply.get("counters", {}))
        events.apply_inductor_metrics(reply.get("metrics", {}))
        events.apply_time_metrics(reply.get("time_metrics", {}))
        events.apply_compilation_metrics(reply.get("compilation_metrics", {}))
        torch_tools.replay(reply.get("torch_tools"), b.report.compile_id)
        b.stage("load", t, time.time())
        b.set_outcome(ISOLATED, worker_pid=result.worker_pid)
        return out

    def _on_failure(
        self,
        failure: Failure,
        gm: Any,
        example_inputs: Any,
        inputs_to_check: Any,
        graph_kwargs: dict,
        region: str | None,
    ) -> Any:
        policy = self.options.on_failure
        b = self.builder
        if policy == "raise":
            b.fail(failure, fallback=None)
            raise SandboxCompileError(describe_failure(b.report), b.report)
        if policy == "in_process":
            b.fail(failure, fallback="in_process")
            t = time.time()
            out = seam.compile_in_process(gm, example_inputs, inputs_to_check, graph_kwargs, region)
            b.stage("compile_in_process", t, time.time())
            return out
        b.fail(failure, fallback="eager")
        raise EagerFallback(failure)


__all__ = ["IsolatedCompile", "SandboxCompileError", "UnpicklableGraphError", "EagerFallback"]
