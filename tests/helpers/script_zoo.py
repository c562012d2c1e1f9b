"""Correctness: every zoo entry (or those named in argv), eager vs ``backend="sandbox"``.

For each entry, two steps (the second step runs the updated parameters and, for the
dynamic entry, a new batch size): outputs, losses and gradients of every step compared
with Inductor-test tolerances; then one step, all of outputs, losses, gradients and
buffers. Buffers are compared after one step only: after an AdamW step, parameters
whose gradient is numerically zero (a conv bias feeding batch norm) move by +-lr
depending on rounding noise, which batch norm's running mean records; in-process
Inductor differs from eager there by 1e-3 just the same.
"""

import os
import sys

import torch

import common
import sandbox
from sandbox import zoo

RTOL = ATOL = 1e-4  # fp32, as in Inductor's own tests


def compare(eager, compiled, keys):
    problems = []
    for key in [k for k in ("outputs", "losses") if k in keys]:
        if len(eager[key]) != len(compiled[key]):
            problems.append(f"{key}: {len(eager[key])} eager vs {len(compiled[key])} compiled")
            continue
        for i, (a, b) in enumerate(zip(eager[key], compiled[key])):
            try:
                torch.testing.assert_close(b, a, rtol=RTOL, atol=ATOL)
            except AssertionError as e:
                problems.append(f"{key}[{i}]: {e}")
    for key in [k for k in ("grads", "buffers") if k in keys]:
        if sorted(eager[key]) != sorted(compiled[key]):
            problems.append(f"{key}: names {sorted(eager[key])} eager vs {sorted(compiled[key])} compiled")
            continue
        for name in eager[key]:
            try:
                torch.testing.assert_close(compiled[key][name], eager[key][name], rtol=RTOL, atol=ATOL)
            except AssertionError as e:
                problems.append(f"{key}[{name}]: {e}")
    return problems


names = sys.argv[1:] or list(zoo.ZOO)
sandbox.warmup()
results = {}
for name in names:
    eager = zoo.run(name, backend=None, steps=2)
    eager1 = zoo.run(name, backend=None, steps=1)
    n0 = len(sandbox.reports())
    problems, raised, n1 = [], None, None
    try:
        compiled = zoo.run(name, backend="sandbox", steps=2)
        problems += [f"2 steps: {p}" for p in compare(eager, compiled, ("outputs", "losses", "grads"))]
        n1 = len(sandbox.reports())
        torch._dynamo.reset()
        compiled1 = zoo.run(name, backend="sandbox", steps=1)
        problems += [f"1 step: {p}" for p in compare(eager1, compiled1, ("outputs", "losses", "grads", "buffers"))]
    except Exception as e:  # noqa: BLE001 - reported to the test
        raised = common.exception_info(e)
    results[name] = {
        "problems": problems,
        "raised": raised,
        "counts": {k: len(eager1[k]) for k in ("outputs", "losses", "grads", "buffers")},
        "reports": common.reports()[n0:n1],  # the first (cold) compile of this entry
        "reports_again": common.reports()[n1:] if n1 is not None else [],
    }
    torch._dynamo.reset()  # each entry compiles from scratch (fresh dynamo caches)
common.emit({"pid": os.getpid(), "results": results, "pool_processes": common.worker_trees()})
