"""Failure injection: ``script_failures.py POLICY KIND[,KIND...]``.

For each kind, compiles a small function whose graph calls the matching op of
``failing_ops`` (its fake implementation crashes/hangs/... inside the worker only),
with ``on_failure=POLICY``; records what the user sees (result, warnings, exception)
and the report. Then compiles a healthy function, which must go to a fresh worker.
"""

import os
import sys
import time
import warnings

import torch

import common
import failing_ops
import sandbox

POLICY = sys.argv[1]
KINDS = sys.argv[2].split(",")
HANG_TIMEOUT_S = float(os.environ.get("FAILURES_TIMEOUT_S", "4"))
# With 2 workers a replacement warms up while the next case runs on the other one.
WORKERS = int(os.environ.get("FAILURES_WORKERS", "1"))
MEMORY_LIMIT_MB = int(os.environ.get("FAILURES_MEMORY_LIMIT_MB", "1000"))


def f_exit(x):
    return failing_ops.exit_op(torch.sin(x)) + 1


def f_segv(x):
    return failing_ops.segv_op(torch.sin(x)) + 1


def f_kill(x):
    return failing_ops.kill_op(torch.sin(x)) + 1


def f_raise(x):
    return failing_ops.raise_op(torch.sin(x)) + 1


def f_hang(x):
    return failing_ops.hang_op(torch.sin(x)) + 1


def f_oom(x):
    return failing_ops.oom_op(torch.sin(x)) + 1


def healthy(x):
    return torch.cos(x) * 3 + 1


FUNCS = {"exit": f_exit, "segv": f_segv, "kill": f_kill, "raise": f_raise, "hang": f_hang, "oom": f_oom}


def sandbox_warnings(caught):
    return [
        {"category": w.category.__name__, "message": str(w.message)}
        for w in caught
        if str(w.message).startswith("sandbox")
    ]


x = torch.randn(16)
sandbox.warmup(workers=WORKERS, wait=True)
results = []
for kind in KINDS:
    fn = FUNCS[kind]
    options = {} if POLICY == "env" else {"on_failure": POLICY}  # "env": SANDBOX_ON_FAILURE decides
    if WORKERS > 1:
        options["workers"] = WORKERS
    if kind == "hang":
        options["timeout_s"] = HANG_TIMEOUT_S
        sandbox.warmup(wait=True)  # a ready worker: the case times the compile and its kill, not a start
    if kind == "oom":
        options["memory_limit_mb"] = MEMORY_LIMIT_MB
    entry = {"kind": kind, "options": options, "function": fn.__name__, "line": fn.__code__.co_firstlineno}
    entry["workers_before"] = sandbox.workers()
    n0 = len(sandbox.reports())
    compiled = torch.compile(fn, backend="sandbox", options=options)
    t0 = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            entry["correct"] = common.close(compiled(x), fn(x))
            entry["correct_again"] = common.close(compiled(x), fn(x))  # no second compile, no second warning
            entry["raised"] = None
        except Exception as e:  # noqa: BLE001 - the test looks at it
            entry["raised"] = common.exception_info(e)
            entry["raised"]["isinstance_sandbox_error"] = isinstance(e, sandbox.SandboxCompileError)
    entry["seconds"] = time.time() - t0
    entry["warnings"] = sandbox_warnings(caught)
    entry["reports"] = common.reports()[n0:]
    entry["workers_after"] = sandbox.workers()
    failed_pids = [r["failure"]["worker_pid"] for r in entry["reports"] if r.get("failure")]
    entry["failed_pids_alive"] = [common.pid_alive(p) for p in failed_pids if p]
    if WORKERS == 1:
        sandbox.warmup(wait=True)  # the replacement is ready before the next case starts its clock
        entry["workers_ready"] = sandbox.workers()
    results.append(entry)

n0 = len(sandbox.reports())
compiled = torch.compile(healthy, backend="sandbox", options={"workers": WORKERS})
healthy_ok = common.close(compiled(x), healthy(x))
common.emit(
    {
        "pid": os.getpid(),
        "policy": POLICY,
        "workers": WORKERS,
        "results": results,
        "healthy": {"correct": healthy_ok, "reports": common.reports()[n0:], "workers": sandbox.workers()},
        "pool_processes": common.worker_trees(),
    }
)
