"""A graph that runs as is while a worker compiles it: async mode's stand-in.

In async mode (``options={"async": True}`` / ``SANDBOX_ASYNC=1``) the sandbox's
``fx_codegen_and_compile`` does not wait for the worker: it hands Inductor a
``DeferredGraph``, which runs the FX graph eagerly from its first call while the job
runs on a background thread. Once the worker's result is back, that thread loads it in
this process (the CPU-ISA probe only for a graph with CPU inputs), passes on the Triton
bundle and the FX cache key and writes the FX graph cache entry (its guard expression
was computed at compile time, while the ShapeEnv was live), so the caches hold the real
compiled graph; the first call after that swaps the compiled graph in and runs
``post_compile`` (``report.switched_at``). With several workers, blocking mode uses the same
stand-in with ``wait=True``: forward and backward compile side by side in two workers
and each is waited for at its first call.

Where the stand-in must be careful (each one a bug it would otherwise have):
- AOTAutograd passes a list the callee may consume: the stand-in copies it and clears
  it, and ``_boxed_call`` lives on the instance, because the backward callable is
  wrapped by a ``disable()`` that copies only the instance ``__dict__``.
- Thread count: while a compile runs beside the step, the eager call runs with one
  thread less, set and restored inside the call (changing it outside compiled code
  would change dynamo's global-state guard and force a recompile).
- Ranks of one job switch at the same call: while a graph waits, each call agrees on
  the switch across ranks (an all-reduce of min(state)), so every rank switches - or
  gives up - at the same step.
- With cudagraphs, forward and backward switch together: the forward switches only once
  its backward is ready too, and the backward runs compiled exactly when its forward did.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from sandbox.isolation import single_flight
from sandbox.isolation.pool import WorkerFailure
from sandbox.isolation.scheme import SandboxCompileError, describe_failure
from sandbox.record.report import ISOLATED, Failure
from sandbox.torch_adapter import seam, warmup

log = logging.getLogger("sandbox")

ASYNC = "async"  # run eagerly until the compiled graph is ready
WAIT = "wait"  # wait for the compiled graph at the first call

_PENDING, _SWITCHED, _FAILED = "pending", "switched", "failed"

# A test hook: ``rule(graph_kind) -> bool`` says whether this call should run compiled
# (waiting for the compile if it is not back yet); without a rule, a graph runs compiled
# from the first call after its result is back. Tests use it to force the switch at a
# chosen step, and to go back to eager for another replica of the same model.
_rule: Callable[[str], bool] | None = None


def set_switch_rule(rule: Callable[[str], bool] | None) -> None:
    global _rule
    _rule = rule


class Pair:
    """The forward and backward graphs of one compiled frame."""

    def __init__(self) -> None:
        self.forward: Any = None
        self.backward: Any = None


_live: weakref.WeakSet[DeferredGraph] = weakref.WeakSet()
_exit_hook = False
_exit_lock = threading.Lock()


def _register(graph: DeferredGraph) -> None:
    """Reports of graphs that never switched are published at exit. Registered at the
    first stand-in, after the store's own exit hook, so it runs before the store closes."""
    global _exit_hook
    with _exit_lock:
        _live.add(graph)
        if not _exit_hook:
            atexit.register(_publish_unswitched)
            _exit_hook = True


def _publish_unswitched() -> None:
    for graph in list(_live):
        try:
            graph.publish_at_exit()
        except Exception:
            log.debug("sandbox: could not publish a pending report at exit", exc_info=True)


def _agree(state: int) -> int:
    """min(state) over the ranks of the default process group (-1 failed, 0 waiting,
    1 ready), or ``state`` when there is none."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return state
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([state], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


class DeferredGraph:
    """An ``OutputCode`` stand-in: the FX graph run as is until the compiled graph takes over."""

    def __init__(
        self,
        scheme: Any,
        gm: Any,
        example_inputs: Any,
        job: dict[str, Any],
        payload: Any,
        graph_kwargs: dict,
        region: str | None,
        *,
        how: str,
        pair: Pair | None,
        publish: Callable[[Any], None],
    ) -> None:
        self._boxed_call = True  # on the instance: see the module docstring
        self.kind = scheme.builder.report.graph_kind
        self.how = how
        self._scheme = scheme
        self._payload = payload
        self._region = region
        self._eager = seam.eager_callable(gm)
        # A backward graph is compiled against the strides its inputs had while tracing
        # (the eager forward's: an eager stand-in reports no output strides); a compiled
        # forward may save tensors in another layout (e.g. channels-last convolutions).
        self._strides = _strides(example_inputs) if self.kind == "backward" else None
        self._pair = pair
        self._paired = pair is not None and bool(graph_kwargs.get("cudagraphs"))
        self._publish = publish
        self._state = _PENDING
        self._compiled: Any = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._result: Any = None
        self._error: WorkerFailure | None = None
        self._post_compile: tuple | None = None
        self._cache_save: Callable[[Any], None] | None = None
        self._triton_bundle: tuple[bool, Any] = (False, None)
        self._report: Any = None  # held until the switch
        self._published = False
        self._called = threading.Event()  # set at the first call
        self._loaded: Any = None  # async mode: the compiled graph, loaded on the background thread
        self._load_failure: Failure | None = None
        # The GPU the graph runs on, for the background load (a new thread starts on the first GPU).
        self._device = torch.cuda.current_device() if scheme.devices[1] else None
        self.last_call_compiled = False
        report = scheme.builder.report
        report.background = how
        scheme.builder.set_outcome(ISOLATED, reason="compiling in the background")
        self._sent_at = time.time()
        _register(self)
        threading.Thread(target=self._run, args=(job,), name=f"sandbox-{self.kind}-compile", daemon=True).start()

    # -- the background job ----------------------------------------------------------
    def _run(self, job: dict[str, Any]) -> None:
        try:
            cpu, gpu = self._scheme.devices
            if self.how != WAIT and gpu and self._scheme.warm_parent is not None:
                # Triton's driver, which a GPU graph's load needs, starts while the worker compiles;
                # the CPU-ISA probe waits for the result (docs/decisions/async-swap-on-gpu.md).
                self._scheme.warm_parent.start(cpu=False, gpu=True)
            # Waited for at the first call (several workers, blocking mode): this process's
            # share of the load is prepared beside the compile, as in a blocking compile.
            self._result = self._scheme.run_job(job, warm_parent=self.how == WAIT)
        except WorkerFailure as wf:
            self._error = wf
            scheme = self._scheme
            info = single_flight.describe(
                scheme.flight, getattr(wf, "single_flight", None), scheme.broken, scheme.who()
            )
            scheme.builder.single_flight(info)
        except BaseException as e:  # noqa: BLE001 - anything else fails this graph only
            self._error = WorkerFailure("error", f"{type(e).__name__}: {e}")
        report = self._scheme.builder.report
        report.ready_at = time.time()
        report.background_s = report.ready_at - self._sent_at
        if self.how != WAIT and self._error is None:
            # Async mode: the compiled graph is loaded here, beside the eager steps, so that the
            # first call after it is ready only swaps it in (docs/decisions/async-swap-on-gpu.md).
            # What Inductor hands the stand-in after codegen (cache key, Triton bundle, cache
            # save) is all there by its first call.
            self._called.wait()
            self._load(cpu, gpu)
        self._done.set()

    def _load(self, cpu: bool, gpu: bool) -> None:
        """This process's share of taking the result over, done on the background thread:
        the CPU-ISA probe (only for a graph with CPU inputs), the load itself (joining the
        Triton driver's start for a GPU graph) and the FX graph cache entry."""
        try:
            if cpu:
                try:
                    warmup.probe_cpu_isa()
                except Exception:
                    log.debug("sandbox: ISA probe failed", exc_info=True)
            if gpu:
                # A fresh thread's current device is the first GPU: load onto the one the graph runs on.
                torch.cuda.set_device(self._device)
            self._loaded = self._take_over()
        except Exception as e:  # noqa: BLE001 - never raise at the switch: the graph stays eager
            self._load_failure = Failure("error", f"loading the compiled graph failed: {type(e).__name__}: {e}")

    def _take_over(self) -> Any:
        """The worker's result loaded in this process, as Inductor would hand it over after
        codegen (cache key, Triton bundle), its FX graph cache entry written."""
        out = self._scheme.complete(self._result, self._payload, self._region)
        for name in ("_fx_graph_cache_key", "_fx_graph_cache_debug_lines", "guards_expr"):
            if name in self.__dict__:
                setattr(out, name, self.__dict__[name])
        out._time_taken_ns = int((self._scheme.builder.report.background_s or 0.0) * 1e9)
        if self._triton_bundle[0]:
            out.set_triton_bundle(self._triton_bundle[1])
        if self._cache_save is not None:
            try:
                self._cache_save(out)
            except Exception:  # a cache that cannot be written costs a later compile, not this step
                log.warning("sandbox: could not write the FX graph cache entry", exc_info=True)
        return out

    # -- what Inductor does to an OutputCode after codegen: kept for the switch --------
    def post_compile(self, example_inputs: Any, constants: Any, graph_kwargs: Any) -> None:
        self._post_compile = (example_inputs, constants, graph_kwargs)

    def set_triton_bundle(self, triton_bundle: Any) -> None:
        self._triton_bundle = (True, triton_bundle)

    def defer_cache_save(self, save: Callable[[Any], None]) -> None:
        self._cache_save = save

    def hold(self, report: Any) -> None:
        """The backend's finished report: published at the switch, not now."""
        self._report = report

    # -- calls ---------------------------------------------------------------------------
    def __call__(self, args: list[Any]) -> Any:
        if not self._called.is_set():
            self._called.set()
        if self._state == _PENDING:
            with self._lock:  # one switch, also when threads call the graph at once
                if self._state == _PENDING:
                    self._maybe_switch()
        compiled = self._state == _SWITCHED and self._wants_compiled()
        self.last_call_compiled = compiled
        if compiled:
            if self._strides:
                _restride(args, self._strides)
            return self._compiled(args)
        inputs = list(args)
        args.clear()
        if self._state == _PENDING:
            self._scheme.builder.report.eager_calls += 1
            return self._eager_beside_compile(inputs)
        return self._eager(inputs)

    def _wants_compiled(self) -> bool:
        if self._paired and self.kind == "backward":
            forward = self._pair.forward if self._pair else None
            return not isinstance(forward, DeferredGraph) or forward.last_call_compiled
        return _rule(self.kind) if _rule is not None else True

    def _partner_settled(self) -> bool:
        if not self._paired or self.kind != "forward":
            return True
        backward = self._pair.backward if self._pair else None
        if backward is None:
            return False  # the backward is compiled at the first backward call
        return not isinstance(backward, DeferredGraph) or backward._done.is_set()

    def _maybe_switch(self) -> None:
        wanted = self._wants_compiled()
        if wanted and (self.how == WAIT or _rule is not None):
            self._done.wait()
        state = 0
        if self._done.is_set() and self._partner_settled():
            failed = self._error is not None or self._load_failure is not None or self._partner_failed()
            state = -1 if failed else (1 if wanted else 0)
        state = _agree(state)
        if state == 1:
            self._switch()
        elif state == -1:
            self._give_up()

    def _partner_failed(self) -> bool:
        backward = self._pair.backward if (self._paired and self.kind == "forward" and self._pair) else None
        return isinstance(backward, DeferredGraph) and (
            backward._error is not None or backward._load_failure is not None
        )

    def _eager_beside_compile(self, inputs: list[Any]) -> Any:
        threads = torch.get_num_threads()
        lower = threads > 1 and not self._done.is_set()
        if lower:
            torch.set_num_threads(threads - 1)
        try:
            return self._eager(inputs)
        finally:
            if lower:
                torch.set_num_threads(threads)

    # -- the switch ------------------------------------------------------------------------
    def _switch(self) -> None:
        b = self._scheme.builder
        t = time.time()
        if self._load_failure is not None:
            self._give_up(self._load_failure)
            return
        try:
            # Async mode loaded it in the background; a waited-for graph (several workers) here.
            out = self._loaded if self._loaded is not None else self._take_over()
            if self._post_compile is not None:
                out.post_compile(*self._post_compile)
        except Exception as e:  # noqa: BLE001 - never raise at the switch: stay eager
            self._give_up(Failure("error", f"loading the compiled graph at the switch failed: {type(e).__name__}: {e}"))
            return
        self._compiled = out
        self._state = _SWITCHED
        r = b.report
        r.switched_at = time.time()
        b.stage("switch", t, r.switched_at, parent=None)
        _merge_counters(r.counters, (self._result.reply or {}).get("counters", {}))
        try:
            b.compiled(out)
        except Exception:
            log.debug("sandbox: kernel inventory failed", exc_info=True)
        self._release()

    def _give_up(self, failure: Failure | None = None) -> None:
        b = self._scheme.builder
        if failure is None:
            failure = (
                self._error.failure
                if self._error is not None
                else Failure(
                    "error", "the compile of the paired backward graph failed; forward and backward stay eager together"
                )
            )
        self._state = _FAILED
        policy = self._scheme.options.on_failure
        raising = self.how == WAIT and policy == "raise"
        b.fail(failure, fallback=None if raising else "eager")
        self._release()
        if raising:
            raise SandboxCompileError(describe_failure(b.report), b.report)
        warnings.warn(
            f"sandbox: {self.kind} graph {b.report.compile_id} at {b.report.where} stays uncompiled (eager): its "
            f"background compile failed ({failure.kind}: {failure.message}).",
            RuntimeWarning,
            stacklevel=3,
        )

    def _release(self) -> None:
        """Publish the report (once), and drop what only the switch needed."""
        self._result = self._payload = self._post_compile = self._cache_save = self._loaded = None
        self._triton_bundle = (False, None)
        if self._report is not None and not self._published:
            self._published = True
            self._publish(self._report)

    def publish_at_exit(self) -> None:
        if self._published or self._report is None:
            return
        r = self._report
        r.reason = (
            "the process ended before the compiled graph took over"
            if self._done.is_set()
            else "the process ended while the graph was still compiling"
        )
        self._published = True
        self._publish(r)


def pending() -> int:
    """Graphs of this process that still run as is: compiling, or loaded and not yet swapped in."""
    return sum(1 for graph in list(_live) if graph._state == _PENDING)


def _strides(example_inputs: Any) -> list[tuple[int, ...] | None]:
    """Each input's (size, stride) as traced, for static shapes; None where unknown."""
    out: list[tuple | None] = []
    for x in example_inputs or ():
        try:
            size, stride = tuple(x.size()), tuple(x.stride())
        except Exception:  # not a tensor
            out.append(None)
            continue
        # Never int() a SymInt: that would specialize the dynamic shape (a guard).
        static = all(type(n) is int for n in size + stride)
        out.append((size, stride) if static else None)
    return out


def _restride(args: list[Any], expected: list[tuple | None]) -> None:
    """Give each input the layout the compiled graph was compiled for (a copy), where it differs."""
    for i, (x, want) in enumerate(zip(args, expected)):
        if want is None or not isinstance(x, torch.Tensor):
            continue
        size, stride = want
        got = x.stride()
        if got != stride and any(n > 1 and a != b for n, a, b in zip(size, got, stride)):
            args[i] = torch.empty_strided(size, stride, dtype=x.dtype, device=x.device).copy_(x)


def _merge_counters(into: dict[str, dict[str, int]], deltas: dict[str, dict[str, int]]) -> None:
    for group, values in deltas.items():
        g = into.setdefault(group, {})
        for k, v in values.items():
            g[k] = g.get(k, 0) + v
