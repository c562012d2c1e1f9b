"""torch's own debugging tools around a sandboxed compile.

``script_torch_tools.py trace BACKEND ENTRY...``: train each zoo entry for one step
with ``backend=BACKEND`` ("inductor" or "sandbox"); the test sets TORCH_TRACE and
reads the trace log with tlparse.

``script_torch_tools.py tools``: one zoo entry under TORCH_LOGS (set by the test),
TORCH_COMPILE_DEBUG=1 and ``torch.profiler``: reports the log records that reached
this process's own handler, and the profiler's region names and times; then one graph
whose compile fails in the worker.
"""

import logging
import os
import sys
import time

import torch

import common
from sandbox import zoo

mode, rest = sys.argv[1], sys.argv[2:]

if mode == "trace":
    backend, entries = rest[0], rest[1:]
    if backend == "sandbox":
        import sandbox

        sandbox.warmup(wait=True)
    for name in entries:
        zoo.run(name, backend=backend, steps=1)
        torch._dynamo.reset()
    out = {"pid": os.getpid()}
    if backend == "sandbox":
        out["reports"] = common.reports()
        out["worker_pids"] = common.worker_pids()
    common.emit(out)
    sys.exit(0)

assert mode == "tools", mode
import sandbox  # noqa: E402

sandbox.warmup(wait=True)


class Recorder(logging.Handler):
    """The user's own logging configuration: one more handler on Inductor's logger."""

    def __init__(self) -> None:
        super().__init__()
        self.records = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(
            {"name": record.name, "process": record.process, "created": record.created, "message": record.getMessage()}
        )


recorder = Recorder()
logging.getLogger("torch._inductor").addHandler(recorder)

t0 = time.time()
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    zoo.run("mlp", backend="sandbox", steps=1)
t1 = time.time()

# A graph whose compile fails in the worker (an op's fake implementation raises there):
# what the worker recorded up to the failure still reaches this process.
import warnings  # noqa: E402

import failing_ops  # noqa: E402


def fails(x):
    return failing_ops.raise_op(torch.sin(x)) + 1


n_ok = len(sandbox.reports())
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.compile(fails, backend="sandbox", options={"on_failure": "eager"})(torch.randn(8))
regions = {}
for event in prof.events():
    if event.name.startswith("sandbox."):
        regions.setdefault(event.name, []).append(
            {"start_us": event.time_range.start, "end_us": event.time_range.end, "thread": event.thread}
        )
common.emit(
    {
        "pid": os.getpid(),
        "t0": t0,
        "t1": t1,
        "reports": common.reports()[:n_ok],
        "failed": common.reports()[n_ok:],
        "worker_pids": common.worker_pids(),
        "records": recorder.records,
        "regions": regions,
    }
)
